"""CPU runtimes side by side: PyTorch FP32 eager, ONNX Runtime FP32, OpenVINO FP32 and BF16.

Why one run, interleaved: on a shared CPU box single runs of the same thing vary up to 2x, so
the runtimes take turns (``rounds`` rounds of ``runs`` calls each, every runtime once per
round) on the same real-speech mel, with the same pinned intra-op thread count, and the table
reports min and median per runtime and ratios to PyTorch measured in that same run.

Every runtime runs the engine directory's own FP32 ONNX export (``model.onnx``): ONNX Runtime
opens it directly; OpenVINO FP32 is that graph converted to IR in a temporary directory; the
OpenVINO BF16 row is the engine itself when it is a BF16 OpenVINO engine (its plan's islands),
else plain BF16 (no islands, labelled so) on CPUs with BF16 units, else skipped with the reason.
Each row also carries its parity against PyTorch (SNR, log-mel L1) and its streamed time to
first audio through :class:`~hifitrt.runtime.VocoderEngine` (``stream``, first chunk).
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..timing import interleaved_times, time_calls

log = logging.getLogger(__name__)

__all__ = ["CpuComparison", "compare_cpu_runtimes"]

DEFAULT_FRAMES = 400
DEFAULT_CHUNK_FRAMES = 32


@dataclass
class CpuComparison:
    """Rows ``{runtime, min_s, median_s, x_real_time, vs_torch_min, vs_torch_median, snr_db,
    log_mel_l1, first_audio_s}`` plus what a reader needs to weigh them."""

    engine_dir: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    date: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        m, s = self.machine, self.settings
        lines = [
            f"CPU runtimes, {self.date}: {m['cpu']} ({m['usable_cpus']} usable cores; flags: "
            f"{', '.join(m['cpu_flags']) or 'no AVX-512/AMX'}; OpenVINO capabilities: {', '.join(m['openvino_capabilities'])})",
            f"{s['threads']} intra-op threads each, {s['frames']}-frame real-speech mel ({s['audio_s']:.2f} s audio), "
            f"{s['rounds']} interleaved rounds x {s['runs']} runs; first audio: {s['chunk_frames']}-frame stream chunk",
            "",
            "| runtime | min / median s | x real time (min) | vs PyTorch FP32 eager (min / median) | SNR dB | log-mel L1 | first audio s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(f"| {r['runtime']} | {r['min_s']:.3f} / {r['median_s']:.3f} | {r['x_real_time']:.1f} | "
                         f"{r['vs_torch_min']:.2f}x / {r['vs_torch_median']:.2f}x | {_num(r['snr_db'], '.1f')} | "
                         f"{_num(r['log_mel_l1'], '.4f')} | {r['first_audio_s']:.3f} |")
        for name, why in self.skipped.items():
            lines.append(f"{name}: skipped ({why})")
        return "\n".join(lines)


def _num(value: Any, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def compare_cpu_runtimes(engine_dir: str | os.PathLike[str], *, threads: int | None = None, rounds: int = 4,
                         runs: int = 3, frames: int = DEFAULT_FRAMES, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                         progress: Callable[[str], None] | None = None) -> CpuComparison:
    """Time the four CPU runtimes on ``engine_dir``'s vocoder (see the module docstring)."""
    import torch

    from ..engines.manifest import verify_engine_dir
    from ..engines.openvino_engine import (
        PartSource, build_openvino_engine, cpu_info, read_openvino_config, usable_cores, whole_graph_part,
    )
    from ..export.mel import mel_config_for
    from ..export.ort import make_session
    from ..export.reference import TorchRunner
    from ..export.speech_inputs import fixture_speech
    from ..runtime.engine import VocoderEngine
    from ..runtime.openvino_runner import OpenVinoRunner
    from ..runtime.runners import OnnxRuntimeRunner
    from .bench import first_stream_chunk
    from .check import load_source_for
    from .metrics import compare_audio

    say = progress or (lambda line: log.info("%s", line))
    root = Path(engine_dir)
    manifest = verify_engine_dir(root)
    vocoder = load_source_for(manifest, root)
    spec = vocoder.spec
    threads = int(threads or usable_cores())
    cpu = cpu_info()
    onnx_path = root / "model.onnx"
    mel, _ = fixture_speech(spec).crop(frames)
    x = mel[None]
    audio_s = frames * spec.hop / spec.sample_rate
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hifitrt-cpu-bench-") as tmp:
        runners: dict[str, Any] = {
            "PyTorch FP32 eager": TorchRunner(vocoder.module),
            "ONNX Runtime FP32": OnnxRuntimeRunner(onnx_path, session=make_session(onnx_path, threads=threads,
                                                                                  inter_op_threads=1)),
        }
        build_openvino_engine(Path(tmp) / "fp32", [whole_graph_part(onnx_path)], precision="fp32")
        runners["OpenVINO FP32"] = OpenVinoRunner(Path(tmp) / "fp32", threads=threads)
        if manifest.backend_name == "openvino" and manifest.precision == "bf16":
            islands = [p.name for p in read_openvino_config(root).parts if p.hint == "f32"]
            runners[f"OpenVINO BF16 plan (FP32: {', '.join(islands) or 'none'})"] = OpenVinoRunner(root, threads=threads)
        elif cpu.has_bf16:
            whole = whole_graph_part(onnx_path)
            build_openvino_engine(Path(tmp) / "bf16", [PartSource("all", whole.onnx_path, "bf16", whole.inputs,
                                                                  whole.outputs)], precision="bf16")
            runners["OpenVINO BF16 (plain, no islands)"] = OpenVinoRunner(Path(tmp) / "bf16", threads=threads)
        else:
            skipped["OpenVINO BF16"] = f"{cpu.model} has {cpu.bf16_units()}"
        try:
            for runner in runners.values():
                runner.hop = int(spec.hop)
                runner.infer(x)  # warm-up (dynamic shapes compile kernels on first use)
            times = interleaved_times({name: partial(runner.infer, x) for name, runner in runners.items()}, rounds,
                                      runs, on_round=lambda r: say(f"round {r}/{rounds}"))
            reference = runners["PyTorch FP32 eager"].infer(x)
            torch_min, torch_median = min(times["PyTorch FP32 eager"]), statistics.median(times["PyTorch FP32 eager"])
            rows = []
            for name, runner in runners.items():
                out = runner.infer(x, measure=True)
                parity = compare_audio(reference, out, spec.sample_rate, with_pesq=False, mel_cfg=mel_config_for(spec))
                engine = VocoderEngine(runner, spec)
                first = time_calls(partial(first_stream_chunk, engine, mel, chunk_frames), runs)
                best, median = min(times[name]), statistics.median(times[name])
                rows.append({"runtime": name, "min_s": best, "median_s": median, "x_real_time": audio_s / best,
                             "vs_torch_min": torch_min / best, "vs_torch_median": torch_median / median,
                             "snr_db": None if name.startswith("PyTorch") else parity.snr_db,
                             "log_mel_l1": None if name.startswith("PyTorch") else parity.log_mel_l1,
                             "first_audio_s": statistics.median(first)})
        finally:
            torch.set_num_threads(old_threads)
            for runner in runners.values():
                runner.close()
    import onnxruntime
    import openvino

    machine = {"cpu": cpu.model, "usable_cpus": cpu.cores, "cpu_flags": list(cpu.flags),
               "openvino_capabilities": list(cpu.openvino_capabilities), "has_bf16": cpu.has_bf16,
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "openvino": openvino.__version__.split("-")[0]}
    try:
        machine["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    settings = {"threads": threads, "thread_pinning": "torch.set_num_threads; ORT intra_op (inter_op 1); "
                "OpenVINO INFERENCE_NUM_THREADS, 1 stream", "frames": frames, "audio_s": audio_s,
                "rounds": rounds, "runs": runs, "chunk_frames": chunk_frames}
    return CpuComparison(str(root), machine, settings, rows, skipped,
                         datetime.now(timezone.utc).isoformat(timespec="seconds"))
