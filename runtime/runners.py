"""The runners of the one runner interface (:class:`hifitrt.runner.Runner`), gathered for users.

``Runner`` (the interface, a template method: public ``infer`` validates, ``_infer`` runs) and
``TorchRunner`` (the PyTorch reference) live below ``export`` so export verification and
precision planning can use them; they are re-exported here with the ONNX Runtime runner.
TensorRT's runner is :class:`hifitrt.runtime.tensorrt_runner.TensorRTRunner`; OpenVINO's is
:class:`hifitrt.runtime.openvino_runner.OpenVinoRunner`. Opening the right runner for an
engine directory is :func:`hifitrt.runtime.loading.runner_for_engine_dir`.

Thread safety: every runner here may be called from many threads at once. Torch modules are
stateless in eval/no-grad, ``onnxruntime.InferenceSession.run`` is documented thread-safe,
and TensorRTRunner lends each call one execution context from a bounded pool.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..engines.profiles import ShapeProfile
from ..errors import EngineError
from ..export.ort import make_session
from ..export.reference import TorchRunner
from ..runner import Runner, check_mel

__all__ = ["Runner", "TorchRunner", "OnnxRuntimeRunner", "check_mel"]


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session over an ONNX graph (``InferenceSession.run`` is thread-safe).

    Pass an open ``session`` (an engine directory's, from its ``session.json``), or a ``path``
    to open with :func:`hifitrt.export.ort.make_session` (CPU unless ``providers`` say otherwise).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, session: Any = None,
                 providers: Sequence[Any] | None = None, threads: int | None = None,
                 profiles: Sequence[ShapeProfile] = (), hop: int | None = None) -> None:
        super().__init__()
        if session is None:
            if path is None or not Path(path).is_file():
                raise EngineError(f"ONNX model {path} does not exist: rebuild the engine")
            session = make_session(path, providers=providers or ("CPUExecutionProvider",), threads=threads)
        self.path = Path(path) if path is not None else None
        self.session = session
        self.profiles = tuple(profiles)
        self.hop = hop
        first = self.session.get_inputs()[0]
        self._input = first.name
        self._output = self.session.get_outputs()[0].name
        channels = first.shape[1] if len(first.shape) == 3 else None
        self.in_channels = channels if isinstance(channels, int) else None
        self.providers = list(self.session.get_providers())

    def _infer(self, mel: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise EngineError("this ONNX Runtime runner is closed; load the engine again")
        (out,) = self.session.run([self._output], {self._input: mel})
        return out

    def close(self) -> None:
        self.session = None
