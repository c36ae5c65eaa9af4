"""The service's error answer: ``{"error": {"type": ..., "message": ...}}`` with a 4xx/5xx.

Every failure a client can see is raised as an :class:`ApiError` (or turned into one by the
app's handlers), so the body is always one readable line and never a traceback.
"""
from __future__ import annotations

from typing import Mapping


class ApiError(Exception):
    """An HTTP error answer: status, machine-readable ``kind`` and a one-line message."""

    def __init__(self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = one_line(message)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"type": self.kind, "message": self.message}}


def one_line(text: str) -> str:
    """Collapse whitespace so a message never spans lines."""
    return " ".join(str(text).split()) or "error"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
