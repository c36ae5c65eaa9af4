#!/usr/bin/env python
"""Load test: a naive one-request-at-a-time service vs ``tts-build-engine serve``, side by side.

Both services run as subprocesses on loopback ports, on the same engine, and get the same
real-speech mel requests of mixed lengths (segments of the shipped speech fixtures, sent in
turn). Each is driven at each concurrency by that many closed-loop clients: every client sends
its first request at once (the burst), then its next one as soon as it has an answer (steady
state), for a bounded number of requests and a bounded time. The table shows, for the steady
state, requests/s and audio seconds per second (over the time every client was busy),
p50/p95/p99 latency and time to first audio (``serve`` streamed; the naive service cannot
stream, so its first audio is its whole answer); for the burst, its first audio and p99; the
mean batch size (mel windows per engine call, from ``/metrics``); and throughput against the
bare engine (serial ``VocoderEngine`` calls with the engine's default threads in this
process, measured before and after the cells, their mean; the drift between the two is
printed; also shown: the engine as one single-threaded call per core, the way ``serve`` runs
a CPU engine by default).

The naive baseline is what a sync Flask app does: ``http.server.HTTPServer`` (one request at
a time), ``engine(mel)`` per request with the engine's default threads, whole WAV answer.

Usage::

    python scripts/load_test.py ENGINE_DIR [--requests 24] [--concurrency 1,4,16] [--serve-arg=--workers=1]
    python scripts/load_test.py default --backend torch      # PyTorch (CUDA when present)

Traffic goes to 127.0.0.1 only; every cell is bounded by ``--requests`` and ``--cell-time-s``.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only, by design
SEGMENTS = (60, 120, 200, 320)  # request lengths (frames), cut in turn from each real-speech mel


# ------------------------------------------------------------------------------------ requests

def speech_requests(limit: int, seed: int = 0) -> list[np.ndarray]:
    """Real-speech mel segments (the shipped speech fixtures) of mixed lengths, in a fixed shuffled order."""
    from hifitrt.export.fixtures import fixture_mels

    out = []
    for mel in fixture_mels().values():
        start, i = 0, 0
        while start < mel.shape[1] and len(out) < 4 * limit:
            n = SEGMENTS[i % len(SEGMENTS)]
            piece = mel[:, start:start + n]
            if piece.shape[1] >= 20:
                out.append(np.ascontiguousarray(piece))
            start, i = start + n, i + 1
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order][:limit]


def npy_bytes(mel: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, mel)
    return buf.getvalue()


def load_engine(target: str, backend: str | None, threads: int | None = None):
    """The engine (its default threads unless ``threads``), or the PyTorch vocoder with ``--backend torch``."""
    from hifitrt.runtime import VocoderEngine

    if backend == "torch":
        from hifitrt.serving.voices import VoiceSpec, load_voice_engine

        return load_voice_engine(VoiceSpec(target), "torch")[0]
    return VocoderEngine.load(target, threads=threads)


# ------------------------------------------------------------------------------- naive service

def run_naive_server(target: str, port: int, backend: str | None) -> None:
    """One request at a time, no batching, whole WAV: the sync-Flask baseline."""
    from hifitrt.serving.audio import pcm_bytes, wav_header

    engine = load_engine(target, backend)
    rate = engine.sample_rate

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a kept-alive client cannot hog the server

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._answer(200, b'{"status": "ok"}', "application/json")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                mel = np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
                wav = engine(mel.astype(np.float32))
            except Exception as exc:
                self._answer(400, json.dumps({"error": {"type": "invalid_request", "message": str(exc)}}).encode(),
                             "application/json")
                return
            self._answer(200, wav_header(rate, len(wav)) + pcm_bytes(wav), "audio/wav")

        def _answer(self, status: int, body: bytes, media: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    class Server(HTTPServer):
        request_queue_size = 128  # waiting clients queue in the kernel, as they would at a sync app

    server = Server((HOST, port), Handler)
    print(f"naive service on {HOST}:{port}", flush=True)
    server.serve_forever()


# -------------------------------------------------------------------------------------- client

@dataclass
class Sent:
    """One request as the client saw it (times in seconds from the cell's start)."""

    index: int  # issue order within the cell
    start: float
    end: float
    first: float  # first audio byte (after the WAV header), from start
    audio: float  # seconds of audio asked for
    ok: bool


@dataclass
class Cell:
    """One (service, concurrency, streamed) run: ``concurrency`` closed-loop clients.

    The first ``concurrency`` requests go out together (the burst); every later one is sent as
    soon as its client has its previous answer (steady state). Steady-state figures use the
    requests after the burst, and the throughput window from the first answer to the last
    send, while every client is busy; the burst's own figures are kept apart.
    """

    service: str
    concurrency: int
    streamed: bool
    sent: list[Sent] = field(default_factory=list)
    mean_batch: float | None = None

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    def row(self) -> dict:
        ok = [r for r in self.sent if r.ok]
        steady = [r for r in ok if r.index >= self.concurrency]
        burst = [r for r in ok if r.index < self.concurrency]
        rate = audio_rate = float("nan")
        if ok and len(self.sent) > self.concurrency:
            t0 = min(r.end for r in ok)
            t1 = max(r.start for r in self.sent)
            done = [r for r in ok if t0 < r.end <= t1]
            if t1 > t0 and done:
                rate, audio_rate = len(done) / (t1 - t0), sum(r.audio for r in done) / (t1 - t0)
        latency = [r.end - r.start for r in steady]
        return {"service": self.service, "concurrency": self.concurrency, "streamed": self.streamed,
                "requests": len(self.sent), "errors": sum(not r.ok for r in self.sent),
                "req_per_s": rate, "audio_s_per_s": audio_rate,
                "p50_ms": self.pct(latency, 50), "p95_ms": self.pct(latency, 95), "p99_ms": self.pct(latency, 99),
                "first_audio_p50_ms": self.pct([r.first for r in steady], 50),
                "burst_first_audio_p50_ms": self.pct([r.first for r in burst], 50),
                "burst_p99_ms": self.pct([r.end - r.start for r in burst], 99),
                "mean_batch": self.mean_batch}


async def drive(base: str, path: str, bodies: list[tuple[bytes, float]], concurrency: int, count: int,
                time_limit: float, cell: Cell, header_bytes: int = 44) -> None:
    """``concurrency`` closed-loop clients send ``count`` requests in all (none after time_limit)."""
    import httpx

    next_index = 0
    t_start = time.monotonic()
    stop_at = t_start + time_limit

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < stop_at:
            index = next_index
            body, audio = bodies[index % len(bodies)]
            next_index += 1
            start = time.monotonic()
            first = None
            received = 0
            try:
                async with client.stream("POST", path, content=body) as answer:
                    async for chunk in answer.aiter_raw():
                        received += len(chunk)
                        if first is None and received > header_bytes:
                            first = time.monotonic() - start
                    ok = answer.status_code == 200
            except httpx.HTTPError:  # e.g. a stream cut by the service's timeout
                ok = False
            end = time.monotonic()
            cell.sent.append(Sent(index, start - t_start, end - t_start,
                                  first if first is not None else end - start, audio, ok))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))


