"""What a loaded vocoder is: the facts every later stage (export, engines, runtime) relies on."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover - the spec itself needs no torch
    import torch


@dataclass(frozen=True)
class VocoderSpec:
    """Shape and provenance of a vocoder.

    ``digest`` hashes the folded fp32 weights (names, shapes, bytes), so two sources holding
    the same network give the same digest and any changed weight gives another: manifests and
    caches key on it. ``left/right_context_frames`` are the mel frames of receptive field on
    each side of an output frame: streaming uses them so chunked output equals whole output.
    """

    arch: str
    sample_rate: int
    hop: int
    in_channels: int
    n_mels: int
    causal: bool
    nsf: bool
    digest: str
    source: str
    left_context_frames: int
    right_context_frames: int
    min_frames: int = 1
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = dict(self.config)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VocoderSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        """Human-readable multi-line summary (``tts-build-engine inspect``)."""
        rows = [
            ("source", self.source),
            ("architecture", self.arch),
            ("sample rate", f"{self.sample_rate} Hz"),
            ("hop", f"{self.hop} samples ({1000 * self.hop / self.sample_rate:.1f} ms)"),
            ("input channels", f"{self.in_channels}" + (" (mels + pitch + uv)" if self.nsf else "")),
            ("mel bins", str(self.n_mels)),
            ("causal", "yes" if self.causal else "no"),
            ("NSF", "yes" if self.nsf else "no"),
            ("context frames", f"{self.left_context_frames} left, {self.right_context_frames} right"),
            ("digest", self.digest),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted names, shapes and fp32 bytes of every tensor."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.float()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()
