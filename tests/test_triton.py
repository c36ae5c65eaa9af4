"""Triton model repository and a REAL Triton Inference Server (the tritonserver 2.51 binary
bundled in nvidia-pytriton, installed by scripts/install_triton.sh), on loopback ports.

One server per module serves a repository written for a tiny ONNX Runtime engine; clients are
tritonclient.http. What this cannot cover here: the tensorrt_plan and onnxruntime_onnx models
(the bundled server has only the Python backend, and there is no GPU); their configs are
checked offline with Triton's schema, for a TensorRT engine built with the TensorRT TEST DOUBLE.
"""
from __future__ import annotations

import os
import signal
import threading
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from hifitrt.engines.build import build_engine
from hifitrt.errors import EngineError, ServingError
from hifitrt.export import kantts_random as synthetic
from hifitrt.runtime import VocoderEngine
from hifitrt.serving.triton_repo import (
    CONFIG, RepositoryOptions, check_config, parse_config, read_config, write_repository,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES = ["dynamic:1-4x8-32-64"]
# 16 lengths, below, inside and above the profile (long ones are windowed by VocoderEngine).
LENGTHS = [5, 8, 13, 21, 32, 33, 40, 47, 55, 64, 65, 77, 90, 100, 111, 128]


def _tiny_checkpoint(root: Path) -> Path:
    """A random KAN-TTS HiFi-GAN (8 kHz config shrunk to 16 channels): builds in seconds."""
    data = yaml.safe_load((synthetic.kantts_configs_dir() / "hifigan_v1_8k.yaml").read_text())
    data["Model"]["Generator"]["params"].update(
        channels=16, upsample_scales=[10, 10], upsample_kernal_sizes=[20, 20],
        resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]],
    )
    config = root / "tiny_8k.yaml"
    config.write_text(yaml.safe_dump(data))
    module = synthetic.random_weight_norm_generator(synthetic.generator_params(config), seed=0)
    return synthetic.save_kantts_checkpoint(module, config, root / "voc")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine_dir(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ort") / "tiny_engine"
    build_engine(checkpoint, out, backend="onnxruntime", precision="fp32", profiles=PROFILES, verify_export=False)
    return out


@pytest.fixture(scope="module")
def engine(engine_dir):
    with VocoderEngine.load(engine_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def repo(engine_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo") / "models"
    # "tiny" batches up to 16 requests held up to 100 ms; "tiny_q1" runs one at a time with room
    # for one waiting request, to show the bounded queue.
    write_repository([engine_dir], root, names=["tiny"],
                     options=RepositoryOptions(max_batch=16, max_queue_delay_us=100_000, max_queue=32))
    write_repository([engine_dir], root, names=["tiny_q1"],
                     options=RepositoryOptions(max_batch=1, max_queue_delay_us=0, max_queue=1, plain=False))
    return root


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _triton_or_skip():
    from hifitrt.serving.triton_server import find_tritonserver

    try:
        return find_tritonserver()
    except ServingError:
        pytest.skip("tritonserver is not installed (bash scripts/install_triton.sh .venv)")


@dataclass
class Served:
    """``tts-build-engine triton-serve`` running as a subprocess, and what it printed."""

    process: subprocess.Popen
    http_port: int
    metrics_port: int
    banner: str
    start_seconds: float

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture(scope="module")
def server(repo):
    """One real Triton for the module, started the way users start it: the CLI."""
    _triton_or_skip()
    http, grpc, metrics = _free_ports(3)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "hifitrt", "triton-serve", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    for line in process.stdout:  # the CLI exits (EOF) if Triton is not ready within its timeout
        lines.append(line)
        if "Ctrl-C" in line:
            break
    served = Served(process, http, metrics, "".join(lines), time.perf_counter() - started)
    if process.poll() is not None:
        pytest.fail(f"triton-serve exited: {served.banner}{process.stderr.read()}")
    yield served
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _mel(channels: int, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, frames)) * 1.5 - 5.0).astype(np.float32)


def _send(client, model: str, mels: list[np.ndarray]) -> list:
    """Send all mels at once (async_infer, one connection each); return results or exceptions."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    pending = []
    for mel in mels:
        tensor = httpclient.InferInput("mel", [1, *mel.shape], "FP32")
        tensor.set_data_from_numpy(mel[None])
        outputs = [httpclient.InferRequestedOutput("wav"), httpclient.InferRequestedOutput("mel_checksum")]
        pending.append(client.async_infer(model, [tensor], outputs=outputs))
    results = []
    for request in pending:
        try:
            results.append(request.get_result())
        except InferenceServerException as exc:
            results.append(exc)
    return results


def _metric(server, name: str, model: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and sample.labels.get("model") == model)


@pytest.fixture()
def client(server):
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", concurrency=16,
                                          network_timeout=60) as c:
        yield c


# -- repository (no server) ----------------------------------------------------------------------


def test_repository_layout_and_configs_parse_with_tritons_schema(repo, engine_dir, engine):
    assert sorted(p.name for p in repo.iterdir()) == ["tiny", "tiny_onnx", "tiny_q1"]
    assert (repo / "tiny" / "1" / "model.py").read_text() == \
        (REPO_ROOT / "serving" / "triton_model" / "model.py").read_text()
    copied = repo / "tiny" / "1" / "engine"
    assert (copied / "manifest.json").read_bytes() == (engine_dir / "manifest.json").read_bytes()
    assert not [p for p in repo.parent.iterdir() if ".staging-" in p.name], "staging left behind"

    python = read_config(repo / "tiny")
    assert python.backend == "python" and python.max_batch_size == 16
    (mel,) = python.input
    assert mel.name == "mel" and list(mel.dims) == [engine.in_channels, -1] and mel.allow_ragged_batch
    assert [o.name for o in python.output] == ["wav", "mel_checksum"]
    policy = python.dynamic_batching.default_queue_policy
    assert python.dynamic_batching.max_queue_delay_microseconds == 100_000
    assert policy.max_queue_size == 32 and policy.default_timeout_microseconds == 10_000_000
    assert policy.timeout_action == 0  # REJECT
    assert python.instance_group[0].kind == 2  # KIND_CPU for an ONNX Runtime engine
    assert python.parameters["engine_backend"].string_value == "onnxruntime"

    plain = read_config(repo / "tiny_onnx")
    assert plain.platform == "onnxruntime_onnx" and plain.max_batch_size == 4  # the profile's batch_max
    assert list(plain.input[0].dims) == [engine.in_channels, -1] and not plain.input[0].allow_ragged_batch
    assert list(plain.output[0].dims) == [1, -1]
    assert (repo / "tiny_onnx" / "1" / "model.onnx").read_bytes() == (engine_dir / "model.onnx").read_bytes()


def test_schema_rejects_what_triton_would(repo):
    text = (repo / "tiny" / CONFIG).read_text()
    with pytest.raises(ServingError, match="max_batch_sise"):
        parse_config(text.replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(ServingError, match="KIND_TPU"):
        parse_config(text.replace("KIND_CPU", "KIND_TPU"))


def test_semantic_checks_catch_what_the_parser_cannot(repo, engine_dir):
    from hifitrt.engines.manifest import read_manifest

    manifest = read_manifest(engine_dir)
    plain = read_config(repo / "tiny_onnx")
    plain.max_batch_size = 8
    with pytest.raises(ServingError, match="max_batch_size 8 exceeds profile .* batch_max 4"):
        check_config(plain, manifest, engine_dir, "onnxruntime_onnx", "tiny_onnx")
    python = read_config(repo / "tiny")
    python.input[0].dims[0] = 81
    with pytest.raises(ServingError, match=r"dims \[81, -1\] do not match the engine's \[\d+, -1\]"):
        check_config(python, manifest, engine_dir, "python", "tiny")
    python = read_config(repo / "tiny")
    python.input[0].allow_ragged_batch = False
    with pytest.raises(ServingError, match="allow_ragged_batch"):
        check_config(python, manifest, engine_dir, "python", "tiny")


def test_bad_requests_for_the_writer_leave_nothing(engine_dir, tmp_path):
    out = tmp_path / "repo"
    with pytest.raises(ServingError, match="used twice"):
        write_repository([engine_dir, engine_dir], out, names=["a", "a"])
    with pytest.raises(ServingError, match="not valid for Triton"):
        write_repository([engine_dir], out, names=["bad name"])
    with pytest.raises(EngineError, match="does not exist"):
        write_repository([engine_dir, tmp_path / "missing"], out, names=["first", "second"])
    with pytest.raises(ServingError, match="--max-batch must be >= 1"):
        write_repository([engine_dir], out, options=RepositoryOptions(max_batch=0))
    assert not out.exists() or not any(out.iterdir())
    # A larger --max-batch applies to the Python model; the plain one stays within the profiles.
    written = write_repository([engine_dir], out, options=RepositoryOptions(max_batch=9))
    assert [(m.name, m.max_batch_size) for m in written.models] == [("tiny_engine", 9), ("tiny_engine_onnx", 4)]
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_tensorrt_engine_configs_parse_with_tritons_schema(checkpoint, tmp_path):
    """A TensorRT engine built with the TensorRT TEST DOUBLE (no GPU here): both configs."""
    sys.path.insert(0, str(Path(__file__).parent))
    from doubles.tensorrt_double import make_tensorrt_double

    from hifitrt.engines import machine as machine_module

    trt = make_tensorrt_double(version="11.1.0.0", compute_capability=(8, 9))
    here = machine_module.Machine(machine_module.DeviceInfo("NVIDIA L4", "8.9"), "11.1.0.0")
    engine = tmp_path / "trt_engine"
    build_engine(checkpoint, engine, backend="tensorrt", precision="fp32", verify_export=False,
                 profiles=["short=dynamic:1-8x8-32-64", "long=dynamic:1-4x64-256-512"], trt_module=trt, machine=here)
    result = write_repository([engine], tmp_path / "repo", names=["voc"])
    assert [(m.name, m.kind) for m in result.models] == [("voc", "python"), ("voc_plan", "tensorrt_plan")]

    plan = parse_config((tmp_path / "repo" / "voc_plan" / CONFIG).read_text())
    assert plan.platform == "tensorrt_plan"
    assert plan.max_batch_size == 4  # every batch Triton forms fits whichever profile it picks
    assert [list(g.profile) for g in plan.instance_group] == [["0", "1"]]
    assert plan.instance_group[0].kind == 1  # KIND_GPU
    assert list(plan.dynamic_batching.preferred_batch_size) == [1, 4]
    assert plan.parameters["execution_context_allocation_strategy"].string_value == "ON_PROFILE_CHANGE"
    assert (tmp_path / "repo" / "voc_plan" / "1" / "model.plan").read_bytes() == \
        (engine / "tensorrt" / "engine.plan").read_bytes()
    python = parse_config((tmp_path / "repo" / "voc" / CONFIG).read_text())
    assert python.instance_group[0].kind == 1 and python.parameters["engine_backend"].string_value == "tensorrt"


def test_without_triton_the_message_says_how_to_get_it(monkeypatch):
    from hifitrt.serving.triton_server import find_tritonserver

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(ServingError, match=r"not installed: run hifitrt inside the NGC container .*install_triton\.sh"):
        find_tritonserver()


# -- the real server -----------------------------------------------------------------------------
# Marked slow: the module's one Triton server takes 15-60 s to start on 2 busy cores (each
# Python-model stub process imports torch, numpy and onnxruntime).


@pytest.mark.slow
def test_server_loads_what_it_can_and_says_what_it_cannot(server):
    banner = server.banner
    assert "models: tiny, tiny_q1" in banner, banner
    assert "not loaded: tiny_onnx (this tritonserver has no onnxruntime backend" in banner
    assert f"HTTP    http://127.0.0.1:{server.http_port}" in banner
    assert f"metrics http://127.0.0.1:{server.metrics_port}/metrics" in banner
    assert server.start_seconds < 90


@pytest.mark.slow
def test_concurrent_mixed_lengths_are_batched_and_exact(server, client, engine):
    mels = [_mel(engine.in_channels, frames, seed) for seed, frames in enumerate(LENGTHS)]
    count0, exec0 = _metric(server, "nv_inference_count_total", "tiny"), \
        _metric(server, "nv_inference_exec_count_total", "tiny")
    results = _send(client, "tiny", mels)
    for mel, result in zip(mels, results):
        assert not isinstance(result, Exception), result
        wav = result.as_numpy("wav")
        assert wav.shape == (1, mel.shape[1] * engine.hop)
        serial = engine(mel)  # one VocoderEngine call per mel, in this process
        assert np.abs(wav[0] - serial).max() <= 1e-5
    count = _metric(server, "nv_inference_count_total", "tiny") - count0
    executions = _metric(server, "nv_inference_exec_count_total", "tiny") - exec0
    assert count == len(mels)
    assert executions < count, f"{count} requests ran in {executions} executions: nothing was batched"


@pytest.mark.slow
def test_what_arrives_is_what_was_sent(server, client, engine):
    """The numpy-2 trap: the backend's as_numpy() garbles mels under numpy 2 and
    pb_utils.Tensor(ndarray) answers with zero bytes; DLPack both ways is exact."""
    mels = [_mel(engine.in_channels, frames, 100 + frames) for frames in (7, 50, 200)]
    for mel, result in zip(mels, _send(client, "tiny", mels)):
        sent = float(np.sum(mel, dtype=np.float64))
        assert float(result.as_numpy("mel_checksum")[0, 0]) == pytest.approx(sent, rel=1e-12, abs=1e-9)
        assert result.as_numpy("wav").nbytes == mel.shape[1] * engine.hop * 4


@pytest.mark.slow
def test_malformed_requests_fail_alone(server, client, engine):
    good = [_mel(engine.in_channels, frames, 7 * frames) for frames in (12, 30, 61)]
    nan = good[1].copy()
    nan[3, 5] = np.nan
    wrong_channels = _mel(engine.in_channels + 1, 20, 1)
    results = _send(client, "tiny", [good[0], nan, good[1], wrong_channels, good[2]])
    for i, mel in zip((0, 2, 4), good):
        assert not isinstance(results[i], Exception), results[i]
        assert np.abs(results[i].as_numpy("wav")[0] - engine(mel)).max() <= 1e-5
    assert "[400]" in str(results[1]) and "NaN" in str(results[1]) and "frame 5" in str(results[1])
    # Triton's own shape check answers the wrong channel count before the model sees it.
    assert "[400]" in str(results[3]) and "mel" in str(results[3]) and str(engine.in_channels) in str(results[3])
    assert server.process.poll() is None  # the server is still up


@pytest.mark.slow
def test_full_queue_rejects_at_once(server, engine):
    """tiny_q1: one request running, one waiting; the others are rejected without waiting."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    # Long enough (chunked through the 64-frame profile) that running it takes far longer than
    # a rejection on any CPU: ~0.25 s on a fast 2-core AVX-512 machine, where 3000 frames took
    # 35 ms and a rejection in the same burst up to 45 ms.
    mel = _mel(engine.in_channels, 20000, 3)
    outcomes: list[tuple[str, float, str]] = []
    # Every client connects first, then all send together: each latency is measured from its
    # own send, so a slow thread start cannot make a rejection look late (or a fast machine
    # make a served request look early).
    ready = threading.Barrier(8)

    def one() -> None:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=60) as c:
            tensor = httpclient.InferInput("mel", [1, *mel.shape], "FP32")
            tensor.set_data_from_numpy(mel[None])
            c.is_server_live()
            ready.wait(30)
            sent = time.perf_counter()
            try:
                c.infer("tiny_q1", [tensor])
                outcomes.append(("ok", time.perf_counter() - sent, ""))
            except InferenceServerException as exc:
                outcomes.append(("rejected", time.perf_counter() - sent, str(exc)))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    rejected = [o for o in outcomes if o[0] == "rejected"]
    served = [o for o in outcomes if o[0] == "ok"]
    assert len(outcomes) == 8 and rejected and served, outcomes
    assert all("[503]" in o[2] and "Exceeds maximum queue size" in o[2] for o in rejected), rejected
    # Rejections do not wait for the running request: each is answered faster than any request
    # that was served (the queued one waited for the running one; the running one ran).
    assert max(o[1] for o in rejected) < min(o[1] for o in served), outcomes


