"""Start and stop a real Triton Inference Server on a model repository.

Where ``tritonserver`` comes from: the one on ``PATH`` (the NGC ``tritonserver`` container,
whose backends live beside it in ``/opt/tritonserver/backends``), otherwise the one bundled in
the ``nvidia-pytriton`` wheel (``scripts/install_triton.sh``), which needs three things set up
that the wheel's own launcher normally does:

* a backend directory ``python/`` holding the wheel's ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the stub built for this Python version;
* ``LD_LIBRARY_PATH`` with the wheel's ``nvidia_pytriton.libs`` (the stub needs its libcudart)
  and, first, this interpreter's own ``libpython`` directory (``sysconfig`` ``LIBDIR``): the
  stub links ``libpython3.X.so``, and with an interpreter built elsewhere (pyenv) it would
  otherwise load the system's and mix two Pythons (``'_thread.RLock' object has no attribute
  '_recursion_count'``);
* ``PATH`` with this interpreter's ``bin`` first, so the stub's Python is this environment's
  (numpy, torch and hifitrt itself importable in ``model.py``).

Models whose backend this server does not have (the bundled server has only the Python
backend, so no ``tensorrt_plan`` / ``onnxruntime_onnx``) are left unloaded, and listed.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ServingError
from .triton_repo import CONFIG, config_backend, read_config

log = logging.getLogger(__name__)

INSTALL_HELP = (
    "Triton Inference Server is not installed: run hifitrt inside the NGC container "
    "(docker run nvcr.io/nvidia/tritonserver:<yy.mm>-py3) or install the bundled server with "
    "`bash scripts/install_triton.sh .venv` (pip install --no-deps nvidia-pytriton==0.7.0 "
    "'tritonclient[http,grpc]')"
)


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and where its backends are."""

    binary: Path
    backends: Path
    bundled: bool  # True: from nvidia-pytriton (needs the set-up described in the module docstring)

    def __str__(self) -> str:
        return f"{self.binary} ({'bundled in nvidia-pytriton' if self.bundled else 'from PATH'})"


def find_tritonserver() -> TritonInstall:
    """``tritonserver`` from PATH, else the one bundled in nvidia-pytriton, else ServingError."""
    on_path = shutil.which("tritonserver")
    if on_path:
        binary = Path(on_path).resolve()
        return TritonInstall(binary, binary.parent.parent / "backends", bundled=False)
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        dist = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        binary = dist / "bin" / "tritonserver"
        if binary.is_file():
            return TritonInstall(binary, dist / "backends", bundled=True)
    raise ServingError(INSTALL_HELP)


