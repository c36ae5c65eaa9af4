"""``tts-build-engine bench``: an engine against PyTorch FP32 eager, side by side, in one run.

Why side by side: absolute numbers on a shared CPU box move with the load of the day, so every
engine number is printed next to the PyTorch number measured minutes apart, on the same real
speech mels, with the same intra-op thread count and through the same batching/streaming code
(``VocoderEngine`` over a ``TorchRunner`` for PyTorch). Ratios are what carries over.

What is measured (all on real speech: :func:`hifitrt.export.speech_inputs.fixture_inputs`):

* latency at batch 1 for several utterance lengths: p50/p95/p99/mean over ``repeats`` calls
  after ``warmup`` calls (with 5 repeats p95/p99 are interpolated towards the max: report, not
  SLO material);
* real-time factor over those utterances: audio seconds / compute seconds ("x real time",
  higher is better) and its inverse, compute / audio (the classic RTF, lower is better), both
  from the p50 latencies;
* throughput (audio seconds per wall second) at batch 1..``max_batch``: B different speech
  segments of equal length in one call (no padding, so B is the only variable);
* time to first audio when streaming: the first chunk of ``engine.stream(mel, chunk_frames)``
  against PyTorch, which needs the whole utterance before any audio exists (its p50 latency on
  the same utterance); PyTorch streamed through the same chunking is shown too, so the reader
  sees how much of the win is chunking and how much is the engine;
* peak memory: see :func:`measure_memory`. Each backend runs in a fresh child process (so one
  backend's allocator leftovers never count against the other); the child imports everything
  both backends need (numpy, torch, onnxruntime, hifitrt), reads ``VmRSS``, resets the
  kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), loads the
  backend, runs the longest latency utterance at batch 1 and the ``max_batch`` throughput
  batch, then reads ``VmHWM``. Reported: load delta, peak delta over the post-import RSS, and
  the absolute peak. This counts native memory (ORT arenas, MKL/oneDNN buffers) that
  ``tracemalloc`` cannot see. Without clear_refs the child's ``VmHWM`` (peak since process
  start) is used and the method says so; off Linux, ``ru_maxrss`` of the child.

Threads: ``threads`` (default: the CPUs this process may run on) is applied to both sides:
``torch.set_num_threads`` and ONNX Runtime's ``intra_op_num_threads`` (inter-op 1). TensorRT
engines ignore it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from .. import jsonfile
from ..atomic import write_text
from ..engines.manifest import Manifest, read_manifest
from ..errors import EngineError, HifitrtError
from ..export.load import load_vocoder
from ..export.speech_inputs import fixture_inputs
from ..export.spec import VocoderSpec
from ..runtime.engine import VocoderEngine
from ..timing import time_calls

log = logging.getLogger(__name__)

__all__ = ["BenchResult", "bench_engine", "machine_info", "measure_memory"]

SCHEMA = "hifitrt.bench"
#: Latency utterances: the fixtures up to this many frames (0.6 s .. 4.2 s of speech by
#: default), so a 2-core default run stays near two minutes; pass ``max_frames`` for longer.
DEFAULT_MAX_FRAMES = 450
#: Frames per throughput item (2 s at hop 160 / 16 kHz): a typical TTS sentence.
THROUGHPUT_FRAMES = 200
#: Streaming chunk (frames): 32 frames = 320 ms at 16 kHz / hop 160.
DEFAULT_CHUNK_FRAMES = 32
_MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------------------ result

@dataclass
class BenchResult:
    """Everything one bench run measured; plain JSON types only so ``from_dict(to_dict())`` is exact.

    Seconds everywhere except memory (MiB). ``latency``: one row per utterance
    ``{utterance, frames, audio_s, engine: Stats, torch: Stats}`` with Stats =
    ``{p50, p95, p99, mean, min, max, n}``. ``rtf``: ``{engine|torch: {audio_per_compute,
    compute_per_audio}, speedup}``. ``throughput``: ``{batch, frames, audio_s, engine_audio_s_per_s,
    torch_audio_s_per_s, speedup}`` rows. ``streaming``: first-audio times. ``memory``:
    ``{method, engine: {...}, torch: {...}}``.
    """

    engine_dir: str
    engine: dict[str, Any]
    source: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    latency: list[dict[str, Any]]
    rtf: dict[str, Any]
    throughput: list[dict[str, Any]]
    streaming: dict[str, Any]
    memory: dict[str, Any]
    date: str
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        if data.get("schema") != SCHEMA:
            raise HifitrtError(f"not a hifitrt bench result (schema {data.get('schema')!r}); pass a file written by 'tts-build-engine bench --json'")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return jsonfile.dumps(self.to_dict(), schema=SCHEMA, version=self.schema_version)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        return jsonfile.write_json(path, self.to_dict(), schema=SCHEMA, version=self.schema_version)

    def table(self) -> str:
        return format_table(self)


# ------------------------------------------------------------------------------------ machine

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, load and library versions: what a reader needs to weigh the numbers."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": usable_cpus(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["hifitrt"] = __version__
    return info


# ------------------------------------------------------------------------------------ loading

def load_torch_reference(manifest: Manifest) -> tuple[VocoderEngine, list[str]]:
    """PyTorch FP32 eager ``VocoderEngine`` for the engine's recorded source, plus notes."""
    source = manifest.source
    vocoder = load_vocoder(source["location"], voice=source.get("voice"))
    notes = []
    built = manifest.spec.digest
    if vocoder.spec.digest != built:
        notes.append(f"the source {source['location']!r} now has weights {vocoder.spec.digest[:12]}, "
                     f"the engine was built from {built[:12]}: PyTorch numbers are for the current weights")
    return VocoderEngine.from_vocoder(vocoder), notes


