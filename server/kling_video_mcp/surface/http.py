"""Serve the MCP server over HTTP (streamable HTTP or the older SSE), safe to expose.

In: :class:`~kling_video_mcp.config.Settings` (the ``KLING_MCP_HTTP_TOKEN``,
``KLING_MCP_PUBLIC_URL``, ``KLING_MCP_IMAGE_DIRS``, ``KLING_MCP_ALLOWED_HOSTS`` and
``KLING_MCP_ALLOWED_ORIGINS`` block) and an :class:`HttpConfig` (transport, bind address,
port, stateless). Out: one Starlette app that serves

- the MCP endpoint (``/mcp``, or ``/sse`` + ``/messages/``), both protocol eras;
- ``GET /clips/{file}``: finished clips from the output folder, with HTTP ``Range``
  (RFC 9110 §14: seeking and resumed downloads);
- ``GET /previews/{task_id}.mp4``: the clips' small preview proxies (the screening room plays them);
- ``GET /healthz``: ``{"status": "ok", "version": ...}`` once the server is up;
- ``POST /webhooks/{token}``: a provider saying a task ended (see :func:`webhook_endpoint`).

A POST to the MCP endpoint may be up to about 27.7 MiB (two 10 MB images as base64 ``data:``
URIs) and nest JSON 64 levels deep (:mod:`kling_video_mcp.surface.limits`): 413 or 400 beyond.

Every route sits behind the same two guards, outermost first (the webhook route behind
the first only: providers cannot send a bearer token, and the URL's token is the credential):

1. ``Host``/``Origin`` validation (DNS-rebinding protection), on for every bind address.
   The MCP transports spec says servers "MUST validate the ``Origin`` header on all incoming
   connections" and answer 403 when it is invalid (spec 2025-11-25 and 2026-07-28,
   ``basic/transports``); the SDK turns this on by itself only for loopback binds and only on
   the MCP endpoint (https://github.com/modelcontextprotocol/python-sdk, ``mcp/server/transport_security.py``), so it is applied here to the whole app.
2. When sign-in is configured (``KLING_MCP_HTTP_TOKEN``, ``KLING_MCP_HTTP_TOKENS_FILE`` or
   ``KLING_MCP_OAUTH_ISSUER``), a verified bearer token with the needed scope
   (:mod:`kling_video_mcp.surface.auth`), else 401 or 403; with an issuer, the protected-resource
   metadata (RFC 9728) is served to anyone. A server that binds a non-loopback address without
   sign-in refuses to start: it would read local files and spend provider credit for anyone
   who can reach it.

Clips are served from the caller's own folder: ``/clips/{file}`` finds only the caller's clips.
``/clips/`` and ``/previews/`` also open with a signed, expiring link instead of a token
(:mod:`kling_video_mcp.surface.signed_urls`), because a ``<video>`` element cannot send one;
the link names the owner's folder under its signature. A link whose signature is expired or
does not match gets 403, token or not.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from kling_video_mcp import __version__
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.auth import AccessGuard, build_access, caller_owner_of
from kling_video_mcp.surface.limits import MAX_BODY_BYTES, MessageLimits
from kling_video_mcp.surface.signed_urls import SIGNED_ROUTES, UrlSigner, Verdict
from kling_video_mcp.tasks.owners import owner_folder

if TYPE_CHECKING:
    from kling_video_mcp.surface.server import KlingMCPServer

log = logging.getLogger(__name__)

HttpTransport = Literal["streamable-http", "sse"]

#: Loopback names a local client may put in ``Host``/``Origin`` (any port), as the SDK allows.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")
WEBHOOK_PREFIX = "/webhooks/"
WEBHOOK_MAX_BYTES = 256 * 1024
"""Largest webhook body read (a task result is a few kB); a longer one gets 413 and changes nothing."""


class StartRefused(Exception):
    """The server must not start like this; the message says why and what to do instead."""


@dataclass(frozen=True)
class HttpConfig:
    """How to serve: the command-line choices (everything else comes from :class:`Settings`)."""

    transport: HttpTransport = "streamable-http"
    host: str = "127.0.0.1"
    port: int = 8000
    stateless: bool = False
    """Streamable HTTP without sessions, so any of several workers can answer any request
    (ignored by SSE, whose connections are sessions by design)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or host name) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, sign_in: object | None) -> None:
    """Refuse a non-loopback bind without sign-in (``sign_in``: a token, or ``None`` for none).

    Raises:
        StartRefused: ``host`` is reachable from other machines and no sign-in is configured.
    """
    if not sign_in and not is_loopback(host):
        raise StartRefused(
            f"refusing to serve on {host!r} without sign-in: anyone who can reach it could make the "
            "server spend your provider credit. Set KLING_MCP_HTTP_TOKEN to a long random secret "
            "(clients then send 'Authorization: Bearer <token>'), or KLING_MCP_HTTP_TOKENS_FILE or "
            "KLING_MCP_OAUTH_ISSUER for several users, or bind 127.0.0.1 (the default)."
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def public_base_url(settings: Settings, config: HttpConfig) -> str:
    """Where clients reach this server: ``KLING_MCP_PUBLIC_URL``, else the bind address.

    Clip links are this plus ``/clips/<file>``. A wildcard bind has no single address, so the
    machine's host name stands in.
    """
    if settings.public_url:
        return settings.public_url
    host = socket.gethostname() if config.host in _WILDCARD_BINDS else config.host
    return f"http://{_url_host(host)}:{config.port}"


def transport_security(settings: Settings, config: HttpConfig, base_url: str) -> TransportSecuritySettings:
    """The accepted ``Host`` and ``Origin`` values: loopback (any port), the bind address, the
    public URL's host and origin, and ``KLING_MCP_ALLOWED_HOSTS``/``KLING_MCP_ALLOWED_ORIGINS``.

    A request without ``Origin`` (any non-browser client) passes the origin check; ``Host`` is
    always checked (421 when wrong, 403 for a wrong ``Origin``: the SDK's middleware).
    """
    hosts = [f"{name}:*" for name in _LOOPBACK_HOSTS]
    origins = [f"http://{name}:*" for name in _LOOPBACK_HOSTS]
    if config.host not in _WILDCARD_BINDS:
        hosts.append(f"{_url_host(config.host)}:{config.port}")
    public = urlsplit(base_url)
    hosts.append(public.netloc)
    origins.append(f"{public.scheme}://{public.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + settings.allowed_hosts,
        allowed_origins=origins + settings.allowed_origins,
    )


class HostOriginGuard:
    """ASGI middleware: the SDK's ``Host``/``Origin`` check, for every HTTP route."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.checker = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := await self.checker.validate_request(Request(scope))) is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def signed_media(scope: Scope) -> bool:
    """A request for one file under a media route, carrying a ``sig`` parameter: that route's
    endpoint checks the signature (:func:`_media_endpoint`); no other endpoint can be reached this way."""
    route, _, name = scope["path"].lstrip("/").partition("/")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return route in SIGNED_ROUTES and bool(name) and "/" not in name and "sig" in query


def clip_path(output_dir: Path, name: str) -> Path | None:
    """The clip ``name`` directly inside ``output_dir``, or ``None``.

    Only ``.mp4`` files count (never a ``.part`` download in progress), and only after
    resolving symlinks and ``..``, so no request reaches a file outside the folder.
    """
    if "\x00" in name:  # "x.mp4%00.txt": no file name holds a NUL
        return None
    folder = output_dir.expanduser().resolve()
    try:
        candidate = (folder / name).resolve()
    except (OSError, ValueError):
        return None
    if candidate.parent != folder or candidate.suffix.lower() != ".mp4" or not candidate.is_file():
        return None
    return candidate


_REFUSED_LINK = {
    Verdict.EXPIRED: "This link has expired; ask the server for a fresh one (check_task), or send the bearer token.",
    Verdict.INVALID: "This link's signature does not match; use the link exactly as the server gave it.",
}


def _media_endpoint(
    route: str, root: Path, signer: UrlSigner, *, signs_in: bool
) -> Callable[[Request], Awaitable[Response]]:
    """Serve ``<root>/<owner folder>/<file>`` under ``/<route>/``: the folder the signed link names,
    else the caller's own (another user's file is missing here); a signed request must carry a
    valid signature. With sign-in configured, an unsigned request must come from a verified caller
    (a second check behind :class:`~kling_video_mcp.surface.auth.AccessGuard`)."""

    async def media(request: Request) -> Response:
        name = request.path_params["file"]
        verdict = signer.verify(route, name, request.query_params)
        if verdict in _REFUSED_LINK:
            return PlainTextResponse(_REFUSED_LINK[verdict], status_code=403)
        if verdict is Verdict.UNSIGNED and signs_in and "user" not in request.scope:
            return PlainTextResponse("Sign in: send a valid bearer token, or use a signed link.", status_code=401)
        if verdict is Verdict.VALID:
            folder = root / request.query_params.get("folder", "")  # as signed by this server
        else:
            folder = root / owner_folder(caller_owner_of(request.scope))
        # Starlette's FileResponse answers Range requests (206, multipart, 416) and HEAD.
        if (path := clip_path(folder, name)) is None:
            return PlainTextResponse(f"No such file in this server's {route} folder.", status_code=404)
        return FileResponse(path, media_type="video/mp4")

    return media


def webhook_endpoint(mcp: KlingMCPServer) -> Callable[[Request], Awaitable[Response]]:
    """``POST /webhooks/{token}``: a provider says a task ended; its watcher polls it now.

    The body is read (up to :data:`WEBHOOK_MAX_BYTES`, else 413) and never trusted: the poll
    asks the provider itself, so a forged call can at most cause one early poll; a provider that
    signs its calls has the signature checked, and a bad one gets 401 and changes nothing. An
    unknown token gets 404 and changes nothing; a known one 202 at once. The token never reaches a log.
    """

    async def webhook(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > WEBHOOK_MAX_BYTES:
            return PlainTextResponse("Webhook body too large.", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > WEBHOOK_MAX_BYTES:
                return PlainTextResponse("Webhook body too large.", status_code=413)
        if mcp.live is None:
            return PlainTextResponse("Starting up; send it again.", status_code=503)  # providers retry non-2xx
        verdict = await mcp.live.service.webhook(request.path_params["token"], request.headers, bytes(body))
        if verdict == "unknown":
            return PlainTextResponse("No such webhook.", status_code=404)
        if verdict == "refused":
            return PlainTextResponse("Bad webhook signature.", status_code=401)
        return JSONResponse({"accepted": True}, status_code=202)

    return webhook


async def _healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def build_app(settings: Settings, config: HttpConfig) -> Starlette:
    """The whole HTTP app for ``config``; see the module docstring for what it serves.

    Raises:
        StartRefused: non-loopback ``config.host`` and no sign-in, or an unusable token file.
    """
    from kling_video_mcp.surface.server import build_server  # the tools load only when serving

    check_bind(config.host, settings.signs_in or None)
    base_url = public_base_url(settings, config)
    endpoints = ["/sse", "/messages/"] if config.transport == "sse" else ["/mcp"]
    try:
        access = build_access(
            shared_token=settings.http_token, tokens_file=settings.http_tokens_file,
            issuer=settings.oauth_issuer, audience=settings.oauth_audience,
            resource_url=base_url + endpoints[0], public_url=base_url,
            jwks_cooldown_seconds=settings.oauth_jwks_cooldown_seconds,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise StartRefused(f"KLING_MCP_HTTP_TOKENS_FILE cannot be used: {exc}") from exc
    signer = UrlSigner.for_settings(settings, base_url)
    mcp = build_server(settings, clip_base_url=base_url, image_dirs=list(settings.image_dirs), url_signer=signer)
    mcp.custom_route("/healthz", methods=["GET"])(_healthz)
    for route, root in (("clips", settings.output_dir), ("previews", settings.previews_dir)):
        endpoint = _media_endpoint(route, root, signer, signs_in=settings.signs_in)
        mcp.custom_route(f"/{route}/{{file}}", methods=["GET"])(endpoint)
    mcp.custom_route(WEBHOOK_PREFIX + "{token}", methods=["POST"])(webhook_endpoint(mcp))
    security = transport_security(settings, config, base_url)
    if config.transport == "sse":
        app = mcp.sse_app(transport_security=security, host=config.host, max_request_body_size=MAX_BODY_BYTES)
    else:
        app = mcp.streamable_http_app(transport_security=security, host=config.host, stateless_http=config.stateless,
                                      max_request_body_size=MAX_BODY_BYTES)  # fmt: skip
    # Behind sign-in (added later, so it runs first): only a verified caller gets a body read.
    app.add_middleware(MessageLimits, paths=endpoints)
    if access is not None:
        app.router.routes.extend(access.routes)
        # Open: the protected-resource metadata, and webhooks (the token in their URL is the credential).
        open_prefixes = [route.path for route in access.routes] + [WEBHOOK_PREFIX]
        # Signed media links pass too: their endpoint checks the signature (a <video> sends no token).
        app.add_middleware(AccessGuard, verifier=access.verifier, mcp_paths=endpoints, open_prefixes=open_prefixes,
                           resource_metadata_url=access.resource_metadata_url, admit=signed_media)  # fmt: skip
    app.add_middleware(HostOriginGuard, security=security)  # added last = runs first
    return app


def _sign_in_summary(settings: Settings) -> str:
    ways = [
        f"OAuth tokens from {settings.oauth_issuer}" if settings.oauth_issuer else "",
        f"the users in {settings.http_tokens_file}" if settings.http_tokens_file else "",
        "the shared token" if settings.http_token else "",
    ]
    return ", ".join(way for way in ways if way) or "none (loopback only)"


def serve_http(settings: Settings, config: HttpConfig) -> None:
    """Serve until stopped (Ctrl-C / SIGTERM). Logs go to the root logger (stderr).

    Raises:
        StartRefused: as :func:`build_app`, before anything is bound.
    """
    import uvicorn

    from kling_video_mcp.surface.server import settle_heap

    app = build_app(settings, config)
    settle_heap()
    endpoint = "/sse" if config.transport == "sse" else "/mcp"
    if settings.public_url is None and not is_loopback(config.host):
        log.warning("KLING_MCP_PUBLIC_URL is not set: clip links name this machine; clients behind a proxy need it set")
    log.info(
        "Serving MCP (%s%s) at http://%s:%d%s; clips at %s/clips/; sign-in: %s",
        config.transport, ", stateless" if config.stateless else "", _url_host(config.host), config.port, endpoint,
        public_base_url(settings, config), _sign_in_summary(settings),
    )  # fmt: skip
    # log_config=None: uvicorn's own loggers go through ours (stderr), access log included,
    # with build_server's kling_video_mcp.redact.filter_logs on them.
    uvicorn.run(app, host=config.host, port=config.port, log_config=None)
