"""Triton Python-backend model: hifitrt's exact mixed-length batching behind Triton.

``tts-build-engine triton`` copies this file to ``REPO/NAME/1/model.py`` and the engine
directory to ``REPO/NAME/1/engine``. Why a Python model and not only a plain
``tensorrt_plan`` one: Triton's dynamic batcher merges only requests whose inputs have the same
shape, so mels of different lengths would run one at a time. With ``allow_ragged_batch: true``
on ``mel``, Triton hands requests of different lengths to one ``execute()`` call, and
``VocoderEngine.batch`` runs them together (pad, trim, tail fix-up), giving the same samples as
one call per mel.

Tensors cross the stub by DLPack in both directions. The Python backend that ships with Triton
is compiled against numpy 1.x; with numpy 2 in the model's environment ``as_numpy()`` returned
a wrong mel (right first value, wrong sum) and ``pb_utils.Tensor(name, ndarray)`` answered
with zero bytes and no error. DLPack avoids numpy's C API there and is exact.

Besides ``wav`` each response carries ``mel_checksum``, the float64 sum of the mel values as
they arrived in this process, so a client (and the tests) can prove the transport is intact.

Every request gets exactly one response: a request the engine rejects (NaN, wrong channels,
empty) gets its own error response and the other requests of the same batch still get audio.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack

from hifitrt.errors import HifitrtError
from hifitrt.runtime import VocoderEngine

INPUT = "mel"
OUTPUT = "wav"
CHECKSUM = "mel_checksum"


def _error(message: str, invalid_argument: bool) -> Any:
    """A TritonError; INVALID_ARG (HTTP 400) for the client's fault where the stub supports codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid_argument else "INTERNAL", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    """One instance = one stub process holding one :class:`VocoderEngine`."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        engine_dir = Path(args["model_repository"]) / args["model_version"] / params.get("engine_dir", "engine")
        expected = params.get("manifest_sha256", "")
        actual = hashlib.sha256((engine_dir / "manifest.json").read_bytes()).hexdigest()
        if expected and actual != expected:
            raise pb_utils.TritonModelException(
                f"{engine_dir}/manifest.json is not the one this config.pbtxt was written for "
                "(sha256 differs); regenerate the repository with tts-build-engine triton"
            )
        runner_kwargs: dict[str, Any] = {}
        if params.get("engine_backend") == "tensorrt" and args.get("model_instance_kind") == "GPU":
            runner_kwargs["device"] = f"cuda:{args.get('model_instance_device_id', '0')}"
        try:
            # load() verifies every artifact's sha256 (and for TensorRT the GPU and version).
            self.engine = VocoderEngine.load(engine_dir, **runner_kwargs)
        except HifitrtError as exc:
            raise pb_utils.TritonModelException(str(exc)) from exc
        pb_utils.Logger.log_info(f"hifitrt: {args['model_name']} loaded {self.engine!r} from {engine_dir}")

    def execute(self, requests: list[Any]) -> list[Any]:
        mels: list[list[np.ndarray]] = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
            batch = from_dlpack(tensor.to_dlpack()).cpu().numpy()  # [b, C, T]; b = 1 for most clients
            mels.append(list(batch))
        try:
            wavs = self.engine.batch([m for items in mels for m in items])
        except HifitrtError:
            # At least one request is bad: answer each request on its own so only it fails.
            return [self._one(items) for items in mels]
        except Exception as exc:  # noqa: BLE001 - every request must get a response
            return [pb_utils.InferenceResponse(error=_error(f"vocoder failed: {exc}", False)) for _ in requests]
        responses, start = [], 0
        for items in mels:
            responses.append(self._response(items, wavs[start:start + len(items)]))
            start += len(items)
        return responses

    def _one(self, items: list[np.ndarray]) -> Any:
        try:
            return self._response(items, self.engine.batch(items))
        except HifitrtError as exc:
            return pb_utils.InferenceResponse(error=_error(str(exc), True))
        except Exception as exc:  # noqa: BLE001
            return pb_utils.InferenceResponse(error=_error(f"vocoder failed: {exc}", False))

    @staticmethod
    def _response(mels: list[np.ndarray], wavs: list[np.ndarray]) -> Any:
        wav = torch.from_numpy(np.ascontiguousarray(np.stack(wavs), dtype=np.float32))
        checksum = torch.tensor([[float(np.sum(m, dtype=np.float64))] for m in mels], dtype=torch.float64)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor.from_dlpack(OUTPUT, wav),
            pb_utils.Tensor.from_dlpack(CHECKSUM, checksum),
        ])

    def finalize(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