def test_cli_writes_a_repository(engine_dir, tmp_path, capsys):
    from hifitrt.cli import main

    assert main(["triton", str(engine_dir), "--out", str(tmp_path / "repo"), "--name", "voc",
                 "--max-batch", "4", "--max-queue", "8"]) == 0
    out = capsys.readouterr().out
    assert "voc_onnx" in out and "mixed-length" in out and "triton-serve" in out
    config = read_config(tmp_path / "repo" / "voc")
    assert config.max_batch_size == 4 and config.dynamic_batching.default_queue_policy.max_queue_size == 8

    assert main(["triton", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").iterdir())


@pytest.mark.slow
def test_server_stops_cleanly(server):
    """Last: Ctrl-C stops the CLI, which stops Triton (exit code 0) and its stub processes."""
    import urllib.request

    (triton,) = _children(server.process.pid, b"tritonserver")
    stubs = _children(triton, b"triton_python_backend_stub")
    assert len(stubs) == 2, "one stub process per Python model instance"
    server.process.send_signal(signal.SIGINT)
    out, err = server.process.communicate(timeout=60)
    assert server.process.returncode == 0, err
    assert "tritonserver stopped (exit code 0)" in out
    assert not [pid for pid in [triton, *stubs] if Path(f"/proc/{pid}").exists()]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/health/live", timeout=2)


def _children(parent: int, name: bytes) -> list[int]:
    """Live child processes of ``parent`` whose command line contains ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z" and name in cmd:
                found.append(int(entry.name))
    return found
