"""What TensorRT installation this machine has: its CUDA major, lean runtimes, versions.

Three facts the TensorRT Python module does not tell, found here from the installed packages:

* **Which CUDA major TensorRT was built for.** NVIDIA publishes one wheel per CUDA major
  (``tensorrt-cu12``, ``tensorrt-cu13``; the plain ``tensorrt`` metapackage follows NVIDIA's
  default, CUDA 13 since 11.3). TensorRT, torch and the driver must agree on it, otherwise two
  CUDA runtimes end up in one process or the driver is too old. :func:`installed_versions`
  gathers torch's CUDA, TensorRT's CUDA and the driver's so the CLI and the acceptance script
  can print them, and :func:`cuda_mismatch` says in words what disagrees.
* **Where the lean runtime of another TensorRT version is.** A plan built with
  ``VERSION_COMPATIBLE`` + ``EXCLUDE_LEAN_RUNTIME`` carries no runtime: a newer TensorRT runs it
  only through the *build version's* ``libnvinfer_lean`` loaded with ``Runtime.load_runtime``.
  :func:`find_lean_runtime` looks for it, in this order:

  1. the file named by ``$HIFITRT_TENSORRT_LEAN_LIBRARY`` (used as given);
  2. an installed pip distribution ``tensorrt-lean-cuNN-libs`` (or ``tensorrt-lean-libs``) of
     exactly the build version: its ``libnvinfer_lean.so*`` file (installed by
     ``pip install tensorrt-lean-cuNN==<build version>``);
  3. ``libnvinfer_lean.so.<major.minor.patch>`` of the build version in ``$LD_LIBRARY_PATH`` and
     the usual system folders (Debian/RPM/tar installs name the real file with the full version).
* **Which TensorRT versions can run a version-compatible plan** (:func:`version_compatible_runtime_ok`):
  the same or a newer release of the same major, and TensorRT 10 plans on TensorRT 11 (NVIDIA's
  support matrix: "TensorRT 10 version-compatible engines can run with a TensorRT 11 runtime").

Nothing here imports TensorRT or raises: missing facts are None.
"""
from __future__ import annotations

import logging
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

_LOG = logging.getLogger(__name__)

LEAN_LIBRARY_ENV = "HIFITRT_TENSORRT_LEAN_LIBRARY"
SYSTEM_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/local/tensorrt/lib",
    "/opt/tensorrt/lib",
)
CROSS_MAJOR_VERSION_COMPATIBLE = frozenset({(8, 10), (10, 11)})
"""(build major, runtime major) pairs NVIDIA supports for version-compatible plans."""

# tensorrt-cu12, tensorrt_cu13_bindings, tensorrt-cu12-libs (not the lean/dispatch runtimes).
_TRT_DIST = re.compile(r"^tensorrt[-_.]cu(\d+)(?:[-_.](?:libs|bindings))?$", re.IGNORECASE)
_LEAN_DIST = re.compile(r"^tensorrt[-_.]lean(?:[-_.]cu(\d+))?[-_.]libs$", re.IGNORECASE)


def _version_numbers(version: str) -> tuple[int, ...]:
    from .tensorrt_common import version_tuple

    return version_tuple(version)


def version_compatible_runtime_ok(built: str, here: str) -> bool:
    """Can TensorRT ``here`` run a plan built version-compatible by TensorRT ``built``?"""
    b, h = _version_numbers(built), _version_numbers(here)
    if not b or not h or h < b:
        return False
    return h[0] == b[0] or (b[0], h[0]) in CROSS_MAJOR_VERSION_COMPATIBLE


# ------------------------------------------------------------------------------ CUDA of TensorRT
def _distributions(search_path: Sequence[str] | None) -> Iterable[Any]:
    return metadata.distributions(path=list(search_path)) if search_path is not None else metadata.distributions()


def tensorrt_cuda_major(search_path: Sequence[str] | None = None) -> str | None:
    """"12" or "13": the CUDA major of the installed TensorRT pip wheels (None: not a pip install)."""
    for dist in _distributions(search_path):
        match = _TRT_DIST.match(str(dist.metadata.get("Name", "")))
        if match:
            return match.group(1)
    return None


def _torch_versions() -> tuple[str | None, str | None]:
    try:
        import torch
    except ImportError:
        return None, None
    return str(torch.__version__), (str(torch.version.cuda) if torch.version.cuda else None)


def _driver_versions() -> tuple[str | None, str | None]:
    """(driver version, highest CUDA the driver supports) through NVML, when it is installed."""
    try:
        import pynvml  # nvidia-ml-py, part of the gpu extras

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no NVML, no driver, no GPU: report nothing
        _LOG.debug("no NVML driver information: %s", exc)
        return None, None
    driver_text = driver.decode() if isinstance(driver, bytes) else str(driver)
    return driver_text, f"{cuda // 1000}.{(cuda % 1000) // 10}"


