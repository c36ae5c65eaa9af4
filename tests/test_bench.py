"""Functional test of the benchmark on a tiny KAN-TTS 8 kHz ONNX Runtime engine (no timing asserts).

Timings on a shared CI box say nothing; what must hold is that every section is filled with
positive finite numbers for both sides, memory was really measured in child processes, and
the JSON written is what ``from_dict`` reads back.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hifitrt.export.kantts_random import kantts_configs_dir, random_weight_norm_generator, save_kantts_checkpoint
from hifitrt.validation.bench import BenchResult, bench_engine


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    from hifitrt.engines.build import build_engine

    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny_8k.yaml"
    # the shipped 8 kHz config with 16 channels instead of 256: same graph, milliseconds to run
    text = (kantts_configs_dir() / "hifigan_v1_8k.yaml").read_text().replace("channels: 256", "channels: 16", 1)
    config.write_text(text)
    params = yaml.safe_load(text)["Model"]["Generator"]["params"]
    module = random_weight_norm_generator(params, seed=3, scale=0.5)
    ckpt = save_kantts_checkpoint(module, config, root / "voc")
    out = root / "engine"
    build_engine(str(ckpt), out, backend="onnxruntime", precision="fp32")
    return out


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.mark.slow
def test_bench_fills_every_section_and_round_trips(tiny_engine: Path, tmp_path: Path) -> None:
    result = bench_engine(tiny_engine, max_batch=2, repeats=1, warmup=0, threads=1, max_frames=250)

    assert result.engine["backend"] == "onnxruntime" and result.engine["precision"] == "fp32"
    assert result.settings["threads"] == 1 and result.machine["threads"] == 1
    assert result.machine["cpu"] and result.machine["torch"] and result.machine["onnxruntime"]
    assert len(result.latency) >= 2, "several utterance lengths"
    assert len({row["frames"] for row in result.latency}) == len(result.latency)
    for row in result.latency:
        for side in ("engine", "torch"):
            s = row[side]
            assert set(s) >= {"p50", "p95", "p99", "mean", "n"} and s["n"] == 1
            assert 0 < s["p50"] <= s["p95"] <= s["p99"]
    for side in ("engine", "torch"):
        r = result.rtf[side]
        assert r["audio_per_compute"] * r["compute_per_audio"] == pytest.approx(1.0)
    assert [row["batch"] for row in result.throughput] == [1, 2]
    assert result.throughput[1]["audio_s"] == pytest.approx(2 * result.throughput[0]["audio_s"])
    s = result.streaming
    assert s["chunk_frames"] < s["frames"]
    for key in ("engine_first_audio_s", "torch_first_audio_s", "torch_streamed_first_audio_s", "engine_stream_total_s"):
        assert s[key] > 0
    mem = result.memory
    assert mem["measured"] and mem["method"]
    for side in ("engine", "torch"):
        assert mem[side]["peak_rss_mb"] > 0
        if "peak_over_baseline_mb" in mem[side]:
            assert mem[side]["peak_rss_mb"] >= mem[side]["baseline_rss_mb"]
    numbers = list(_numbers(result.to_dict()))
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert all(v >= 0 for v in numbers)

    path = result.write_json(tmp_path / "bench.json")
    assert BenchResult.from_dict(json.loads(path.read_text())) == result
    table = result.table()
    assert "x real time" in table and "batch 2" in table and "first chunk" in table


def test_bench_cli_rejects_a_directory_without_manifest(tmp_path: Path, capsys) -> None:
    from hifitrt.cli import main

    assert main(["bench", str(tmp_path), "--max-batch", "1", "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not an engine directory" in err and "\n" not in err


@pytest.mark.slow
def test_cpu_runtime_comparison_times_every_runtime_in_interleaved_rounds(tiny_engine: Path) -> None:
    """``bench --cpu-runtimes``: every runtime gets rounds x runs timings, its parity against
    PyTorch and a first-audio time; the table names each runtime (no timing asserts)."""
    from hifitrt.engines.openvino_engine import cpu_info
    from hifitrt.validation.cpu_bench import compare_cpu_runtimes

    rounds: list[str] = []
    result = compare_cpu_runtimes(tiny_engine, threads=1, rounds=2, runs=2, frames=64, chunk_frames=16,
                                  progress=rounds.append)
    assert rounds == ["round 1/2", "round 2/2"]
    names = [r["runtime"] for r in result.rows]
    assert names[:3] == ["PyTorch FP32 eager", "ONNX Runtime FP32", "OpenVINO FP32"]
    assert (len(names) == 4) == cpu_info().has_bf16  # plain BF16 only where the CPU has BF16 units
    for row in result.rows:
        assert 0 < row["min_s"] <= row["median_s"] and row["first_audio_s"] > 0, row
        if row["runtime"] in ("ONNX Runtime FP32", "OpenVINO FP32"):
            assert row["snr_db"] > 60, row  # the FP32 runtimes agree with PyTorch
    table = result.table()
    assert all(name in table for name in names) and "2 interleaved rounds x 2 runs" in table
