"""Running the app under uvicorn with a draining shutdown.

Why a subclass: on SIGTERM/SIGINT uvicorn stops accepting connections and waits for the
requests in flight, but a client on a kept-alive connection could still start new work. The
server marks the app as draining first, so such requests get a one-line 503 while every
accepted request completes; then uvicorn's own graceful shutdown runs (and the app's lifespan
stops the batchers).
"""
from __future__ import annotations

import logging
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that flags ``app.state.draining`` on the first exit signal."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.served_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.served_app.state.draining:
            log.info("signal %d: draining (finishing accepted requests, refusing new ones)", sig)
        self.served_app.state.draining = True
        super().handle_exit(sig, frame)


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               graceful_timeout_s: float | None = None) -> None:
    """Serve ``app`` until a signal; accepted requests finish before the process exits."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=graceful_timeout_s)
    DrainingServer(config, app).run()
