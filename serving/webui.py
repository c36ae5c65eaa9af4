"""The service's web page: ``GET /`` (one self-contained page), its static files, and each
voice's parity report, read-only.

Why a router of its own: the page is optional furniture beside the API, so it lives apart from
the endpoints that do the work and adds nothing to them. The page talks only to the public
API (``/v1/voices``, ``/v1/audio/speech``, ``/v1/vocode``, ``/metrics``), exactly as any
client would; it needs no server-side state.

Use::

    from hifitrt.serving.webui import webui_router
    app.include_router(webui_router({"voice_a": Path("engines/voice_a")}))

``engine_dirs`` maps a configured voice name to its engine directory, as a mapping or as a
lookup function (``name -> Path | None``, ``None`` for an unknown voice). The report route
serves ``<engine dir>/report/report.html`` and nothing else: a request names a voice, never a
path, so no other file of the server can be reached (404 for an unknown voice or a missing
report). Static files are the three shipped files only, read once from the package. Errors
are raised as the service's ``ApiError`` (a one-line JSON 404), which the including app answers
and counts like any other error (``create_app`` installs that handler).

Auth: the page and its static files carry no data and must load in a plain browser tab, so
they are public even with ``--api-key``; the page asks for the key when the API answers 401
and keeps it in memory only. The report is engine data: pass the service's own auth check as
``report_dependencies`` (FastAPI dependencies, e.g. ``[Depends(require_api_key)]``) so it is
guarded like every other route. The page fetches it with the key when one is set.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Sequence

from fastapi import APIRouter, params
from fastapi.responses import Response

from ..errors import HifitrtError
from . import errors

# The files the page is made of, with their media types. Nothing else is served from static/.
STATIC_FILES: Mapping[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}

# The page loads only its own files and talks only to its own origin; audio is played from
# memory (Web Audio) and downloaded as a blob: URL (which fetch may read back). Inline styles
# and data: images are allowed for one reason: with --api-key the page opens a voice's report
# from a blob: URL, and that document inherits this policy.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' blob:; "
            "img-src 'self' data:; media-src 'self' blob:; form-action 'none'; "
            "frame-ancestors 'none'; base-uri 'none'")
# A parity report is self-contained HTML with inline CSS and base64 PNGs, and no scripts.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"

EngineDirs = Callable[[str], "Path | None"] | Mapping[str, Path]


def webui_router(
    engine_dirs: EngineDirs,
    *,
    report_dependencies: Sequence[params.Depends] = (),
) -> APIRouter:
    """Routes ``GET /``, ``GET /static/{file}`` and ``GET|HEAD /v1/voices/{name}/report``.

    ``engine_dirs``: voice name -> engine directory (mapping or lookup function).
    ``report_dependencies``: FastAPI dependencies run before the report route (the API-key
    check). The page and static files stay public.
    """
    lookup = _as_lookup(engine_dirs)
    files = {name: _read_static(name) for name in STATIC_FILES}
    router = APIRouter()

    def static_response(name: str) -> Response:
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name == "index.html":
            headers["Content-Security-Policy"] = PAGE_CSP
            headers["Referrer-Policy"] = "no-referrer"
        return Response(files[name], media_type=STATIC_FILES[name], headers=headers)

    @router.get("/", include_in_schema=False)
    def page() -> Response:
        return static_response("index.html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:
            raise errors.not_found(f"no static file {name!r}: the page is made of {', '.join(files)}")
        return static_response(name)

    @router.api_route("/v1/voices/{name}/report", methods=["GET", "HEAD"],
                      dependencies=list(report_dependencies), include_in_schema=False)
    def report(name: str) -> Response:
        engine_dir = lookup(name)
        if engine_dir is None:
            raise errors.not_found(f"no parity report for {name!r}: not a voice served from an engine "
                                   f"directory (see GET /v1/voices)")
        path = Path(engine_dir) / "report" / "report.html"
        try:
            body = path.read_bytes()
        except OSError:
            raise errors.not_found(f"voice {name!r} has no parity report (its engine was built without one; "
                                   f"run `tts-build-engine check` on it)") from None
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})

    return router


def _as_lookup(engine_dirs: EngineDirs) -> Callable[[str], Path | None]:
    if callable(engine_dirs):
        return engine_dirs
    table = {str(name): Path(path) for name, path in engine_dirs.items()}
    return table.get


def _read_static(name: str) -> bytes:
    try:
        return resources.files("hifitrt.serving").joinpath("static", name).read_bytes()
    except OSError as exc:
        raise HifitrtError(f"the web page file serving/static/{name} is missing from this hifitrt install "
                           f"({exc.strerror}); reinstall hifitrt") from exc
