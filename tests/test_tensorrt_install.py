"""Matching TensorRT to CUDA: the gpu extras, the version report, and which GPU is checked.

``pip install hifitrt[gpu]`` used to pull whatever CUDA major NVIDIA's ``tensorrt`` metapackage
defaults to (CUDA 13 since 11.3) and would accept a TensorRT 12. These tests read the shipped
setup.cfg, the CUDA-major detection over installed distributions (made on disk as pip lays them
out), the mismatch advice, and that the engine check looks at the GPU the caller names.
"""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from hifitrt.engines import machine as machine_module
from hifitrt.engines.tensorrt_common import device_index
from hifitrt.engines.tensorrt_install import (
    cuda_mismatch,
    describe_versions,
    installed_versions,
    tensorrt_cuda_major,
)
from hifitrt.errors import EngineError

REPO = Path(__file__).resolve().parent.parent


def extras() -> dict[str, list[str]]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    section = parser["options.extras_require"]
    return {name: [line.strip() for line in section[name].splitlines() if line.strip()] for name in section}


def test_gpu_extras_pick_the_cuda_major_and_stop_below_tensorrt_12():
    found = extras()
    assert found["gpu-cu12"] == ["tensorrt-cu12>=10.12,<12", "nvidia-ml-py>=12"]
    assert found["gpu-cu13"] == ["tensorrt-cu13>=10.12,<12", "nvidia-ml-py>=12"]
    assert found["gpu"] == ["tensorrt>=10.12,<12", "nvidia-ml-py>=12"]


def fake_distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.parametrize(
    "installed, major",
    [
        ([("tensorrt_cu12_bindings", "10.16.1.11"), ("tensorrt_cu12_libs", "10.16.1.11")], "12"),
        ([("tensorrt_cu13", "11.4.0.106")], "13"),
        ([("tensorrt_lean_cu12_libs", "10.13.0.35")], None),  # a lean runtime is not TensorRT itself
        ([], None),  # not a pip install (Debian package, tarball) or no TensorRT
    ],
)
def test_tensorrt_cuda_major_from_the_installed_wheels(tmp_path, installed, major):
    for name, version in installed:
        fake_distribution(tmp_path, name, version)
    assert tensorrt_cuda_major(search_path=[str(tmp_path)]) == major


def test_versions_report_names_both_cuda_versions(tmp_path):
    fake_distribution(tmp_path, "tensorrt_cu13_bindings", "11.4.0.106")
    versions = installed_versions(trt_module=type("T", (), {"__version__": "11.4.0.106"}), search_path=[str(tmp_path)])
    assert versions["tensorrt"] == "11.4.0.106" and versions["tensorrt_cuda"] == "13"
    assert versions["torch"]  # torch is a dependency; its CUDA is None on a CPU build
    line = describe_versions({**versions, "torch": "2.13.0", "torch_cuda": "12.8"})
    assert line.startswith("TensorRT 11.4.0.106 (CUDA 13), torch 2.13.0 (CUDA 12.8)")


@pytest.mark.parametrize(
    "versions, advice",
    [
        ({"tensorrt_cuda": "13", "torch_cuda": "12.8"}, "pip install 'hifitrt[gpu-cu12]'"),
        ({"tensorrt_cuda": "13", "torch_cuda": "13.0", "driver_cuda": "12.4"}, "update the driver"),
        ({"tensorrt_cuda": "12", "torch_cuda": "12.8", "driver_cuda": "13.0"}, None),
        ({"tensorrt_cuda": None, "torch_cuda": "12.8"}, None),
    ],
)
def test_cuda_mismatch_says_what_to_install(versions, advice):
    problem = cuda_mismatch(versions)
    assert (problem is None) if advice is None else (advice in problem)


@pytest.mark.parametrize("device, index", [(None, None), ("cuda", None), ("cuda:0", 0), ("cuda:3", 3), (2, 2)])
def test_device_index_of_cuda_names(device, index):
    assert device_index(device) == index


@pytest.mark.parametrize("device", ["cpu", "cuda:x", "gpu:1", -1])
def test_device_index_refuses_non_cuda_devices(device):
    with pytest.raises(EngineError):
        device_index(device)


def test_engine_check_looks_at_the_gpu_the_engine_will_run_on(tmp_path, monkeypatch):
    """No GPU here: record which GPU index the check asks torch about."""
    from test_manifest import A10G, make_engine_dir

    from hifitrt.engines.manifest import verify_engine_dir

    asked: list[int] = []
    monkeypatch.setattr(machine_module, "current_device", lambda index=0: asked.append(index) or None)
    root = make_engine_dir(tmp_path / "e", device=A10G)
    for device in ("cuda:1", None):
        with pytest.raises(EngineError, match="no CUDA GPU"):
            verify_engine_dir(root, device=device)
    assert asked == [1, 0]


def test_cli_prints_the_versions_line(capsys):
    from hifitrt.cli import main

    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("versions: ") and "torch " in out and "(CUDA " in out
