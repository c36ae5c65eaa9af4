#!/usr/bin/env python
"""Load test: a naive one-request-at-a-time service vs ``tts-build-engine serve``, side by side.

Both services run as subprocesses on loopback ports, on the same engine, and get the same
real-speech mel requests of mixed lengths (segments of the shipped speech fixtures). Each is
driven at each concurrency for a bounded number of requests and a bounded time, and the
table shows requests/s, audio seconds per second, p50/p95/p99 latency, time to first audio
(``serve`` streamed; the naive service cannot stream, so its first audio is its whole answer),
the mean batch size (mel windows per engine call, from ``/metrics``) and throughput against
the bare engine (serial ``VocoderEngine`` calls in this process, measured in the same run).

On a CPU ``serve`` runs one window per engine call (``--max-batch`` defaults by device), so
the mean batch is 1 there. With ``--requests`` equal to the top concurrency every client
sends at once (a burst): on a compute-bound engine the median stream's first window then
waits for about half the others' first windows, whatever the scheduling.

The naive baseline is what a sync Flask app does: ``http.server.HTTPServer`` (one request at
a time), ``engine(mel)`` per request, whole WAV answer.

Usage::

    python scripts/load_test.py ENGINE_DIR [--requests 24] [--concurrency 1,4,16]
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


def load_engine(target: str, backend: str | None):
    from hifitrt.runtime import VocoderEngine

    if backend == "torch":
        from hifitrt.serving.voices import VoiceSpec, load_voice_engine

        return load_voice_engine(VoiceSpec(target), "torch")[0]
    return VocoderEngine.load(target)


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
class Cell:
    service: str
    concurrency: int
    streamed: bool
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_audio: list[float] = field(default_factory=list)
    mean_batch: float | None = None

    def pct(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    def row(self) -> dict:
        return {"service": self.service, "concurrency": self.concurrency, "streamed": self.streamed,
                "requests": self.requests, "errors": self.errors,
                "req_per_s": self.requests / self.seconds if self.seconds else 0.0,
                "audio_s_per_s": self.audio_seconds / self.seconds if self.seconds else 0.0,
                "p50_ms": self.pct(self.latencies, 50), "p95_ms": self.pct(self.latencies, 95),
                "p99_ms": self.pct(self.latencies, 99), "first_audio_p50_ms": self.pct(self.first_audio, 50),
                "mean_batch": self.mean_batch}


async def drive(base: str, path: str, bodies: list[tuple[bytes, float]], concurrency: int, count: int,
                time_limit: float, cell: Cell, header_bytes: int = 44) -> None:
    """``concurrency`` closed-loop clients send ``count`` requests in total (or until time_limit)."""
    import httpx

    next_index = 0
    stop_at = time.monotonic() + time_limit

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < stop_at:
            body, audio = bodies[next_index % len(bodies)]
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
                    status = answer.status_code
            except httpx.HTTPError:  # e.g. a stream cut by the service's timeout
                status = -1
            if status != 200:
                cell.errors += 1
                continue
            cell.latencies.append(time.monotonic() - start)
            cell.first_audio.append(first if first is not None else cell.latencies[-1])
            cell.audio_seconds += audio
            cell.requests += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        start = time.monotonic()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        cell.seconds = time.monotonic() - start


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


def measure_bare(engine, mels: list[np.ndarray]) -> dict:
    engine(mels[0])  # warm-up
    times = []
    for mel in mels:
        start = time.perf_counter()
        engine(mel)
        times.append(time.perf_counter() - start)
    audio = sum(m.shape[1] for m in mels) * engine.spec.hop / engine.sample_rate
    return {"requests": len(mels), "seconds": sum(times), "req_per_s": len(mels) / sum(times),
            "audio_s_per_s": audio / sum(times), "mean_ms": 1000 * float(np.mean(times))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="engine directory (with --backend torch: a vocoder source, e.g. default)")
    p.add_argument("--backend", choices=("torch",), help="PyTorch (CUDA when present) instead of an engine")
    p.add_argument("--requests", type=int, default=24, help="requests per cell (default 24)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    p.add_argument("--cell-time-s", type=float, default=120.0, help="stop sending after this long per cell")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `serve` (repeatable), e.g. --serve-arg=--max-padding=4")
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
    mels = speech_requests(args.requests)
    engine = load_engine(args.target, args.backend)
    hop, rate = engine.spec.hop, engine.sample_rate
    bodies = [(npy_bytes(m), m.shape[1] * hop / rate) for m in mels]
    print(f"{len(mels)} real-speech requests, {min(m.shape[1] for m in mels)}-{max(m.shape[1] for m in mels)} "
          f"frames ({sum(a for _, a in bodies):.1f} s of audio); levels {levels}", flush=True)
    bare = measure_bare(engine, mels)
    del engine
    print(f"bare engine: {bare['req_per_s']:.2f} req/s, {bare['audio_s_per_s']:.2f} audio s/s, "
          f"{bare['mean_ms']:.0f} ms/request", flush=True)

    cells: list[Cell] = []
    port = free_port()
    naive = start([sys.executable, __file__, args.target, "--naive-server", "--port", str(port)] + backend_args,
                  port, "/healthz")
    try:
        base = f"http://{HOST}:{port}"
        asyncio.run(drive(base, "/", bodies[:1], 1, 1, 60, Cell("warm", 1, False)))
        for c in levels:
            cell = Cell("naive", c, False)
            asyncio.run(drive(base, "/", bodies, c, args.requests, args.cell_time_s, cell))
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
        asyncio.run(drive(base, "/v1/vocode", bodies[:2], 2, 2, 60, Cell("warm", 1, False)))
        for streamed in (False, True):
            path = "/v1/vocode?stream=true" if streamed else "/v1/vocode"
            for c in levels:
                cell = Cell("serve", c, streamed)
                before = batch_totals(base)
                asyncio.run(drive(base, path, bodies, c, args.requests, args.cell_time_s, cell))
                after = batch_totals(base)
                calls = after[1] - before[1]
                cell.mean_batch = (after[0] - before[0]) / calls if calls else None
                cells.append(cell)
                print(_line(cell.row()), flush=True)
    finally:
        stop(serve)

    report = summarize(cells, bare, args.label)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"bare": bare, "cells": [c.row() for c in cells],
                                               "label": args.label, "date": _today()}, indent=2))
    return 0


def _line(row: dict) -> str:
    return (f"  {row['service']:5s} c={row['concurrency']:<2d} {'stream' if row['streamed'] else 'whole ':6s} "
            f"{row['requests']:3d} req ({row['errors']} errors) {row['req_per_s']:6.2f} req/s p50 {row['p50_ms']:7.0f} ms "
            f"p99 {row['p99_ms']:7.0f} ms first audio {row['first_audio_p50_ms']:7.0f} ms")


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def summarize(cells: list[Cell], bare: dict, label: str) -> str:
    rows = [c.row() for c in cells]
    lines = [f"Load test ({label}, {_today()}, {platform.machine()} {os.cpu_count()} cores; "
             f"bare engine {bare['req_per_s']:.2f} req/s, {bare['audio_s_per_s']:.2f} audio s/s, "
             f"{bare['mean_ms']:.0f} ms/request)", "",
             "| service | conc. | answer | requests | req/s | audio s/s | p50 ms | p95 ms | p99 ms "
             "| first audio p50 ms | mean batch | throughput vs bare engine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        batch = f"{r['mean_batch']:.2f}" if r["mean_batch"] is not None else "-"
        errors = f" ({r['errors']} errors)" if r["errors"] else ""
        lines.append(f"| {r['service']} | {r['concurrency']} | {'streamed' if r['streamed'] else 'whole'} | "
                     f"{r['requests']}{errors} | {r['req_per_s']:.2f} | {r['audio_s_per_s']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['first_audio_p50_ms']:.0f} | "
                     f"{batch} | {r['req_per_s'] / bare['req_per_s']:.2f}x |")

    def find(service: str, conc: int, streamed: bool) -> dict | None:
        return next((r for r in rows if (r["service"], r["concurrency"], r["streamed"]) == (service, conc, streamed)),
                    None)

    lines.append("")
    top, low = max(c.concurrency for c in cells), min(c.concurrency for c in cells)
    serve_low = find("serve", low, False)
    if serve_low:
        lines.append(f"serve overhead at concurrency {low}: mean latency {np.mean(_lat(cells, 'serve', low)) * 1000:.0f} ms "
                     f"vs bare engine {bare['mean_ms']:.0f} ms per request")
    serve_top, naive_top = find("serve", top, False), find("naive", top, False)
    stream_top, stream_low = find("serve", top, True), find("serve", low, True)
    if serve_top:
        ratio = serve_top["req_per_s"] / bare["req_per_s"]
        lines.append(f"target: throughput at concurrency {top} >= 0.95x bare engine: {ratio:.2f}x -> "
                     f"{'met' if ratio >= 0.95 else 'NOT met'}")
    if serve_top and naive_top:
        lines.append(f"target: p99 at concurrency {top} below the naive service's: {serve_top['p99_ms']:.0f} vs "
                     f"{naive_top['p99_ms']:.0f} ms -> {'met' if serve_top['p99_ms'] < naive_top['p99_ms'] else 'NOT met'}")
    if stream_top and stream_low:
        ratio = stream_top["first_audio_p50_ms"] / stream_low["first_audio_p50_ms"]
        lines.append(f"target: streamed first audio at concurrency {top} <= 2x concurrency {low}: "
                     f"{stream_top['first_audio_p50_ms']:.0f} vs {stream_low['first_audio_p50_ms']:.0f} ms "
                     f"({ratio:.1f}x) -> {'met' if ratio <= 2 else 'NOT met'}")
    return "\n".join(lines)


def _lat(cells: list[Cell], service: str, conc: int) -> list[float]:
    return next(c.latencies for c in cells if c.service == service and c.concurrency == conc and not c.streamed)


if __name__ == "__main__":
    raise SystemExit(main())