def _bundled_python_backend(install: TritonInstall, target: Path) -> Path:
    """Assemble ``target/python`` from the wheel's backend and the stub for this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.binary.parent.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServingError(f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub})")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copyfile(install.backends / "python" / name, python_dir / name)
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return target


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver whose Python-backend stubs run this interpreter's env."""
    env = dict(os.environ if base is None else base)
    libs: list[str] = []
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        libs.append(str(libdir))
    if install.bundled:
        libs.append(str(install.binary.parents[3] / "nvidia_pytriton.libs"))
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class TritonServer:
    """A running ``tritonserver`` process on loopback ports (start with :func:`start_triton`)."""

    process: subprocess.Popen[bytes]
    repository: Path
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    loaded: list[str]
    skipped: dict[str, str]  # model name -> why it was not loaded
    install: TritonInstall
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def first_error(self) -> str:
        """Why Triton gave up, in one line: its final ``error: ...`` line (e.g. a model's load
        failure) or else its last ``E`` log line without the timestamp; "" when none."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        final = [line for line in lines if line.startswith("error: ")]
        if final:
            return final[-1][len("error: "):].strip()
        logged = [line.split("] ", 1)[1].strip().strip('"') for line in lines
                  if line.startswith("E") and "] " in line]
        return logged[-1] if logged else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (Triton finishes in-flight requests, unloads models, stops the stubs), then
        SIGKILL after ``timeout`` seconds; returns the exit code (0 for a clean stop).

        Triton also waits for open HTTP connections (idle keep-alive clients included) up to
        its exit timeout and then exits with code 1: close clients before stopping."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop within %.0f s; killing it", timeout)
                self.process.kill()
                self.process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return int(self.process.returncode)

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def loadable_models(repository: Path, backends: Path) -> tuple[list[str], dict[str, str]]:
    """Models of ``repository`` this server can load, and the others with the reason."""
    loadable, skipped = [], {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (model_dir / CONFIG).is_file():
            continue
        backend = config_backend(read_config(model_dir))
        if (backends / backend).is_dir():
            loadable.append(model_dir.name)
        else:
            skipped[model_dir.name] = f"this tritonserver has no {backend} backend (in {backends})"
    return loadable, skipped


def start_triton(
    repository: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    models: Sequence[str] | None = None,
    ready_timeout: float = 120.0,
    exit_timeout: int = 10,
    install: TritonInstall | None = None,
    extra_args: Sequence[str] = (),
) -> TritonServer:
    """Start tritonserver on ``repository`` and return once every loaded model is ready.

    ``models``: load only these (default: every model whose backend this server has).
    ServingError with the end of Triton's log when it exits or is not ready in time.
    """
    repo = Path(repository).resolve()
    if not repo.is_dir():
        raise ServingError(f"model repository {repo} does not exist: write one with tts-build-engine triton")
    install = install or find_tritonserver()
    workdir = tempfile.TemporaryDirectory(prefix="hifitrt-triton-")
    backends = _bundled_python_backend(install, Path(workdir.name) / "backends") if install.bundled \
        else install.backends
    loadable, skipped = loadable_models(repo, backends)
    if models:
        unknown = sorted(set(models) - set(loadable) - set(skipped))
        if unknown:
            workdir.cleanup()
            raise ServingError(f"model(s) {unknown} are not in {repo}")
        skipped.update({m: "not requested" for m in loadable if m not in models})
        loadable = [m for m in loadable if m in models]
    if not loadable:
        workdir.cleanup()
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "it holds no model with a config.pbtxt"
        raise ServingError(f"no model of {repo} can be served by {install} ({why})")
    log_path = Path(workdir.name) / "tritonserver.log"
    command = [
        str(install.binary),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        f"--http-address={host}", f"--http-port={http_port}",
        f"--grpc-address={host}", f"--grpc-port={grpc_port}",
        f"--metrics-address={host}", f"--metrics-port={metrics_port}",
        "--model-control-mode=explicit", *(f"--load-model={m}" for m in loadable),
        # A unique shared-memory prefix: several servers (tests, users) can run side by side.
        f"--backend-config=python,shm-region-prefix-name=hifitrt{os.getpid()}_{http_port}_",
        # Triton waits this long for in-flight requests and open HTTP connections when stopped.
        f"--exit-timeout-secs={exit_timeout}",
        *extra_args,
    ]
    log.info("starting %s", " ".join(command))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=server_environment(install), start_new_session=True)
    server = TritonServer(process, repo, host, http_port, grpc_port, metrics_port, log_path,
                          loaded=loadable, skipped=skipped, install=install, _workdir=workdir)
    try:
        _wait_ready(server, ready_timeout)
    except ServingError as exc:
        reason = server.first_error()
        server.stop(timeout=10)
        raise ServingError(f"{exc}: {reason}" if reason else str(exc)) from None
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def _wait_ready(server: TritonServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.running():
            raise ServingError(f"tritonserver exited with code {server.process.returncode} while starting")
        if _ok(f"{server.http_url}/v2/health/ready") and all(
                _ok(f"{server.http_url}/v2/models/{m}/ready") for m in server.loaded):
            return
        if time.monotonic() > deadline:
            raise ServingError(f"tritonserver was not ready after {timeout:.0f} s")
        time.sleep(0.2)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
