"""The HTTP plumbing of the service, apart from its routes: body limits, API-key check,
error answers, request metrics and draining, waiting on batched work.

Why a module of its own: ``app`` then reads as the list of endpoints and what each does;
everything every endpoint shares (and that FastAPI/Starlette make subtle: streamed answers
that must release their queue place however they end, disconnects while waiting) is here.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import HifitrtError
from .errors import ApiError, bad_request, one_line, too_large
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(f"body is {int(declared)} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ClosingStream(StreamingResponse):
    """A streamed answer that runs ``on_close`` however it ends (sent, failed, never started),
    so a stream whose client vanished before the first byte still frees its queue place."""

    def __init__(self, content: Any, *, on_close: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def wait_for_results(request: Request, futures: list[asyncio.Future], timeout: float) -> list[np.ndarray]:
    """Results of ``futures``; 504 after ``timeout``; stops early if the client disconnects."""
    gathered = asyncio.gather(*futures)
    disconnect = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({gathered, disconnect}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
    if gathered in done:
        return gathered.result()
    gathered.cancel()
    if disconnect in done:
        raise ClientGone()
    raise ApiError(504, "timeout", f"not vocoded within {timeout:g} s (--timeout-s); the service is overloaded")


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (after the body, the server's next message is that)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def cancel_all(futures: list[asyncio.Future]) -> None:
    """Cancel the windows of an answer that ended (done ones are unaffected); queued ones are dropped."""
    for future in futures:
        future.cancel()


def api_key_dependency(api_key: str | None) -> Any:
    """FastAPI dependency: 401 unless ``Authorization: Bearer KEY`` (constant-time compare)."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    async def require_api_key(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "missing or wrong API key: send 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})

    return require_api_key


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    def answer(error: ApiError) -> JSONResponse:
        metrics.errors.labels(error.kind).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        metrics.errors.labels("client_gone").inc()
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return answer(bad_request(f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return answer(ApiError(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None)))

    @app.exception_handler(HifitrtError)
    async def hifitrt_error(request: Request, exc: HifitrtError) -> JSONResponse:
        return answer(bad_request(str(exc)))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return answer(ApiError(500, "internal", f"internal error ({type(exc).__name__}: {one_line(str(exc))[:200]})"))


class ServiceMiddleware:
    """Counts requests (in flight, by endpoint and status) and refuses new ones while draining."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        state = scope["app"].state if "app" in scope else None
        if state is not None and getattr(state, "draining", False) and path != "/healthz":
            error = ApiError(503, "draining", "the service is shutting down; retry on another instance",
                             {"Retry-After": "1", "Connection": "close"})
            self.metrics.errors.labels("draining").inc()
            self.metrics.requests.labels(endpoint, "503").inc()
            await JSONResponse(error.body(), status_code=503, headers=error.headers)(scope, receive, send)
            return
        status = {"code": 500}

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()


ENDPOINTS = {"/v1/vocode", "/v1/audio/speech", "/v1/voices", "/healthz", "/readyz", "/metrics", "/"}
