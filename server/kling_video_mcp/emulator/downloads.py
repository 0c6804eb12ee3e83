"""Serving result media the way a presigned object-store URL does (providers.md §1.4, §6.0).

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

from starlette.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

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


def serve_file(path: Path, media_type: str, keep_fraction: float | None = None) -> Response:
    """``path`` as a download; with ``keep_fraction`` the body is cut off after that share of it."""
    if keep_fraction is None:
        return FileResponse(path, media_type=media_type)
    return CutOffFileResponse(path, keep_fraction, media_type=media_type)


class CutOffFileResponse(FileResponse):
    """Announces the honest ``Content-Length`` but sends only a prefix, then drops the connection.

    The connection drops because the ASGI app returns without finishing the
    response, which makes the server close the transport: exactly what a
    client sees when a download is cut off mid-way.
    """

    def __init__(self, path: Path, keep_fraction: float, media_type: str) -> None:
        super().__init__(path, media_type=media_type)
        self.keep_fraction = keep_fraction

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        budget = 0
        finished = False

        async def cutting_send(message: Message) -> None:
            nonlocal budget, finished
            if message["type"] == "http.response.start":
                length = int(dict(message["headers"]).get(b"content-length", b"0"))
                budget = int(length * self.keep_fraction)
                await send(message)
            elif message["type"] == "http.response.body" and not finished:
                chunk = message.get("body", b"")[:budget]
                budget -= len(chunk)
                finished = budget <= 0 or not message.get("more_body", False)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await super().__call__(scope, receive, cutting_send)
