"""How big and how deep an MCP message over HTTP may be, checked before anything parses it.

In: the raw body of a POST to the MCP endpoint (``/mcp``, or SSE's ``/messages/``). Out: the
request passed on unchanged, or refused:

- **413** when the body is over :data:`MAX_BODY_BYTES`. The bound is ours: the SDK's default
  (4 MiB, ``mcp.server.transport_security.DEFAULT_MAX_REQUEST_BODY_SIZE``) is smaller than one
  10 MB image sent as a base64 ``data:`` URI, the only way a remote caller without
  ``KLING_MCP_IMAGE_DIRS`` can send a local picture; :data:`MAX_BODY_BYTES` fits two (``image``
  and ``end_image``) and the rest of the call. The SDK is given the same bound.
- **400** with a JSON-RPC parse error when the JSON nests deeper than :data:`MAX_JSON_DEPTH`:
  Python's ``json`` parser recurses once per level and a few thousand ``[`` exhaust the stack
  (a ``RecursionError``, answered 500). No MCP message comes near the bound.

:class:`MessageLimits` is the ASGI middleware; :func:`read_body` and :func:`nested_deeper_than`
are shared with :class:`~kling_video_mcp.surface.auth.AccessGuard`, which reads the body before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_video_mcp.tasks.images import MAX_BYTES as MAX_IMAGE_BYTES


def base64_length(size: int) -> int:
    """Characters of ``size`` bytes in base64 (padded, RFC 4648 §4)."""
    return -(-size // 3) * 4


MAX_BODY_BYTES = 2 * base64_length(MAX_IMAGE_BYTES) + 1024 * 1024
"""Largest MCP message body: two 10 MB images as base64 ``data:`` URIs (about 14 MB each) plus
1 MiB for the rest of the call (about 27.7 MiB in all)."""
MAX_JSON_DEPTH = 64
"""Deepest JSON nesting accepted; a tool call's arguments are five levels down."""

_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
"""A whole JSON string (skipped: brackets inside it do not nest), or one bracket."""
_OPENERS = frozenset(b"[{")


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` opens more than ``limit`` arrays or objects inside one
    another, found by scanning (never by parsing). Stops at the first level over ``limit``;
    a body with ``limit`` or fewer brackets is not scanned at all."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for token in _TOKENS.finditer(body):
        first = token.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first != ord('"'):
            depth -= 1
    return False


async def read_body(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """Read a request's body until it ends, the client leaves, or it passes ``limit`` bytes (the
    rest is left unread). Returns what was read, and a ``receive`` for the app behind: it hands
    that on as one message first, then reads on."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app's next receive() says so
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return body, replay


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


TOO_LARGE = (
    "The request body is {size}; this server takes at most {limit} per MCP message (room for two "
    "10 MB images as base64 data: URIs). Send larger images as https:// URLs, or as files in a "
    "folder of KLING_MCP_IMAGE_DIRS."
)


class MessageLimits:
    """ASGI middleware: POSTs to ``paths`` over :data:`MAX_BODY_BYTES` get 413, JSON nested
    deeper than :data:`MAX_JSON_DEPTH` gets 400; the body is read once and replayed."""

    def __init__(self, app: ASGIApp, paths: Iterable[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await self._too_large(int(declared), scope, receive, send)
            return
        body, replay = await read_body(receive, MAX_BODY_BYTES)
        if len(body) > MAX_BODY_BYTES:
            await self._too_large(len(body), scope, receive, send, at_least=True)
            return
        if nested_deeper_than(body, MAX_JSON_DEPTH):
            error = {"code": -32700, "message": f"Parse error: JSON nested deeper than {MAX_JSON_DEPTH} levels."}
            await JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, 400)(scope, receive, send)
            return
        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(size: int, scope: Scope, receive: Receive, send: Send, *, at_least: bool = False) -> None:
        said = ("over " if at_least else "") + _megabytes(size)
        text = TOO_LARGE.format(size=said, limit=_megabytes(MAX_BODY_BYTES))
        await PlainTextResponse(text, status_code=413)(scope, receive, send)
