"""Cross-request micro-batching of mel windows for one voice (sherpa-onnx's asyncio pattern).

Handlers ``submit`` a mel window and await the future they get back. One scheduler task per
voice waits for a window and a free engine call that may run it, then for the oldest waiting
window to have waited ``max_wait_ms`` (or for a full batch), takes a batch and runs it on a
bounded ``ThreadPoolExecutor``, off the event loop.

Engine calls in flight: ``workers`` calls that run any window, plus ``lane_workers`` calls
(the first-audio lane) that run only urgent windows, the first windows of streams. Why a
lane: on a CPU one window per call runs for as long as its frames take (a long one for
seconds), and a new stream's first window could otherwise only start when a worker is done;
on the lane it starts at once, beside the running calls (the OS shares the cores), so time to
first audio stays about one small first window under load. The lane only holds cores while
first windows wait, which is little work when they are small (see ``voices``).

Batch forming, in order:

* the head always goes in, so nothing starves. On the lane it is the oldest urgent window.
  On a worker it is the oldest window when the voice has a lane (workers keep arrival order;
  first windows get ahead on the lane), else the oldest urgent window (a GPU voice: urgent
  windows lead the next batch). Urgent windows are first chunks of streams; getting them
  ahead is what keeps time to first audio flat under load (a new stream's first chunk does
  not wait behind every other stream's tail);
* then waiting windows in arrival order join while the batch stays within ``max_batch``,
  ``frame_budget`` padded frames and ``max_padding`` x its real frames (padding is compute
  thrown away on a CPU); a window that does not fit stays queued for the next batch; a batch
  on the lane takes only urgent windows;
* windows whose future was cancelled (client gone, timeout) are dropped unrun.

``max_batch`` comes from the voice: 8 on a GPU, 1 on a CPU unless configured (see
``config``): on a CPU a batch buys no throughput and makes an urgent window wait longer.

The engine call (``VocoderEngine.batch``) does the exact mixed-length work: grouping by
profile, padding with the mel's silence value and trimming each item to ``frames * hop``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
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


def _lower_priority(nice: int) -> None:
    """Engine worker thread initializer: raise this thread's nice value by ``nice`` (Linux: per
    thread), so the OS gives the cores to first-audio lane calls first when both want them."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
        log.warning("cannot lower the engine workers' priority (nice %d): %s", nice, exc)


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
                 max_batch: int | None = None, workers: int | None = None, lane_workers: int = 0) -> None:
        """``max_batch``: windows per call (default: ``options``' own, else a CPU's 1).

        ``workers``: engine calls in flight for any window (default: ``options.workers``, else
        1); ``lane_workers``: more calls in flight that run only urgent windows (the
        first-audio lane; see ``config.ServeOptions``).
        """
        self.voice = voice
        self.max_batch = max_batch if max_batch is not None else batch_for_device(options, on_accelerator=False)
        self.run_batch = run_batch
        self.options = options
        self.metrics = metrics
        self.workers = workers if workers is not None else (options.workers or 1)
        self.lane_workers = lane_workers
        self._free_workers = self.workers
        self._free_lane = lane_workers
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._changed = asyncio.Event()  # a window arrived or an engine call ended
        nice = options.worker_nice if lane_workers else 0  # only a lane needs the workers to yield
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"engine-{voice}",
                                            initializer=_lower_priority if nice else None,
                                            initargs=(nice,) if nice else ())
        self._lane_executor = ThreadPoolExecutor(max_workers=max(1, lane_workers),
                                                 thread_name_prefix=f"first-audio-{voice}")
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
        self._lane_executor.shutdown(wait=True)

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, mel: np.ndarray, urgent: bool = False) -> asyncio.Future:
        """Queue a validated float32 window [channels, frames]; the future gets its samples."""
        loop = asyncio.get_running_loop()
        job = _Job(mel, loop.create_future(), loop.time(), urgent)
        (self._urgent if urgent else self._normal).append(job)
        self._set_depth()
        self._changed.set()
        return job.future

    @property
    def depth(self) -> int:
        return len(self._urgent) + len(self._normal)

    # -- scheduling ----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.options.max_wait_ms / 1000.0
        while True:
            lane, head = await self._reserve_slot()
            try:
                deadline = head.enqueued + max_wait
                while self._eligible(lane) < self.max_batch:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch = self._take_batch(lane)
            except BaseException:
                self._release(lane)
                raise
            if not batch:
                self._release(lane)
                continue
            task = loop.create_task(self._run(batch, lane))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _reserve_slot(self) -> tuple[bool, _Job]:
        """Wait for a window and a free engine call that may run it; (on the lane?, head window).

        The lane takes the oldest urgent window. A worker takes the oldest window of all when
        there is a lane (the lane is how first windows get ahead, so the workers keep arrival
        order and no answer's tail starves however many streams start), else the oldest urgent
        window first (no lane: a GPU's batched calls, where urgent windows lead the next batch).
        """
        while True:
            self._drop_cancelled()
            if self._urgent and self._free_lane:
                self._free_lane -= 1
                return True, self._urgent[0]
            if self.depth and self._free_workers:
                self._free_workers -= 1
                return False, self._worker_order()[0]
            self._changed.clear()
            await self._changed.wait()

    def _worker_order(self) -> list[_Job]:
        """Waiting windows in the order a worker takes them (see ``_reserve_slot``)."""
        if self.lane_workers:
            return sorted((*self._urgent, *self._normal), key=lambda job: job.enqueued)
        return [*self._urgent, *self._normal]

    def _release(self, lane: bool) -> None:
        if lane:
            self._free_lane += 1
        else:
            self._free_workers += 1
        self._changed.set()

    def _eligible(self, lane: bool) -> int:
        """Windows a batch on this slot may take (the lane runs urgent windows only)."""
        return len(self._urgent) if lane else self.depth

    def _drop_cancelled(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue and queue[0].future.done():
                queue.popleft()
        self._set_depth()

    def _take_batch(self, lane: bool = False) -> list[_Job]:
        opts = self.options
        waiting = [j for j in (self._urgent if lane else self._worker_order()) if not j.future.done()]
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

    async def _run(self, batch: list[_Job], lane: bool = False) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for job in batch:
            self.metrics.queue_wait.labels(self.voice).observe(started - job.enqueued)
        self.metrics.batch_size.labels(self.voice).observe(len(batch))
        try:
            executor = self._lane_executor if lane else self._executor
            wavs, seconds = await loop.run_in_executor(executor, self._timed_call, [j.mel for j in batch])
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
            self._release(lane)

    def _timed_call(self, mels: list[np.ndarray]) -> tuple[Sequence[np.ndarray], float]:
        start = time.perf_counter()
        wavs = self.run_batch(mels)
        return wavs, time.perf_counter() - start

    def _set_depth(self) -> None:
        self.metrics.queue_depth.labels(self.voice).set(self.depth)