# ------------------------------------------------------------------------------------ inputs

@dataclass(frozen=True)
class BenchInputs:
    latency: dict[str, np.ndarray]          # name -> [C, T], shortest first
    throughput_pool: np.ndarray             # [C, T_all]: all fixtures joined, cut into items
    audio_per_frame: float                  # seconds of audio per mel frame


def bench_inputs(spec: VocoderSpec, max_frames: int = DEFAULT_MAX_FRAMES) -> BenchInputs:
    """Real speech adapted to ``spec``: the latency utterances and a pool for throughput items."""
    everything = fixture_inputs(spec)
    chosen: dict[str, np.ndarray] = {}
    for name, mel in everything.items():  # shortest first; skip near-duplicate lengths (< 25 % longer)
        if mel.shape[1] <= max_frames and all(mel.shape[1] > 1.25 * m.shape[1] for m in chosen.values()):
            chosen[name] = mel
    if not chosen:
        first = next(iter(everything))
        chosen = {first: everything[first]}
    pool = np.concatenate(list(everything.values()), axis=1)
    return BenchInputs(chosen, pool, float(spec.hop) / float(spec.sample_rate))


def throughput_batch(inputs: BenchInputs, batch: int, frames: int = THROUGHPUT_FRAMES) -> np.ndarray:
    """[batch, C, frames]: ``batch`` different speech segments of equal length (no padding)."""
    pool = inputs.throughput_pool
    frames = min(frames, pool.shape[1])
    items = []
    for i in range(batch):
        start = (i * frames) % max(1, pool.shape[1] - frames + 1)
        items.append(pool[:, start:start + frames])
    return np.ascontiguousarray(np.stack(items), dtype=np.float32)


# ------------------------------------------------------------------------------------ timing

