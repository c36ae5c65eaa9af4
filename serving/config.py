"""``ServeOptions``: every knob of the HTTP service in one frozen dataclass.

The CLI turns flags into one of these; ``create_app`` and the batcher read it. Defaults follow
sherpa-onnx's asyncio servers (a few ms of batching wait, a bounded queue) and Triton's queue
policy (reject at once when full, a per-request timeout).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import HifitrtError


@dataclass(frozen=True)
class ServeOptions:
    """How the service batches, limits and protects itself.

    ``max_batch``: mel windows per engine call; None picks by device (``batch_for_device``): 8
    on a GPU, where one call of several windows keeps the accelerator busy, 1 on a CPU, where
    the engine is compute-bound (a batch costs what its windows cost one after another, plus
    padding) and a long running batch only makes a new stream's first window wait.
    ``max_wait_ms``: how long the oldest waiting
    window may wait for company before its batch runs. ``frame_budget``: padded frames per
    engine call (batch size x longest window). ``max_padding``: a window joins a batch only if
    the batch's padded frames stay within this factor of its real frames (padding is wasted
    compute on a CPU; on a GPU raise it). ``max_queue``: requests per voice admitted and not
    yet answered; one more gets 503 at once. ``workers``: engine calls in flight per voice
    (execution contexts), not one per thread. ``first_chunk_frames``: the first window of a
    mel, so streamed audio starts early (see ``voices.chunk_plan``); 0 vocodes every mel as one
    window (no context overhead, but a stream's first audio comes when all of it is done).
    ``split_overhead``: a mel gets that separate first window only when the receptive-field
    context the split adds (left + right context frames) is at most this fraction of the mel;
    shorter mels are one window, which costs least and is quick anyway.
    """

    max_batch: int | None = None
    max_wait_ms: float = 5.0
    frame_budget: int = 8192
    max_padding: float = 1.25
    max_queue: int = 64
    workers: int = 1
    timeout_s: float = 30.0
    max_frames: int = 8192
    max_body_bytes: int = 16 << 20
    max_text_chars: int = 4096
    first_chunk_frames: int = 32
    split_overhead: float = 0.1
    api_key: str | None = None
    cache_bytes: int = 0
    speech_workers: int = 4
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        positive = {"max_batch": 1 if self.max_batch is None else self.max_batch,
                    "max_queue": self.max_queue, "workers": self.workers,
                    "max_frames": self.max_frames, "max_body_bytes": self.max_body_bytes,
                    "frame_budget": self.frame_budget,
                    "speech_workers": self.speech_workers, "max_text_chars": self.max_text_chars}
        for name, value in positive.items():
            if value < 1:
                raise HifitrtError(f"{name} must be >= 1, got {value}")
        if self.first_chunk_frames < 0:
            raise HifitrtError(f"first_chunk_frames must be >= 0 (0: no separate first window), got {self.first_chunk_frames}")
        if not 0 < self.split_overhead <= 1:
            raise HifitrtError(f"split_overhead must be in (0, 1], got {self.split_overhead}")
        if self.max_wait_ms < 0:
            raise HifitrtError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.timeout_s <= 0:
            raise HifitrtError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_padding < 1:
            raise HifitrtError(f"max_padding must be >= 1 (1 = never pad), got {self.max_padding}")
        if self.cache_bytes < 0:
            raise HifitrtError(f"cache size must be >= 0, got {self.cache_bytes}")
        if self.api_key is not None and not self.api_key.strip():
            raise HifitrtError("--api-key is empty; pass a non-empty key or leave it out")


GPU_MAX_BATCH = 8


def batch_for_device(options: ServeOptions, on_accelerator: bool) -> int:
    """The ``max_batch`` a voice uses: the configured one, else 8 on an accelerator, 1 on a CPU."""
    if options.max_batch is not None:
        return options.max_batch
    return GPU_MAX_BATCH if on_accelerator else 1
