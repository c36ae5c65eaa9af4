"""``ServeOptions``: every knob of the HTTP service in one frozen dataclass.

The CLI turns flags into one of these; ``create_app`` and the batcher read it. Defaults follow
sherpa-onnx's asyncio servers (a few ms of batching wait, a bounded queue) and Triton's queue
policy (reject at once when full, a per-request timeout).
"""
from __future__ import annotations

import os
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
    yet answered; one more gets 503 at once.

    ``workers``: engine calls in flight per voice (execution contexts), not one per thread;
    None picks by device (``workers_for_device``): 1 on an accelerator, one per CPU core on a
    CPU. ``engine_threads``: intra-op threads of one engine call on a CPU backend; None gives
    each worker an equal share of the cores (``threads_for_device``: 1 with the default one
    worker per core). Why one single-threaded call per core on a CPU: a multi-threaded call
    synchronises its threads at every layer (ONNX Runtime's pool spin-waits), which costs
    little on idle cores but much when they are busy with other work, including this
    service's own first-audio lane; single-threaded calls side by side never wait for each
    other. Measured on this project's 2-core machine (16 real-speech requests): idle, 2.64
    requests/s as 2 single-threaded calls at a time vs 2.84 as one two-threaded call at a
    time (7 % less); shared with other jobs, 1.10 vs 0.81 and 1.12 vs 0.75 (36-49 % more).
    A dedicated machine that serves few streams may prefer ``workers=1`` (all cores per call,
    lowest latency per request). ``first_window_workers``: engine calls in flight that only
    run streams' first windows (a first-audio lane); None picks by device: one per core on a
    CPU, 0 on an accelerator (where first windows share batched calls instead). On a CPU the
    lane's calls run beside the ``workers``' calls (the OS shares the cores), so a new stream's
    first audio does not wait for a long window already running, nor for another stream's first
    window; the lane takes cores only while first windows wait, which is little work when first
    windows are small. Measured on 2 shared cores, 16 clients in a closed loop against 1 (median
    first audio, ``scripts/load_test.py``): one lane call 1.22 vs 0.58 s (2.1x), two 0.72 vs
    0.41 s (1.8x); with the defaults 0.49 vs 0.28 s (1.7x) at a load average of 5, but 1.25 vs
    0.42 s (3.0x) at 8-11, when each of the service's threads gets less of a core.

    ``worker_nice``: when the voice has a lane, raise the ``workers``' threads' nice value by
    this much (Linux), so that when lane and worker calls want the same cores the OS runs the
    lane's first windows first. Without it each thread gets an equal share: measured with 16
    clients, a first window took 0.97 s against 0.47 s with one client, while it waited only
    21 ms for the lane; with nice 5, median first audio was 1.6x one client's instead of
    2-3x. In a container (its own CPU cgroup) this only orders the service's own threads; on a
    machine shared with other work in the same cgroup it also gives the workers a smaller share
    than that work (measured: 0.97x the bare engine's throughput instead of 1.08x); 0 leaves
    the priorities alone.

    ``first_chunk_frames``: the first window of a mel, so streamed audio starts early (see
    ``voices.chunk_plan``); 0 vocodes every mel as one window (no context overhead, but a
    stream's first audio comes when all of it is done). The split costs the receptive-field
    context it adds: right context + min(first_chunk_frames, left context) frames (32 for
    HiFi-GAN's 16 + 16 and a first window of 16); ``split_overhead``: a mel gets the separate
    first window only when that is at most this fraction of the mel (0.25: mels of 128 frames
    and more); shorter mels are one window, which costs least and is quick anyway.
    """

    max_batch: int | None = None
    max_wait_ms: float = 5.0
    frame_budget: int = 8192
    max_padding: float = 1.25
    max_queue: int = 64
    workers: int | None = None
    engine_threads: int | None = None
    first_window_workers: int | None = None
    worker_nice: int = 5
    timeout_s: float = 30.0
    max_frames: int = 8192
    max_body_bytes: int = 16 << 20
    max_text_chars: int = 4096
    first_chunk_frames: int = 8
    split_overhead: float = 0.5
    api_key: str | None = None
    cache_bytes: int = 0
    speech_workers: int = 4
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        positive = {"max_batch": 1 if self.max_batch is None else self.max_batch,
                    "max_queue": self.max_queue, "workers": 1 if self.workers is None else self.workers,
                    "engine_threads": 1 if self.engine_threads is None else self.engine_threads,
                    "max_frames": self.max_frames, "max_body_bytes": self.max_body_bytes,
                    "frame_budget": self.frame_budget,
                    "speech_workers": self.speech_workers, "max_text_chars": self.max_text_chars}
        for name, value in positive.items():
            if value < 1:
                raise HifitrtError(f"{name} must be >= 1, got {value}")
        if self.first_window_workers is not None and self.first_window_workers < 0:
            raise HifitrtError(f"first_window_workers must be >= 0 (0: no first-audio lane), "
                               f"got {self.first_window_workers}")
        if not 0 <= self.worker_nice <= 19:
            raise HifitrtError(f"worker_nice must be 0-19 (0: the workers' priority is left alone), got {self.worker_nice}")
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


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def workers_for_device(options: ServeOptions, on_accelerator: bool) -> int:
    """Engine calls in flight per voice: the configured count, else 1 on an accelerator, one per CPU core."""
    if options.workers is not None:
        return options.workers
    return 1 if on_accelerator else cpu_cores()


def threads_for_device(options: ServeOptions, on_accelerator: bool) -> int | None:
    """Intra-op threads per engine call on a CPU backend; None leaves the backend's default."""
    if options.engine_threads is not None:
        return options.engine_threads
    if on_accelerator:
        return None
    return max(1, cpu_cores() // workers_for_device(options, on_accelerator))


def lane_for_device(options: ServeOptions, on_accelerator: bool) -> int:
    """First-window-only engine calls in flight: the configured count, else one per core on a
    CPU, 0 on an accelerator."""
    if options.first_window_workers is not None:
        return options.first_window_workers
    return 0 if on_accelerator else cpu_cores()