def stats(times: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99 (linear interpolation), mean, min, max, n."""
    arr = np.asarray(times, dtype=np.float64)
    p50, p95, p99 = (float(v) for v in np.percentile(arr, [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99, "mean": float(arr.mean()),
            "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}


def first_stream_chunk(engine: VocoderEngine, mel: np.ndarray, chunk_frames: int) -> None:
    """Start streaming ``mel`` and stop at its first chunk (what time to first audio times)."""
    stream = engine.stream(mel, chunk_frames=chunk_frames)
    next(stream)
    stream.close()


def _drain(engine: VocoderEngine, mel: np.ndarray, chunk_frames: int) -> None:
    for _ in engine.stream(mel, chunk_frames=chunk_frames):
        pass


# ------------------------------------------------------------------------------------ memory

def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_child(request: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: load one backend, run the workload, report RSS numbers (MiB)."""
    import onnxruntime  # noqa: F401  - both children import the same libraries before the baseline
    import torch

    threads = int(request["threads"])
    torch.set_num_threads(threads)
    manifest = read_manifest(request["engine_dir"])
    base_kb = _proc_status_kb("VmRSS")
    reset = _reset_peak()
    if request["backend"] == "torch":
        engine, _ = load_torch_reference(manifest)
    else:
        engine = VocoderEngine.load(request["engine_dir"], threads=threads)
    loaded_kb = _proc_status_kb("VmRSS")
    for path in request["inputs"]:
        engine(np.load(path, allow_pickle=False))
    peak_kb = _proc_status_kb("VmHWM")
    if base_kb is None or peak_kb is None:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1.0 if sys.platform == "darwin" else 1024.0  # macOS reports bytes, Linux KiB
        return {"method": "ru_maxrss of the child (peak since process start, includes imports)",
                "peak_rss_mb": maxrss * scale / _MB}
    out = {"baseline_rss_mb": base_kb / 1024.0, "after_load_rss_mb": loaded_kb / 1024.0 if loaded_kb else None,
           "peak_rss_mb": peak_kb / 1024.0, "load_mb": ((loaded_kb or base_kb) - base_kb) / 1024.0,
           "peak_over_baseline_mb": (peak_kb - base_kb) / 1024.0, "peak_reset": reset}
    engine.close()
    return out


def _child_main() -> None:  # pragma: no cover - runs in the child process
    """Child entry point: measure, then write the numbers where the parent asked (no stdout
    protocol, so nothing a library logs can corrupt the answer)."""
    request = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING)
    write_text(Path(request["result_path"]), json.dumps(_memory_child(request)))


def measure_memory(engine_dir: str | os.PathLike[str], backend: str, input_paths: Sequence[str],
                   threads: int, timeout: float = 1800.0) -> dict[str, Any]:
    """Peak RSS of ``backend`` ("engine" or "torch") loading and vocoding ``input_paths``, in a child."""
    import hifitrt

    # the directory holding the hifitrt package as this process imported it (symlinks kept)
    package_root = str(Path(hifitrt.__file__).parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.TemporaryDirectory(prefix="hifitrt-bench-mem-") as tmp:
        result_path = Path(tmp) / "memory.json"
        request = {"engine_dir": str(engine_dir), "backend": backend, "inputs": list(input_paths),
                   "threads": threads, "result_path": str(result_path)}
        code = "from hifitrt.validation.bench import _child_main; _child_main()"
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(request)], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode == 0 and result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
    tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
    raise EngineError(f"memory measurement of {backend} failed in its child process ({tail}); rerun with -v")


# ------------------------------------------------------------------------------------ bench

def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _engine_info(engine: VocoderEngine) -> dict[str, Any]:
    m = engine.manifest
    assert m is not None  # VocoderEngine.load always keeps the verified manifest
    return {"backend": m.backend_name, "backend_version": m.backend.get("version"),
            "providers": list(getattr(engine.runner, "providers", m.backend.get("providers") or [])),
            "precision": m.precision, "engine_file": m.engine_file, "runner": engine.runner.name}


