"""Run the ``tts-build-engine`` CLI with the TensorRT TEST DOUBLE standing in for TensorRT and a GPU.

    python tests/doubles/run_with_tensorrt_double.py build default --out DIR --backend tensorrt

For rehearsing scripts/gpu_acceptance.sh (``HIFITRT_ACCEPTANCE_DOUBLE=1``) on a machine without
an NVIDIA GPU: the script's steps, the CLI, the engine directory, the manifest checks and the
TensorRT builder and runner code all run for real, but ``import tensorrt`` returns the double
(tests/doubles/tensorrt_double.py), the "GPU" is the double's modelled one and device memory is
host memory. NOTHING this prints is a TensorRT or GPU result: "engines" run ONNX Runtime on the
CPU. Only this test helper installs the double; hifitrt itself has no switch for it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
CHILD_SITE = Path(__file__).resolve().parent / "child_site"  # its sitecustomize installs the double


def install_tensorrt_double() -> None:
    """Make ``import tensorrt``, the GPU probe and the runner's CUDA memory use the double, here
    and in the Python child processes hifitrt starts (through ``PYTHONPATH``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(CHILD_SITE) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(CHILD_SITE), *paths])
    from doubles.tensorrt_double import CpuDeviceBackend, make_tensorrt_double

    from hifitrt.engines import backends, machine
    from hifitrt.engines.machine import DeviceInfo
    from hifitrt.runtime import tensorrt_runner

    trt = make_tensorrt_double()
    sys.modules["tensorrt"] = trt
    env = trt.double_env
    gpu = DeviceInfo(env.device_name, ".".join(str(n) for n in env.compute_capability))

    def modelled_gpu(index: int = 0) -> DeviceInfo | None:
        return gpu if index == 0 else None

    machine.current_device = modelled_gpu
    backends.current_device = modelled_gpu
    tensorrt_runner.TorchCudaBackend = lambda device="cuda": CpuDeviceBackend()  # type: ignore[assignment, misc]


def main(argv: list[str]) -> int:
    install_tensorrt_double()
    from hifitrt.cli import main as cli_main

    print("[TensorRT TEST DOUBLE: not TensorRT, not a GPU; results are ONNX Runtime on the CPU]", file=sys.stderr)
    return int(cli_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