def installed_versions(trt_module: Any = None, search_path: Sequence[str] | None = None) -> dict[str, str | None]:
    """TensorRT, its CUDA major, torch, torch's CUDA, the driver and the CUDA it supports.

    Keys: ``tensorrt``, ``tensorrt_cuda``, ``torch``, ``torch_cuda``, ``driver``,
    ``driver_cuda`` (each None when unknown). ``trt_module`` stands in for ``tensorrt``.
    """
    from .machine import tensorrt_version

    torch_version, torch_cuda = _torch_versions()
    driver, driver_cuda = _driver_versions()
    return {
        "tensorrt": tensorrt_version(trt_module),
        "tensorrt_cuda": tensorrt_cuda_major(search_path),
        "torch": torch_version,
        "torch_cuda": torch_cuda,
        "driver": driver,
        "driver_cuda": driver_cuda,
    }


def describe_versions(versions: dict[str, str | None]) -> str:
    """One line: 'TensorRT 10.16.1.11 (CUDA 12), torch 2.13.0 (CUDA 12.8), driver 580.65 (CUDA 13.0)'."""

    def part(name: str, version: str | None, cuda: str | None) -> str:
        if version is None:
            return f"no {name}"
        return f"{name} {version} (CUDA {cuda or 'unknown'})"

    parts = [
        part("TensorRT", versions.get("tensorrt"), versions.get("tensorrt_cuda")),
        part("torch", versions.get("torch"), versions.get("torch_cuda") or ("none: CPU build" if versions.get("torch") else None)),
    ]
    if versions.get("driver"):
        parts.append(part("driver", versions.get("driver"), versions.get("driver_cuda")))
    return ", ".join(parts)


def cuda_mismatch(versions: dict[str, str | None]) -> str | None:
    """What disagrees between TensorRT's, torch's and the driver's CUDA, with the fix; None if nothing."""
    trt_cuda = versions.get("tensorrt_cuda")
    torch_cuda = versions.get("torch_cuda")
    driver_cuda = versions.get("driver_cuda")
    if trt_cuda and torch_cuda and torch_cuda.split(".")[0] != trt_cuda:
        torch_major = torch_cuda.split(".")[0]
        return (
            f"torch uses CUDA {torch_cuda} but TensorRT is the CUDA {trt_cuda} build: install the matching one with "
            f"pip install 'hifitrt[gpu-cu{torch_major}]' (after pip uninstall the tensorrt-cu{trt_cuda} packages)"
        )
    if trt_cuda and driver_cuda and int(driver_cuda.split(".")[0]) < int(trt_cuda):
        return (
            f"the NVIDIA driver supports CUDA up to {driver_cuda} but TensorRT is the CUDA {trt_cuda} build: "
            f"update the driver or install pip install 'hifitrt[gpu-cu{driver_cuda.split('.')[0]}]'"
        )
    return None


# ------------------------------------------------------------------------------ lean runtime
def lean_wheel(version: str, cuda_major: str | None) -> str:
    """The pip requirement that installs the lean runtime of TensorRT ``version``."""
    return f"tensorrt-lean-cu{cuda_major or '12'}=={version}"


def find_lean_runtime(
    version: str,
    *,
    explicit: str | os.PathLike[str] | None = None,
    search_path: Sequence[str] | None = None,
    library_dirs: Sequence[str] | None = None,
) -> Path | None:
    """The ``libnvinfer_lean`` library of TensorRT ``version``, or None (see the module doc).

    ``explicit`` (or ``$HIFITRT_TENSORRT_LEAN_LIBRARY``) wins when it names a file; pip
    distributions are read from ``search_path`` (default ``sys.path``); system folders are
    ``library_dirs`` (default ``$LD_LIBRARY_PATH`` + :data:`SYSTEM_LIBRARY_DIRS`).
    """
    chosen = explicit if explicit is not None else os.environ.get(LEAN_LIBRARY_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if path.is_file():
            return path
        _LOG.warning("%s names %s, which is not a file", LEAN_LIBRARY_ENV if explicit is None else "lean runtime", path)
    wanted = _version_numbers(version)
    for dist in _distributions(search_path):
        if not _LEAN_DIST.match(str(dist.metadata.get("Name", ""))):
            continue
        if _version_numbers(str(dist.version)) != wanted:
            continue
        for file in dist.files or ():
            if file.name.startswith("libnvinfer_lean.so"):
                located = Path(str(dist.locate_file(file)))
                if located.is_file():
                    return located
    release = ".".join(str(n) for n in wanted[:3])
    dirs = list(library_dirs) if library_dirs is not None else [
        d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d
    ] + list(SYSTEM_LIBRARY_DIRS)
    for folder in dirs:
        candidate = Path(folder) / f"libnvinfer_lean.so.{release}"
        if candidate.is_file():
            return candidate
    return None