def bench_engine(engine_dir: str | os.PathLike[str], *, max_batch: int = 4, repeats: int = 5, warmup: int = 1,
                 threads: int | None = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                 max_frames: int = DEFAULT_MAX_FRAMES, memory: bool = True,
                 progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark the engine in ``engine_dir`` against PyTorch FP32 eager of its recorded source.

    ``repeats`` timed calls per latency point (throughput uses ``max(1, repeats // 2)``: each
    point is a whole batch), ``warmup`` untimed calls first. ``memory=False`` skips the two
    child processes (about a third of the run).
    """
    import torch

    if max_batch < 1 or repeats < 1 or warmup < 0 or chunk_frames < 1:
        raise HifitrtError("bench needs --max-batch >= 1, --repeats >= 1, warmup >= 0 and chunk frames >= 1")
    say = progress or (lambda line: log.info("%s", line))
    threads = int(threads or usable_cpus())
    started = time.perf_counter()
    machine = machine_info(threads)  # load average at the start: a busy box shows here
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine = VocoderEngine.load(engine_dir, threads=threads)  # ORT pinned like torch
        ref, notes = load_torch_reference(engine.manifest)
        inputs = bench_inputs(engine.spec, max_frames)
        sides = (("engine", engine), ("torch", ref))

        say(f"latency at batch 1 on {len(inputs.latency)} utterances ({repeats} repeats, {warmup} warmup)")
        latency = []
        for name, mel in inputs.latency.items():
            row: dict[str, Any] = {"utterance": name, "frames": int(mel.shape[1]),
                                   "audio_s": mel.shape[1] * inputs.audio_per_frame}
            for side, eng in sides:
                row[side] = stats(time_calls(lambda: eng(mel), repeats, warmup))
            row["speedup"] = _ratio(row["torch"]["p50"], row["engine"]["p50"])
            latency.append(row)
            say(f"  {name}: engine p50 {row['engine']['p50']:.3f} s, torch p50 {row['torch']['p50']:.3f} s")

        audio = sum(r["audio_s"] for r in latency)
        rtf: dict[str, Any] = {}
        for side, _ in sides:
            compute = sum(r[side]["p50"] for r in latency)
            rtf[side] = {"audio_s": audio, "compute_s": compute, "audio_per_compute": _ratio(audio, compute),
                         "compute_per_audio": _ratio(compute, audio)}
        rtf["speedup"] = _ratio(rtf["torch"]["compute_s"], rtf["engine"]["compute_s"])

        t_repeats = max(1, repeats // 2)
        say(f"throughput at batch 1..{max_batch} ({THROUGHPUT_FRAMES}-frame items, {t_repeats} repeats)")
        throughput = []
        for b in range(1, max_batch + 1):
            x = throughput_batch(inputs, b)
            row = {"batch": b, "frames": int(x.shape[2]), "audio_s": b * x.shape[2] * inputs.audio_per_frame}
            for side, eng in sides:
                t = stats(time_calls(lambda: eng(x), t_repeats, warmup))
                row[f"{side}_s"] = t["p50"]
                row[f"{side}_audio_s_per_s"] = _ratio(row["audio_s"], t["p50"])
            row["speedup"] = _ratio(row["torch_s"], row["engine_s"])
            throughput.append(row)
            say(f"  batch {b}: engine {row['engine_audio_s_per_s']:.2f}, torch {row['torch_audio_s_per_s']:.2f} audio s/s")

        long_name, long_mel = list(inputs.latency.items())[-1]
        say(f"streaming {long_name} in {chunk_frames}-frame chunks")
        first = {side: stats(time_calls(lambda: first_stream_chunk(eng, long_mel, chunk_frames), repeats, warmup))
                 for side, eng in sides}
        total = stats(time_calls(lambda: _drain(engine, long_mel, chunk_frames), 1, 0))
        whole_torch = latency[-1]["torch"]["p50"]
        streaming = {
            "utterance": long_name, "frames": int(long_mel.shape[1]), "audio_s": latency[-1]["audio_s"],
            "chunk_frames": chunk_frames, "chunk_audio_s": chunk_frames * inputs.audio_per_frame,
            "engine_first_audio_s": first["engine"]["p50"],
            "torch_first_audio_s": whole_torch,
            "torch_streamed_first_audio_s": first["torch"]["p50"],
            "engine_stream_total_s": total["p50"],
            "engine_whole_s": latency[-1]["engine"]["p50"],
            "speedup": _ratio(whole_torch, first["engine"]["p50"]),
        }

        mem: dict[str, Any] = {"measured": False}
        if memory:
            say("peak memory, one child process per backend")
            mem = _memory_section(engine_dir, inputs, long_mel, max_batch, threads)
        info = _engine_info(engine)
        source = {"location": engine.manifest.source.get("location"), "voice": engine.manifest.source.get("voice"),
                  "sample_rate": int(engine.spec.sample_rate), "hop": int(engine.spec.hop)}
        engine.close()
        ref.close()
    finally:
        torch.set_num_threads(old_threads)

    try:
        machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    settings = {"max_batch": max_batch, "repeats": repeats, "throughput_repeats": t_repeats, "warmup": warmup,
                "threads": threads, "thread_pinning": "torch.set_num_threads + ORT intra_op_num_threads (inter_op 1)",
                "chunk_frames": chunk_frames, "throughput_frames": THROUGHPUT_FRAMES, "max_frames": max_frames,
                "timer": "time.perf_counter around VocoderEngine calls (validation + inference + copies)"}
    return BenchResult(
        engine_dir=str(engine_dir), engine=info, source=source, machine=machine, settings=settings,
        latency=latency, rtf=rtf, throughput=throughput, streaming=streaming, memory=mem,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=round(time.perf_counter() - started, 2), notes=notes,
    )


def _memory_section(engine_dir: Any, inputs: BenchInputs, long_mel: np.ndarray, max_batch: int,
                    threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hifitrt-bench-") as tmp:
        paths = [os.path.join(tmp, "long.npy"), os.path.join(tmp, "batch.npy")]
        np.save(paths[0], long_mel)
        np.save(paths[1], throughput_batch(inputs, max_batch))
        result: dict[str, Any] = {
            "measured": True,
            "workload": f"{long_mel.shape[1]} frames at batch 1, then {max_batch} x {THROUGHPUT_FRAMES} frames",
        }
        for side in ("engine", "torch"):
            result[side] = measure_memory(engine_dir, side, paths, threads)
    reset = all(result[s].get("peak_reset") for s in ("engine", "torch"))
    if "baseline_rss_mb" in result["engine"]:
        result["method"] = ("fresh child process per backend; VmRSS after importing numpy/torch/onnxruntime/hifitrt "
                            "is the baseline; peak = VmHWM after load + workload"
                            + (" (peak counter reset at the baseline via /proc/self/clear_refs)" if reset
                               else " (VmHWM since process start: clear_refs unavailable)"))
    else:
        result["method"] = result["engine"].get("method", "ru_maxrss")
    return result


# ------------------------------------------------------------------------------------ table

def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def format_table(r: BenchResult) -> str:
    e, m = r.engine, r.machine
    lines = [
        f"hifitrt bench: {r.engine_dir}  [{e['backend']} {e['precision']}, {', '.join(e['providers'])}]  vs PyTorch FP32 eager",
        f"machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} intra-op threads each side, "
        f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, "
        f"load {m.get('load_average_1m', '-')}..{m.get('load_average_1m_end', '-')}, {r.date}",
        "",
        f"{'latency, batch 1':<28}{'audio s':>8}{'engine p50':>12}{'p95':>9}{'p99':>9}{'torch p50':>11}{'p95':>9}{'p99':>9}{'speedup':>9}",
    ]
    for row in r.latency:
        en, to = row["engine"], row["torch"]
        lines.append(f"  {row['utterance']:<26}{row['audio_s']:>8.2f}{en['p50']:>12.3f}{en['p95']:>9.3f}{en['p99']:>9.3f}"
                     f"{to['p50']:>11.3f}{to['p95']:>9.3f}{to['p99']:>9.3f}{_fmt(row['speedup'], '.2f'):>8}x")
    en, to = r.rtf["engine"], r.rtf["torch"]
    lines += [
        "",
        f"{'real-time factor':<28}{'engine':>12}{'torch':>12}",
        f"  {'x real time (audio/compute)':<26}{en['audio_per_compute']:>12.2f}{to['audio_per_compute']:>12.2f}",
        f"  {'RTF (compute/audio)':<26}{en['compute_per_audio']:>12.3f}{to['compute_per_audio']:>12.3f}",
        "",
        f"{'throughput (audio s / s)':<28}{'engine':>12}{'torch':>12}{'speedup':>9}",
    ]
    for row in r.throughput:
        lines.append(f"  {'batch ' + str(row['batch']):<26}{row['engine_audio_s_per_s']:>12.2f}"
                     f"{row['torch_audio_s_per_s']:>12.2f}{_fmt(row['speedup'], '.2f'):>8}x")
    s = r.streaming
    lines += [
        "",
        f"time to first audio ({s['utterance']}, {s['audio_s']:.2f} s, {s['chunk_frames']}-frame chunks)",
        f"  engine stream first chunk   {s['engine_first_audio_s']:.3f} s   (whole stream {s['engine_stream_total_s']:.3f} s)",
        f"  torch, whole utterance      {s['torch_first_audio_s']:.3f} s   (torch streamed: first chunk {s['torch_streamed_first_audio_s']:.3f} s)",
    ]
    mem = r.memory
    if mem.get("measured"):
        lines += ["", f"{'peak memory (MiB)':<28}{'engine':>12}{'torch':>12}"]
        for key, label in (("load_mb", "load (RSS delta)"), ("peak_over_baseline_mb", "peak over baseline"),
                           ("peak_rss_mb", "peak RSS (absolute)")):
            lines.append(f"  {label:<26}{_fmt(mem['engine'].get(key), '.0f'):>12}{_fmt(mem['torch'].get(key), '.0f'):>12}")
        lines.append(f"  method: {mem.get('method')}")
    for note in r.notes:
        lines.append(f"note: {note}")
    lines.append(f"bench took {r.wall_seconds:.1f} s")
    return "\n".join(lines)
