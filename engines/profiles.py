"""Shape profiles: which (batch, frames) ranges an engine is compiled for.

A TensorRT engine only runs shapes inside one of its optimization profiles, and it picks its
kernels for each profile's *opt* shape. One huge range (1..2048 frames) is slow at both ends,
so hifitrt builds a few narrower profiles (short / medium / long) into one engine and the
runner picks, per call, the tightest profile that contains the mel's shape. Inputs longer than
every profile are chunked by the higher-level runtime, never silently cut.

Profiles only describe the batch and frame axes of the input ``mel`` [batch, channels, frames];
the channel count is static and read from the ONNX graph.

Text form (the CLI's ``--profile``), an optional ``NAME=`` prefix, then either:

* ``fixed:BxT``                 e.g. ``fixed:1x256``       min = opt = max = [B, T]
* ``dynamic:BMIN-BMAXxFMIN-FOPT-FMAX`` e.g. ``dynamic:1-8x8-64-128``
  The batch opt is BMIN: a TTS service mostly vocodes one utterance at a time, and TensorRT
  tunes tactics for opt, so the latency of batch 1 is what opt should serve. Give three batch
  numbers (``BMIN-BOPT-BMAX``) to choose another opt batch.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import EngineError

INPUT_NAME = "mel"
"""Name of the network input every profile applies to (the ONNX graph contract)."""

_FIELDS = ("batch_min", "batch_opt", "batch_max", "frames_min", "frames_opt", "frames_max")

# Upper bounds. Longer mels are chunked by the runtime, so no profile needs more than ~80 s of
# frames; a batch x frames product bounds activation memory (the default vocoder holds ~121 kB
# per frame in fp32, so 65,536 frames is ~8 GB), which every backend must allocate at max shape.
MAX_PROFILE_FRAMES = 8192
MAX_PROFILE_BATCH = 64
MAX_PROFILE_BATCH_FRAMES = 65536


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile over the batch and frame axes of ``mel``.

    ``name`` is a label for reports and manifests; when empty it is derived from the numbers.
    Construction does not validate (so a manifest can be read and then reported on);
    :func:`validate_profiles` does, with messages a user can act on.
    """

    batch_min: int
    batch_opt: int
    batch_max: int
    frames_min: int
    frames_opt: int
    frames_max: int
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        return (
            f"b{self.batch_min}-{self.batch_opt}-{self.batch_max}"
            f"_f{self.frames_min}-{self.frames_opt}-{self.frames_max}"
        )

    @property
    def is_fixed(self) -> bool:
        return self.batch_min == self.batch_max and self.frames_min == self.frames_max

    def contains(self, batch: int, frames: int) -> bool:
        return self.batch_min <= batch <= self.batch_max and self.frames_min <= frames <= self.frames_max

    def shapes(self, channels: int) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
        """(min, opt, max) input shapes [B, C, T], as TensorRT's ``set_shape`` takes them."""
        return (
            (self.batch_min, channels, self.frames_min),
            (self.batch_opt, channels, self.frames_opt),
            (self.batch_max, channels, self.frames_max),
        )

    @classmethod
    def from_shapes(
        cls, min_shape: Sequence[int], opt_shape: Sequence[int], max_shape: Sequence[int], name: str = ""
    ) -> "ShapeProfile":
        """Inverse of :meth:`shapes`: read a profile back from [B, C, T] min/opt/max shapes."""
        for shape in (min_shape, opt_shape, max_shape):
            if len(shape) != 3:
                raise EngineError(
                    f"profile shape {tuple(shape)} is not [batch, channels, frames]: "
                    "the engine was not built by hifitrt; rebuild it"
                )
        return cls(
            batch_min=int(min_shape[0]),
            batch_opt=int(opt_shape[0]),
            batch_max=int(max_shape[0]),
            frames_min=int(min_shape[2]),
            frames_opt=int(opt_shape[2]),
            frames_max=int(max_shape[2]),
            name=name,
        )

    def to_text(self) -> str:
        """The ``--profile`` text that parses back to this profile (name included)."""
        if self.is_fixed and self.batch_opt == self.batch_min and self.frames_opt == self.frames_min:
            body = f"fixed:{self.batch_min}x{self.frames_min}"
        else:
            batch = f"{self.batch_min}-{self.batch_opt}-{self.batch_max}"
            body = f"dynamic:{batch}x{self.frames_min}-{self.frames_opt}-{self.frames_max}"
        return f"{self.name}={body}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShapeProfile":
        missing = [key for key in _FIELDS if key not in data]
        if missing:
            raise EngineError(
                f"shape profile entry {dict(data)!r} lacks {', '.join(missing)}: "
                "the manifest is damaged or from another tool; rebuild the engine"
            )
        values = {}
        for key in _FIELDS:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise EngineError(f"shape profile field {key}={value!r} is not an integer; rebuild the engine")
            values[key] = value
        name = data.get("name", "")
        if not isinstance(name, str):
            raise EngineError(f"shape profile name {name!r} is not a string; rebuild the engine")
        return cls(name=name, **values)


