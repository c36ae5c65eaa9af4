"""One runner interface for PyTorch, ONNX Runtime and TensorRT (Polygraphy's idea).

Parity checks, benchmarks and :class:`~hifitrt.runtime.engine.VocoderEngine` are written once
against :class:`Runner`: ``infer(mel [B, C, T] float32) -> wav [B, 1, T*hop] float32``. A runner
does no validation beyond its own needs and no chunking: the engine decides shapes.

Thread safety: every runner here may be called from many threads at once. Torch modules are
stateless in eval/no-grad, ``onnxruntime.InferenceSession.run`` is documented thread-safe,
and TensorRTRunner keeps one execution context per thread.
"""
from __future__ import annotations

import abc
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EngineError

log = logging.getLogger(__name__)

__all__ = ["Runner", "TorchRunner", "OnnxRuntimeRunner", "runner_for_engine_dir"]


class Runner(abc.ABC):
    """Runs a vocoder graph on one backend.

    ``profiles`` lists the (batch, frames) ranges the backend was built for (empty: any
    shape); ``strict_profiles`` says whether shapes outside them fail (TensorRT) or merely
    were not tuned for (ONNX Runtime, torch).
    """

    name: str = "runner"
    profiles: Sequence[Any] = ()
    strict_profiles: bool = False

    def __init__(self) -> None:
        self.last_inference_time = 0.0

    @abc.abstractmethod
    def infer(self, mel: np.ndarray) -> np.ndarray:
        """float32 [B, C, T] -> float32 [B, 1, T*hop]."""

    @property
    def max_frames(self) -> int | None:
        """Longest input any profile accepts (None: unbounded)."""
        return max((p.frames_max for p in self.profiles), default=None)

    @property
    def max_batch(self) -> int | None:
        return max((p.batch_max for p in self.profiles), default=None)

    def close(self) -> None:
        """Release backend resources (idempotent)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TorchRunner(Runner):
    """PyTorch reference runner (fp32, CPU or the module's device), under ``torch.no_grad``."""

    name = "torch"

    def __init__(self, module: Any, name: str = "torch") -> None:
        super().__init__()
        import torch

        self._torch = torch
        self.module = module.eval() if hasattr(module, "eval") else module
        self.name = name
        try:
            self._device = next(module.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            self._device = torch.device("cpu")

    def infer(self, mel: np.ndarray) -> np.ndarray:
        torch = self._torch
        start = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(self._device)
        with torch.no_grad():
            y = self.module(x)
        out = y.detach().to("cpu", torch.float32).numpy()
        self.last_inference_time = time.perf_counter() - start
        return out


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session over an ONNX file (``InferenceSession.run`` is thread-safe)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] | None = None,
                 profiles: Sequence[Any] = (), session_options: Any = None, session: Any = None) -> None:
        super().__init__()
        self.path = Path(path)
        if session is None and not self.path.is_file():
            raise EngineError(f"ONNX model {self.path} does not exist: rebuild the engine")
        self.session = session if session is not None else _make_session(self.path, providers, session_options)
        self.profiles = tuple(profiles)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self.providers = list(self.session.get_providers())

    def infer(self, mel: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        (out,) = self.session.run([self._output], {self._input: np.ascontiguousarray(mel, dtype=np.float32)})
        self.last_inference_time = time.perf_counter() - start
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _make_session(path: Path, providers: Sequence[str] | None, options: Any) -> Any:
    """Prefer the project's session factory (best providers); plain ORT when it is absent."""
    if options is None:
        try:
            from ..export.ort import make_session
        except ImportError:  # pragma: no cover - only while export.ort is being written
            make_session = None
        if make_session is not None:
            return make_session(path, providers=list(providers) if providers else None)
    import onnxruntime as ort

    return ort.InferenceSession(os.fspath(path), sess_options=options,
                                providers=list(providers) if providers else ["CPUExecutionProvider"])


def runner_for_engine_dir(engine_dir: str | os.PathLike[str], manifest: Any, **kwargs: Any) -> Runner:
    """The runner the manifest's backend calls for (``kwargs`` go to TensorRTRunner)."""
    from ..engines.profiles import ShapeProfile

    engine_dir = Path(engine_dir)
    backend = manifest.backend.get("name") if isinstance(manifest.backend, dict) else manifest.backend
    profiles = [p if isinstance(p, ShapeProfile) else ShapeProfile.from_dict(p) for p in manifest.profiles]
    target = engine_dir / manifest.engine_file
    if backend == "tensorrt":
        from .tensorrt_runner import TensorRTRunner

        runner = TensorRTRunner(target, **kwargs)
        runner.strict_profiles = True  # type: ignore[attr-defined]
        return runner  # type: ignore[return-value]
    if backend == "onnxruntime":
        from ..engines.onnxruntime_engine import read_session_config

        config = read_session_config(engine_dir)
        session = config.create_session(engine_dir)
        return OnnxRuntimeRunner(engine_dir / config.model, profiles=profiles, session=session)
    raise EngineError(f"{engine_dir}: unknown engine backend {backend!r} in manifest.json; rebuild the engine")