def batch_totals(base: str) -> tuple[float, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = calls = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "hifitrt_batch_size_sum":
                total += s.value
            elif s.name == "hifitrt_batch_size_count":
                calls += s.value
    return total, calls


# ------------------------------------------------------------------------------------- running

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, ready_path: str, timeout: float = 300.0) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service failed to start: {' '.join(cmd)}\n{proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}{ready_path}", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"service did not become ready in {timeout:.0f} s: {' '.join(cmd)}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_bare(engine, mels: list[np.ndarray], parallel: int = 1) -> dict:
    """Serial ``engine(mel)`` calls on every request (``parallel`` > 1: that many threads at once)."""
    from concurrent.futures import ThreadPoolExecutor

    engine(mels[0])  # warm-up
    times: list[float] = []

    def one(mel: np.ndarray) -> None:
        start = time.perf_counter()
        engine(mel)
        times.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, mels))
    seconds = time.perf_counter() - start
    audio = sum(m.shape[1] for m in mels) * engine.spec.hop / engine.sample_rate
    return {"requests": len(mels), "seconds": seconds, "req_per_s": len(mels) / seconds,
            "audio_s_per_s": audio / seconds, "mean_ms": 1000 * float(np.mean(times)), "parallel": parallel}


def bracketed(before: dict, after: dict) -> dict:
    """The bare engine measured before and after the cells, as one baseline (their mean).

    Why both: a shared or throttled CPU's speed drifts by 10-40 % within minutes (measured on
    this project's machine), so a baseline taken only at the start can make a service look
    faster or slower than it is; the drift is reported beside the figures.
    """
    mean = {key: (before[key] + after[key]) / 2 for key in ("seconds", "req_per_s", "audio_s_per_s", "mean_ms")}
    return {**before, **mean, "before_req_per_s": before["req_per_s"], "after_req_per_s": after["req_per_s"],
            "drift": after["req_per_s"] / before["req_per_s"] - 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="engine directory (with --backend torch: a vocoder source, e.g. default)")
    p.add_argument("--backend", choices=("torch",), help="PyTorch (CUDA when present) instead of an engine")
    p.add_argument("--requests", type=int, default=24,
                   help="steady-state requests per cell, sent after the first burst of one per client (default 24)")
    p.add_argument("--distinct", type=int, default=16, help="distinct real-speech requests, sent in turn (default 16)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    p.add_argument("--cell-time-s", type=float, default=120.0, help="stop sending after this long per cell")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `serve` (repeatable), e.g. --serve-arg=--max-padding=4")
    p.add_argument("--skip-whole", action="store_true", help="drive serve only with streamed requests")
    p.add_argument("--skip-naive", action="store_true", help="do not start the naive service")
    p.add_argument("--label", default="CPU", help="table label (default CPU)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    backend_args = ["--backend", args.backend] if args.backend else []
    if args.naive_server:
        run_naive_server(args.target, args.port, args.backend)
        return 0

    levels = [int(c) for c in args.concurrency.split(",")]
    mels = speech_requests(args.distinct)
    engine = load_engine(args.target, args.backend)
    hop, rate = engine.spec.hop, engine.sample_rate
    bodies = [(npy_bytes(m), m.shape[1] * hop / rate) for m in mels]
    print(f"{len(mels)} distinct real-speech requests, {min(m.shape[1] for m in mels)}-"
          f"{max(m.shape[1] for m in mels)} frames ({sum(a for _, a in bodies):.1f} s of audio); levels {levels}; "
          f"per cell one burst of c requests then {args.requests} in steady state", flush=True)
    bare_before = measure_bare(engine, mels)
    print(f"bare engine (default threads, one call at a time): {bare_before['req_per_s']:.2f} req/s, "
          f"{bare_before['audio_s_per_s']:.2f} audio s/s, {bare_before['mean_ms']:.0f} ms/request", flush=True)
    bare_split = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.backend != "torch" and cores > 1:
        split_engine = load_engine(args.target, args.backend, threads=1)
        bare_split = measure_bare(split_engine, mels, parallel=cores)
        del split_engine
        print(f"bare engine ({cores} single-threaded calls at a time): {bare_split['req_per_s']:.2f} req/s, "
              f"{bare_split['mean_ms']:.0f} ms/request", flush=True)

    cells: list[Cell] = []
    if not args.skip_naive:
        port = free_port()
        naive = start([sys.executable, __file__, args.target, "--naive-server", "--port", str(port)] + backend_args,
                      port, "/healthz")
        try:
            base = f"http://{HOST}:{port}"
            asyncio.run(drive(base, "/", bodies[:1], 1, 1, 60, Cell("warm", 1, False)))
            for c in levels:
                cell = Cell("naive", c, False)
                asyncio.run(drive(base, "/", bodies, c, c + args.requests, args.cell_time_s, cell))
                cells.append(cell)
                print(_line(cell.row()), flush=True)
        finally:
            stop(naive)

    port = free_port()
    # throughput is measured, not the service's 30 s per-request timeout: raise it to the cell bound
    serve = start([sys.executable, "-m", "hifitrt", "serve", args.target, "--port", str(port),
                   "--timeout-s", str(max(30.0, 2 * args.cell_time_s))] + backend_args + args.serve_arg,
                  port, "/readyz")
    try:
        base = f"http://{HOST}:{port}"
        asyncio.run(drive(base, "/v1/vocode?stream=true", bodies[:4], 4, 4, 60, Cell("warm", 1, True)))
        for streamed in ((True,) if args.skip_whole else (False, True)):
            path = "/v1/vocode?stream=true" if streamed else "/v1/vocode"
            for c in levels:
                cell = Cell("serve", c, streamed)
                before = batch_totals(base)
                asyncio.run(drive(base, path, bodies, c, c + args.requests, args.cell_time_s, cell))
                after = batch_totals(base)
                calls = after[1] - before[1]
                cell.mean_batch = (after[0] - before[0]) / calls if calls else None
                cells.append(cell)
                print(_line(cell.row()), flush=True)
    finally:
        stop(serve)
    bare_after = measure_bare(engine, mels)
    del engine
    bare = bracketed(bare_before, bare_after)
    print(f"bare engine again, after the cells: {bare_after['req_per_s']:.2f} req/s (the ratios use the mean of "
          f"both, {bare['req_per_s']:.2f} req/s; the machine drifted {bare['drift']:+.0%})", flush=True)

    report = summarize(cells, bare, bare_split, args.label, " ".join(args.serve_arg))
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"bare": bare, "bare_single_threaded_calls": bare_split,
                                               "cells": [c.row() for c in cells], "label": args.label,
                                               "serve_args": args.serve_arg, "date": _today()}, indent=2))
    return 0


