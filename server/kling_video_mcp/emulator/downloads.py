"""Serving result media the way a presigned object-store URL does (docs/providers.md#emulator-result-media).

Files go out through Starlette's ``FileResponse``, which already implements
HEAD, ``Content-Length``, ``ETag``/``If-Range`` and single or multiple
``Range`` requests (206 + ``Content-Range``; 416 when unsatisfiable), because
clients resume cut-off downloads. Errors are S3-style XML bodies.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from xml.sax.saxutils import escape

from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.types import Message, Receive, Scope, Send

from .faults import Fault

S3_CODES = {403: "AccessDenied", 404: "NoSuchKey", 500: "InternalError", 503: "SlowDown"}


def s3_error(
    status: int, code: str | None = None, message: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An object-store error: ``<Error><Code/><Message/>…</Error>`` with ``status``."""
    code = code or S3_CODES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
    message = message or HTTPStatus(status).phrase
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return Response(body, status, headers=headers, media_type="application/xml")


def expired() -> Response:
    """What an expired presigned URL answers: 403 AccessDenied, "Request has expired"."""
    server_time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return s3_error(403, "AccessDenied", f"Request has expired (server time {server_time})")


def missing() -> Response:
    return s3_error(404, "NoSuchKey", "The specified key does not exist.")


def bad_gateway_page() -> Response:
    """A CDN's error page served with status 200, as fronting proxies sometimes do."""
    return HTMLResponse("<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>")


def redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=302)


def serve_file(path: Path, media_type: str, fault: Fault | None = None) -> Response:
    """``path`` as a download, as a body fault (``truncate``, ``truncated``, ``wrong_length``) says."""
    if fault is not None and fault.kind == "truncate":
        return CutOffFileResponse(path, fault.fraction, media_type=media_type)
    if fault is not None and fault.kind == "wrong_length":
        return CutOffFileResponse(path, 1.0, media_type=media_type, extra_declared=fault.extra)
    if fault is not None and fault.kind == "truncated":
        return ShortBodyResponse(path, fault.fraction, media_type)
    return FileResponse(path, media_type=media_type)


class ShortBodyResponse(Response):
    """The first ``fraction`` of a file, without ``Content-Length``, ending cleanly: a client has
    nothing but the content itself to tell that it is short."""

    def __init__(self, path: Path, fraction: float, media_type: str) -> None:
        data = path.read_bytes()
        super().__init__(data[: int(len(data) * fraction)], media_type=media_type)
        self.raw_headers = [(name, value) for name, value in self.raw_headers if name != b"content-length"]


class CutOffFileResponse(FileResponse):
    """Announces the honest ``Content-Length`` but sends only a prefix, then drops the connection.

    The connection drops because the ASGI app returns without finishing the
    response, which makes the server close the transport: exactly what a
    client sees when a download is cut off mid-way.
    """

    def __init__(self, path: Path, keep_fraction: float, media_type: str, extra_declared: int = 0) -> None:
        super().__init__(path, media_type=media_type)
        self.keep_fraction = keep_fraction
        self.extra_declared = extra_declared
        """Bytes declared in ``Content-Length`` beyond the honest length (a lying server)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        budget = 0
        finished = False

        async def cutting_send(message: Message) -> None:
            nonlocal budget, finished
            if message["type"] == "http.response.start":
                headers = dict(message["headers"])
                length = int(headers.get(b"content-length", b"0"))
                budget = int(length * self.keep_fraction)
                if self.extra_declared:
                    headers[b"content-length"] = str(length + self.extra_declared).encode()
                    message = {**message, "headers": list(headers.items())}
                await send(message)
            elif message["type"] == "http.response.body" and not finished:
                chunk = message.get("body", b"")[:budget]
                budget -= len(chunk)
                finished = budget <= 0 or not message.get("more_body", False)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await super().__call__(scope, receive, cutting_send)
