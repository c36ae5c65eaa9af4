"""Wall-clock timing of repeated calls: the one timing loop that bench, the CPU runtime
comparison and ``--backend auto``'s backend choice share.

Why interleaved rounds: on a shared machine the available CPU drifts by tens of percent within
minutes; timing A's runs and then B's would credit one of them with the quiet minute.
Alternating A, B, A, B... exposes both to the same drift, so their ratio is what it measures.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Hashable, Mapping, TypeVar

Key = TypeVar("Key", bound=Hashable)


def time_calls(call: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``call``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def interleaved_times(calls: Mapping[Key, Callable[[], Any]], rounds: int, runs: int = 1,
                      on_round: Callable[[int], None] | None = None) -> dict[Key, list[float]]:
    """Seconds of every call of each entry of ``calls``: ``rounds`` rounds, each timing ``runs``
    calls of every entry in turn (see the module docstring). ``on_round(r)`` is told each round
    (1-based) before it starts, for progress lines."""
    times: dict[Key, list[float]] = {key: [] for key in calls}
    for r in range(rounds):
        if on_round is not None:
            on_round(r + 1)
        for key, call in calls.items():
            times[key].extend(time_calls(call, runs))
    return times