# Why these numbers: at hop 160..300 (16 kHz/hop 160 = 100 frames/s; 22.05 kHz/hop 256 =
# 86 frames/s; 24 kHz/hop 300 = 80 frames/s) the three ranges cover
#   short   8..128 frames    ~0.1-1.6 s: interjections, short phrases, streaming chunks
#   medium  128..768 frames  ~1.3-9.6 s: a typical TTS sentence (opt 384 ~ 4-5 s)
#   long    768..2048 frames ~8-25 s: long sentences; longer input is chunked by the runtime
# Batch opt is 1 (latency of one utterance); batch max 8 lets a service batch short and medium
# sentences. Long keeps batch max 4 to bound activation memory: the last HiFi-GAN V1 stages
# hold 32 channels at the full sample rate, 4 x 2048 x 300 samples x 32 ch x 2 B ~ 157 MB per
# fp16 tensor, several alive at once, which still fits a 16 GB T4 with room for other work.
DEFAULT_PROFILES: tuple[ShapeProfile, ...] = (
    ShapeProfile(1, 1, 8, 8, 64, 128, "short"),
    ShapeProfile(1, 1, 8, 128, 384, 768, "medium"),
    ShapeProfile(1, 1, 4, 768, 1200, 2048, "long"),
)


# CPU engines (ONNX Runtime without a GPU): the same frame ranges, but batching buys almost no
# throughput on a CPU (measured: batch 2 gave 0.67-0.78 audio s/s vs 0.54-0.88 at batch 1 on
# 2 cores) while every profile's max batch multiplies the parity sweep's cost, so batch max 2.
CPU_DEFAULT_PROFILES: tuple[ShapeProfile, ...] = tuple(
    dataclasses.replace(p, batch_max=min(p.batch_max, 2)) for p in DEFAULT_PROFILES
)


def default_profiles(min_frames: int = 1, *, cpu: bool = False) -> tuple[ShapeProfile, ...]:
    """:data:`DEFAULT_PROFILES` (or the CPU set) with frame ranges raised to ``min_frames``.

    A vocoder whose padding needs more frames than a default minimum (``VocoderSpec.min_frames``)
    still gets the usual three profiles instead of a validation error.
    """
    result = []
    for p in CPU_DEFAULT_PROFILES if cpu else DEFAULT_PROFILES:
        fmin = max(p.frames_min, min_frames)
        fopt = max(p.frames_opt, fmin)
        fmax = max(p.frames_max, fopt)
        result.append(dataclasses.replace(p, frames_min=fmin, frames_opt=fopt, frames_max=fmax))
    return tuple(result)


