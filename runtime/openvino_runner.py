"""``OpenVinoRunner``: an OpenVINO engine directory behind the one :class:`~hifitrt.runner.Runner`
interface.

The engine's parts are compiled for this CPU when the runner is created (OpenVINO IR is
portable; compiled blobs are not). Thread-safe: calls share a bounded pool of infer requests,
one set per stream (:class:`~hifitrt.engines.openvino_engine.CompiledChain`), so concurrent
callers queue for the CPU instead of oversubscribing it. Intra-op threads default to the cores
this process may use (``os.sched_getaffinity``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..engines.profiles import ShapeProfile
from ..errors import EngineError
from ..runner import Runner

__all__ = ["OpenVinoRunner"]


class OpenVinoRunner(Runner):
    """Runs ``openvino/engine.json``'s chain of parts; any shape (OpenVINO models are dynamic)."""

    name = "openvino"

    def __init__(self, engine_dir: str | os.PathLike[str], profiles: Sequence[ShapeProfile] = (), *,
                 hop: int | None = None, threads: int | None = None, streams: int | None = None) -> None:
        super().__init__()
        from ..engines.openvino_engine import load_chain, read_openvino_config, usable_cores

        self.engine_dir = Path(engine_dir)
        self.config = read_openvino_config(self.engine_dir)
        self.threads = int(threads or self.config.threads or usable_cores())
        self.chain = load_chain(self.engine_dir, self.config, threads=self.threads, streams=streams)
        self.streams = self.chain.streams
        self.profiles = tuple(profiles)
        self.hop = hop
        channels = self.chain.compiled[0].input(0).get_partial_shape()[1]
        self.in_channels = channels.get_length() if channels.is_static else None
        self.precision = self.config.precision
        self.name = f"openvino-{self.precision}"

    def _infer(self, mel: np.ndarray) -> np.ndarray:
        if self.chain is None:
            raise EngineError("this OpenVINO runner is closed; load the engine again")
        return self.chain.infer(mel)

    def runtime_precisions(self) -> dict[str, dict[str, dict[str, int]]]:
        """{part: {op type: {precision: count}}} as the CPU plugin compiled it."""
        return self.chain.runtime_precisions()

    def close(self) -> None:
        self.chain = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"OpenVinoRunner({self.engine_dir}, {self.precision}, {len(self.config.parts)} part(s), "
                f"{self.threads} threads, {self.streams} stream(s))")
