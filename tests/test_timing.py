"""The one timing loop (``hifitrt.timing``): what it calls, in which order, and what it returns."""
from __future__ import annotations

from hifitrt.timing import interleaved_times, time_calls


def test_time_calls_warms_up_untimed_then_times_each_call() -> None:
    calls: list[int] = []
    times = time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_interleaved_rounds_alternate_the_entries() -> None:
    order: list[str] = []
    rounds: list[int] = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=2, runs=2,
                              on_round=rounds.append)
    assert order == ["a", "a", "b", "b", "a", "a", "b", "b"]  # A and B share each round's conditions
    assert rounds == [1, 2] and {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