_NUM = r"\s*(\d+)\s*"
_FIXED = re.compile(rf"^{_NUM}x{_NUM}$", re.IGNORECASE)
_DYNAMIC = re.compile(rf"^{_NUM}-{_NUM}(?:-{_NUM})?x{_NUM}-{_NUM}-{_NUM}$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_profile(text: str) -> ShapeProfile:
    """Parse ``[NAME=]fixed:BxT`` or ``[NAME=]dynamic:BMIN-BMAXxFMIN-FOPT-FMAX`` (see module doc).

    Only the syntax is checked here; ranges are checked by :func:`validate_profiles`.
    """
    original = text
    name = ""
    if "=" in text:
        name, text = (part.strip() for part in text.split("=", 1))
        if not _NAME.match(name):
            raise EngineError(f"profile name {name!r} in {original!r} may use only letters, digits, '_', '.', '-'")
    kind, sep, body = text.strip().partition(":")
    kind = kind.strip().lower()
    usage = "use fixed:BxFRAMES (e.g. fixed:1x256) or dynamic:BMIN-BMAXxFMIN-FOPT-FMAX (e.g. dynamic:1-8x8-64-128)"
    if not sep or kind not in ("fixed", "dynamic"):
        raise EngineError(f"cannot read shape profile {original!r}: {usage}")
    if kind == "fixed":
        match = _FIXED.match(body)
        if not match:
            raise EngineError(f"cannot read fixed shape profile {original!r}: {usage}")
        batch, frames = (int(g) for g in match.groups())
        return ShapeProfile(batch, batch, batch, frames, frames, frames, name)
    match = _DYNAMIC.match(body)
    if not match:
        raise EngineError(f"cannot read dynamic shape profile {original!r}: {usage}")
    b1, b2, b3, fmin, fopt, fmax = match.groups()
    if b3 is None:  # BMIN-BMAX: opt batch = BMIN (latency of a single utterance; module doc)
        bmin, bopt, bmax = int(b1), int(b1), int(b2)
    else:
        bmin, bopt, bmax = int(b1), int(b2), int(b3)
    return ShapeProfile(bmin, bopt, bmax, int(fmin), int(fopt), int(fmax), name)


def validate_profiles(
    profiles: Sequence[ShapeProfile], min_frames: int = 1, input_names: Iterable[str] = (INPUT_NAME,)
) -> None:
    """Raise :class:`EngineError` naming the first problem; return None when all are usable.

    Checks: at least one profile; unique names; every number a positive integer;
    min <= opt <= max on both axes; frames_min >= ``min_frames`` (the vocoder's own minimum,
    ``VocoderSpec.min_frames``); the network has an input called ``mel``.
    """
    names = list(input_names)
    if INPUT_NAME not in names:
        raise EngineError(
            f"the ONNX model's inputs are {names} but shape profiles apply to an input named "
            f"'{INPUT_NAME}': export the vocoder with hifitrt (tts-build-engine export)"
        )
    if not profiles:
        raise EngineError("no shape profiles given: pass at least one, e.g. --profile dynamic:1-8x8-64-128")
    seen: set[str] = set()
    for p in profiles:
        if not isinstance(p, ShapeProfile):
            raise EngineError(f"{p!r} is not a ShapeProfile; parse profile text with parse_profile()")
        if p.name in seen:
            raise EngineError(f"two shape profiles are named {p.name!r}: give each profile its own name")
        seen.add(p.name)
        for key in _FIELDS:
            value = getattr(p, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineError(f"profile {p.name!r}: {key}={value!r} must be a positive integer")
        if p.frames_max > MAX_PROFILE_FRAMES:
            raise EngineError(
                f"profile {p.name!r}: frames_max={p.frames_max} is above {MAX_PROFILE_FRAMES}; longer mels are "
                "chunked by the runtime, so use a shorter profile (e.g. dynamic:1-4x768-1200-2048)"
            )
        if p.batch_max > MAX_PROFILE_BATCH:
            raise EngineError(f"profile {p.name!r}: batch_max={p.batch_max} is above {MAX_PROFILE_BATCH}")
        if p.batch_max * p.frames_max > MAX_PROFILE_BATCH_FRAMES:
            raise EngineError(
                f"profile {p.name!r}: batch_max x frames_max = {p.batch_max * p.frames_max} frames is above "
                f"{MAX_PROFILE_BATCH_FRAMES} (activation memory at the max shape); lower the batch or the frames"
            )
        if not p.batch_min <= p.batch_opt <= p.batch_max:
            raise EngineError(
                f"profile {p.name!r}: batch min/opt/max {p.batch_min}/{p.batch_opt}/{p.batch_max} "
                "must satisfy min <= opt <= max"
            )
        if not p.frames_min <= p.frames_opt <= p.frames_max:
            raise EngineError(
                f"profile {p.name!r}: frames min/opt/max {p.frames_min}/{p.frames_opt}/{p.frames_max} "
                "must satisfy min <= opt <= max"
            )
        if p.frames_min < min_frames:
            raise EngineError(
                f"profile {p.name!r} starts at {p.frames_min} frames but this vocoder needs at least "
                f"{min_frames}: raise frames_min to {min_frames}"
            )


def check_context(profiles: Sequence[ShapeProfile], context_frames: int, *, allow_short: bool = False) -> None:
    """Refuse profiles too short to hold the vocoder's receptive field (``context_frames``).

    A runtime bound to its profiles (TensorRT) vocodes a long mel in windows of at most the
    longest profile, each carrying ``context_frames`` of context; when a window cannot hold the
    context, every chunk seam is computed from truncated context and the audio is wrong (a
    ``fixed:1x1`` engine turned speech into noise while its short-shape parity looked perfect).
    ``allow_short`` (``--allow-short-profiles``) accepts such an engine on purpose.
    """
    longest = max((p.frames_max for p in profiles), default=0)
    if allow_short or longest > context_frames:
        return
    need = max(2 * context_frames, context_frames + 1)
    raise EngineError(
        f"the longest profile holds {longest} frames but this vocoder's receptive field spans {context_frames} "
        f"frames, so chunked speech would be wrong at every seam: give one profile frames_max >= "
        f"{context_frames + 1} (e.g. --profile dynamic:1-1x8-{need}-{need}), or pass --allow-short-profiles "
        "to accept inexact chunked audio"
    )


def _tightness(p: ShapeProfile, index: int) -> tuple[int, int, int, int, int]:
    """Sort key of the one profile-selection rule: smaller = tighter (see profile_for_shape)."""
    return (p.frames_max, p.batch_max, p.frames_max - p.frames_min, p.batch_max - p.batch_min, index)


def profile_for_shape(profiles: Sequence[ShapeProfile], batch: int | None, frames: int) -> int | None:
    """Index of the tightest profile containing (batch, frames), or None if none does.

    The one profile-selection rule (the TensorRT runner picks its optimization profile with it,
    ``VocoderEngine`` groups a batch by it with ``batch=None``, which ignores the batch axis).
    Tightest = smallest frames_max, then smallest batch_max, then narrowest ranges, then the
    lowest index. A profile with a smaller max was tuned (opt) for shorter inputs and reserves
    less activation memory, so at a boundary shared by two profiles (128 frames is the short
    profile's max and the medium one's min) the shorter profile serves it.
    """
    best: tuple[tuple[int, int, int, int, int], int] | None = None
    for index, p in enumerate(profiles):
        if not (p.frames_min <= frames <= p.frames_max) or (batch is not None and not p.contains(batch, frames)):
            continue
        key = _tightness(p, index)
        if best is None or key < best[0]:
            best = (key, index)
    return None if best is None else best[1]


def profiles_to_list(profiles: Sequence[ShapeProfile]) -> list[dict[str, Any]]:
    """JSON-ready form for manifests."""
    return [p.to_dict() for p in profiles]


def profiles_from_list(items: Iterable[Mapping[str, Any]]) -> tuple[ShapeProfile, ...]:
    return tuple(ShapeProfile.from_dict(item) for item in items)


def describe_profiles(profiles: Sequence[ShapeProfile]) -> str:
    """One line listing the ranges, for error messages (``short: b1-8 f8-128; ...``)."""
    return "; ".join(
        f"{p.name}: batch {p.batch_min}-{p.batch_max}, frames {p.frames_min}-{p.frames_max}" for p in profiles
    )
