"""Cross-request micro-batching of mel windows for one voice (sherpa-onnx's asyncio pattern).

Handlers ``submit`` a mel window and await the future they get back. One scheduler task per
voice waits for a free engine worker, then for the oldest waiting window to have waited
``max_wait_ms`` (or for a full batch), takes a batch and runs it on a bounded
``ThreadPoolExecutor`` (``workers`` threads = engine calls in flight), off the event loop.

Batch forming, in order:

* the head (the oldest urgent window, else the oldest window) always goes in, so nothing
  starves; urgent windows are first chunks of streams, which is what keeps time to first
  audio flat under load (a stream's later chunks wait behind it, a new stream's first chunk
  does not wait behind every other stream's tail);
* then waiting windows in arrival order join while the batch stays within ``max_batch``,
  ``frame_budget`` padded frames and ``max_padding`` x its real frames (padding is compute
  thrown away on a CPU); a window that does not fit stays queued for the next batch;
* windows whose future was cancelled (client gone, timeout) are dropped unrun.

``max_batch`` comes from the voice: 8 on a GPU, 1 on a CPU unless configured (see
``voices``): on a CPU a batch buys no throughput and makes an urgent window wait longer.

The engine call (``VocoderEngine.batch``) does the exact mixed-length work: grouping by
profile, padding with the mel's silence value and trimming each item to ``frames * hop``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import ServeOptions, batch_for_device
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

BatchFn = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


class BatcherStopped(RuntimeError):
    """The service is shutting down; the window was never run."""


@dataclass(eq=False)
class _Job:
    mel: np.ndarray  # [channels, frames]
    future: asyncio.Future = field(repr=False)
    enqueued: float
    urgent: bool

    @property
    def frames(self) -> int:
        return int(self.mel.shape[1])


class MicroBatcher:
    """Coalesces concurrent windows of one voice into ``run_batch`` calls."""

    def __init__(self, voice: str, run_batch: BatchFn, options: ServeOptions, metrics: ServiceMetrics,
                 max_batch: int | None = None) -> None:
        """``max_batch``: windows per call (default: ``options``' own, else a CPU's 1)."""
        self.voice = voice
        self.max_batch = max_batch if max_batch is not None else batch_for_device(options, on_accelerator=False)
        self.run_batch = run_batch
        self.options = options
        self.metrics = metrics
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(options.workers)
        self._executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix=f"engine-{voice}")
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name=f"batcher-{self.voice}")

    async def stop(self) -> None:
        """Finish running batches, fail waiting windows, release the workers."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for job in (*self._urgent, *self._normal):
            if not job.future.done():
                job.future.set_exception(BatcherStopped("the service is shutting down"))
        self._urgent.clear()
        self._normal.clear()
        self._set_depth()
        self._executor.shutdown(wait=True)

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, mel: np.ndarray, urgent: bool = False) -> asyncio.Future:
        """Queue a validated float32 window [channels, frames]; the future gets its samples."""
        loop = asyncio.get_running_loop()
        job = _Job(mel, loop.create_future(), loop.time(), urgent)
        (self._urgent if urgent else self._normal).append(job)
        self._set_depth()
        self._arrived.set()
        return job.future

    @property
    def depth(self) -> int:
        return len(self._urgent) + len(self._normal)

    # -- scheduling ----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.options.max_wait_ms / 1000.0
        while True:
            await self._slots.acquire()
            try:
                head = await self._wait_for_head()
                deadline = head.enqueued + max_wait
                while self.depth < self.max_batch:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch = self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_head(self) -> _Job:
        while True:
            self._drop_cancelled()
            if self._urgent:
                return self._urgent[0]
            if self._normal:
                return self._normal[0]
            self._arrived.clear()
            await self._arrived.wait()

    def _drop_cancelled(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue and queue[0].future.done():
                queue.popleft()
        self._set_depth()

    def _take_batch(self) -> list[_Job]:
        opts = self.options
        waiting = [j for j in (*self._urgent, *self._normal) if not j.future.done()]
        batch: list[_Job] = []
        longest = real = 0
        for job in waiting:
            n, top = len(batch) + 1, max(longest, job.frames)
            if batch and (n > self.max_batch or n * top > opts.frame_budget
                          or n * top > opts.max_padding * (real + job.frames)):
                continue
            batch.append(job)
            longest, real = top, real + job.frames
            if len(batch) == self.max_batch:
                break
        taken = set(map(id, batch))
        self._urgent = deque(j for j in self._urgent if id(j) not in taken and not j.future.done())
        self._normal = deque(j for j in self._normal if id(j) not in taken and not j.future.done())
        self._set_depth()
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for job in batch:
            self.metrics.queue_wait.labels(self.voice).observe(started - job.enqueued)
        self.metrics.batch_size.labels(self.voice).observe(len(batch))
        try:
            wavs, seconds = await loop.run_in_executor(self._executor, self._timed_call, [j.mel for j in batch])
        except Exception as exc:  # the engine failed: every window of the batch gets the error
            log.error("engine call for voice %s failed: %s", self.voice, exc)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        else:
            self.metrics.engine_seconds.labels(self.voice).observe(seconds)
            for job, wav in zip(batch, wavs):
                if not job.future.done():
                    job.future.set_result(wav)
        finally:
            self._slots.release()

    def _timed_call(self, mels: list[np.ndarray]) -> tuple[Sequence[np.ndarray], float]:
        start = time.perf_counter()
        wavs = self.run_batch(mels)
        return wavs, time.perf_counter() - start

    def _set_depth(self) -> None:
        self.metrics.queue_depth.labels(self.voice).set(self.depth)