def _line(row: dict) -> str:
    return (f"  {row['service']:5s} c={row['concurrency']:<2d} {'stream' if row['streamed'] else 'whole ':6s} "
            f"{row['requests']:3d} req ({row['errors']} errors) {row['req_per_s']:6.2f} req/s p50 {row['p50_ms']:7.0f} ms "
            f"p99 {row['p99_ms']:7.0f} ms first audio {row['first_audio_p50_ms']:7.0f} ms "
            f"(burst: first audio {row['burst_first_audio_p50_ms']:7.0f} ms, p99 {row['burst_p99_ms']:7.0f} ms)")


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def summarize(cells: list[Cell], bare: dict, bare_split: dict | None, label: str, serve_args: str) -> str:
    rows = [c.row() for c in cells]
    lines = [f"Load test ({label}, {_today()}, {platform.machine()} {os.cpu_count()} cores; "
             f"serve {serve_args or 'with its defaults'}; bare engine {bare['req_per_s']:.2f} req/s "
             f"(mean of {bare['before_req_per_s']:.2f} before and {bare['after_req_per_s']:.2f} after the cells), "
             f"{bare['audio_s_per_s']:.2f} audio s/s, {bare['mean_ms']:.0f} ms/request"
             + (f"; as {bare_split['parallel']} single-threaded calls at a time {bare_split['req_per_s']:.2f} req/s"
                if bare_split else "") + ")", "",
             "| service | conc. | answer | requests | req/s | audio s/s | p50 ms | p95 ms | p99 ms "
             "| first audio p50 ms | burst: first audio p50 ms | burst: p99 ms | mean batch | req/s vs bare engine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        batch = f"{r['mean_batch']:.2f}" if r["mean_batch"] is not None else "-"
        errors = f" ({r['errors']} errors)" if r["errors"] else ""
        lines.append(f"| {r['service']} | {r['concurrency']} | {'streamed' if r['streamed'] else 'whole'} | "
                     f"{r['requests']}{errors} | {r['req_per_s']:.2f} | {r['audio_s_per_s']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['first_audio_p50_ms']:.0f} | "
                     f"{r['burst_first_audio_p50_ms']:.0f} | {r['burst_p99_ms']:.0f} | "
                     f"{batch} | {r['req_per_s'] / bare['req_per_s']:.2f}x |")

    def find(service: str, conc: int, streamed: bool) -> dict | None:
        return next((r for r in rows if (r["service"], r["concurrency"], r["streamed"]) == (service, conc, streamed)),
                    None)

    lines += ["", "Steady state: after the first burst (one request per client at once), each client sends its "
              "next request when it has its answer; latency and first audio over those requests, req/s over "
              "the time every client was busy. Burst: the first request of every client, all sent at once."]
    top, low = max(c.concurrency for c in cells), min(c.concurrency for c in cells)
    serve_low = find("serve", low, False)
    if serve_low:
        lines.append(f"serve at concurrency {low}: p50 latency {serve_low['p50_ms']:.0f} ms; bare engine "
                     f"{bare['mean_ms']:.0f} ms mean per request with default threads"
                     + (f", {bare_split['mean_ms']:.0f} ms single-threaded" if bare_split else ""))
    serve_top, naive_top = find("serve", top, False), find("naive", top, False)
    stream_top, stream_low = find("serve", top, True), find("serve", low, True)
    if serve_top:
        ratio = serve_top["req_per_s"] / bare["req_per_s"]
        lines.append(f"target: throughput at concurrency {top} >= 0.95x bare engine: {ratio:.2f}x -> "
                     f"{'met' if ratio >= 0.95 else 'NOT met'}")
    if serve_top and naive_top:
        lines.append(f"target: p99 at concurrency {top} below the naive service's: {serve_top['p99_ms']:.0f} vs "
                     f"{naive_top['p99_ms']:.0f} ms -> {'met' if serve_top['p99_ms'] < naive_top['p99_ms'] else 'NOT met'}"
                     f" (burst: {serve_top['burst_p99_ms']:.0f} vs {naive_top['burst_p99_ms']:.0f} ms)")
    if stream_top and stream_low:
        ratio = stream_top["first_audio_p50_ms"] / stream_low["first_audio_p50_ms"]
        burst = stream_top["burst_first_audio_p50_ms"] / stream_low["first_audio_p50_ms"]
        lines.append(f"target: streamed first audio at concurrency {top} <= 2x concurrency {low}: "
                     f"{stream_top['first_audio_p50_ms']:.0f} vs {stream_low['first_audio_p50_ms']:.0f} ms "
                     f"({ratio:.1f}x) -> {'met' if ratio <= 2 else 'NOT met'} (burst of {top}: "
                     f"{stream_top['burst_first_audio_p50_ms']:.0f} ms, {burst:.1f}x)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
