"""``TorchRunner``: the one way hifitrt runs the PyTorch reference.

Export verification, FP16 planning, parity checks, benchmarks, ``vocode`` without an engine and
``VocoderEngine.from_vocoder`` all run PyTorch FP32 through this runner, so "the reference" is
computed one way everywhere (eval mode, ``torch.no_grad``, float32 in and out).

``cache=True`` keeps outputs per distinct input item (one [C, T] mel, keyed by content): on a
2-core CPU the reference forward is the slowest step of a build, and export verification,
precision planning and the quick parity ask for the same fixtures. Items of one call missing
from the cache run together as one batch. Leave it off for serving-like use (memory grows with
every distinct input).
"""
from __future__ import annotations

import hashlib
import threading
import numpy as np
import torch

from ..runner import Runner


def _key(item: np.ndarray) -> str:
    h = hashlib.sha1(np.ascontiguousarray(item).tobytes())
    h.update(str(item.shape).encode())
    return h.hexdigest()


class TorchRunner(Runner):
    """PyTorch FP32 reference runner (CPU or the module's device), optionally caching outputs."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, *, cache: bool = False, hop: int | None = None,
                 in_channels: int | None = None, name: str = "torch") -> None:
        super().__init__()
        self.module = module.eval() if hasattr(module, "eval") else module
        self.name = name
        self.hop = hop
        self.in_channels = in_channels
        self._cache: dict[str, np.ndarray] | None = {} if cache else None
        self._lock = threading.Lock()
        try:
            self._device = next(module.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            self._device = torch.device("cpu")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The reference output for ``batch`` [B, C, T], as computed (for comparisons)."""
        return self.infer(batch, measure=True)

    @torch.no_grad()
    def _forward(self, mel: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(self._device)
        return self.module(x).detach().to("cpu", torch.float32).numpy()

    def _infer(self, mel: np.ndarray) -> np.ndarray:
        if self._cache is None:
            return self._forward(mel)
        keys = [_key(item) for item in mel]
        with self._lock:
            missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            out = self._forward(mel[missing])
            with self._lock:
                for j, i in enumerate(missing):
                    self._cache[keys[i]] = out[j]
        with self._lock:
            return np.stack([self._cache[k] for k in keys])

    def clear_cache(self) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.clear()
