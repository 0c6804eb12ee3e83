"""Who is calling over HTTP: bearer tokens verified, callers named, scopes enforced.

In: :class:`~kling_video_mcp.config.Settings` (``KLING_MCP_OAUTH_ISSUER``,
``KLING_MCP_OAUTH_AUDIENCE``, ``KLING_MCP_HTTP_TOKENS_FILE``, ``KLING_MCP_HTTP_TOKEN``). Out:
an :class:`AccessGuard` for the HTTP app, the RFC 9728 protected-resource metadata route,
:func:`caller_owner`, the owner id of the caller of a tool or resource, and :func:`caller_may_read`.

Three ways to know the caller, usable together:

- **OAuth 2.1 resource server** (MCP spec 2025-11-25 and 2026-07-28, ``basic/authorization``):
  the bearer token is a JWT from ``KLING_MCP_OAUTH_ISSUER``, checked against the issuer's keys by
  :class:`~kling_video_mcp.surface.issuer.JwtVerifier` (an issuer failure is a 503, with back-off;
  a ``jwks_uri`` that is not ``https`` stops the start-up). The caller is the
  token's ``sub`` (the issuer's user, not the client application), as owner ``oauth:<sub>``; a
  ``sub`` that is empty, a reserved owner name or not a plain string is refused (:func:`subject_problem`).
- **A token file** (``KLING_MCP_HTTP_TOKENS_FILE``): one user per line, a name and the SHA-256
  (hex) of their token; see :func:`parse_token_file`. The caller is owner ``file:<name>``. The
  file is read again when its content changes (its hash, not its size or time, is compared).
- **One shared token** (``KLING_MCP_HTTP_TOKEN``): one user, :data:`LOCAL_OWNER`, like stdio.

Owner ids carry the sign-in method (``tasks/owners.py``), so a token-file name equal to a ``sub``
is another person. No token is ever the local user but the shared token.

Refusals (RFC 6750 §3): no token, or one that fails any check, gets 401; a token without the
scope a request needs gets 403 ``insufficient_scope``. Both carry ``WWW-Authenticate``, with
``resource_metadata`` pointing at the protected-resource metadata when an issuer is set (RFC 9728
§5.1), so a client finds where to sign in. Scopes (:func:`required_scopes`): ``video:generate``
for the tools that spend, ``video:read`` for every other tool, for resources and for clip files.

One concept: the HTTP caller's identity and rights. The three ways to sign in end in one
verifier, one guard and one owner name, and their rules are read and reviewed together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from pydantic import AnyHttpUrl, SecretStr
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_video_mcp.surface.issuer import IssuerRefused, IssuerUnavailable, JwtVerifier
from kling_video_mcp.surface.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, nested_deeper_than, read_body
from kling_video_mcp.tasks.owners import LOCAL_OWNER, SAFE_NAME, oauth_owner, token_file_owner

log = logging.getLogger(__name__)

GENERATE_SCOPE = "video:generate"
READ_SCOPE = "video:read"
SCOPES = (GENERATE_SCOPE, READ_SCOPE)

SPENDING_TOOLS = frozenset({"generate_video", "animate_image", "assemble_video", "confirm_spend"})
"""Tools that can spend provider credit: they need ``video:generate`` (``confirm_spend`` submits
a task that waited for consent). Every other tool needs ``video:read``."""
FILE_PATHS = ("/clips/", "/previews/")
"""HTTP routes that serve a user's media files: they need ``video:read``."""

MAX_SUBJECT_CHARS = 255
"""The longest ``sub`` accepted: OpenID Connect Core §2 says it "MUST NOT exceed 255 ASCII characters"."""

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class TokenFileError(ValueError):
    """The token file breaks a rule; the message names the file, the line and the rule."""


# -- the token file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileUser:
    name: str
    digest: bytes
    """SHA-256 of the user's token."""
    scopes: tuple[str, ...] = SCOPES


def parse_token_file(text: str, source: str = "token file") -> list[FileUser]:
    """The users in a token file.

    One user per line: ``<name> <sha256-hex-of-token> [<scope>,<scope>]``. The name (letters,
    digits, ``._-``, at most 64, not ``local``) is the owner of the user's tasks and the folder of
    their clips; the scopes default to both. Blank lines and lines starting with ``#`` are skipped.
    Make a line with ``printf %s "$TOKEN" | sha256sum``.

    Raises:
        TokenFileError: a malformed line, an unknown scope, or a repeated name or token.
    """
    users: list[FileUser] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{source} line {number}"
        if len(fields) not in (2, 3):
            raise TokenFileError(f"{where}: expected '<name> <sha256 of the token> [scopes]', got {len(fields)} fields.")
        name, digest = fields[0], fields[1]
        if not SAFE_NAME.fullmatch(name) or name == LOCAL_OWNER:
            raise TokenFileError(
                f"{where}: the name must be letters, digits, '.', '_' or '-' (at most 64), and not {LOCAL_OWNER!r}."
            )
        if not _SHA256_HEX.fullmatch(digest):
            raise TokenFileError(f"{where}: the second field must be the 64-digit SHA-256 hex of the token, not the token.")
        scopes = tuple(fields[2].split(",")) if len(fields) == 3 else SCOPES
        if unknown := set(scopes) - set(SCOPES):
            raise TokenFileError(f"{where}: unknown scope {sorted(unknown)[0]!r}; scopes are {', '.join(SCOPES)}.")
        user = FileUser(name, bytes.fromhex(digest), scopes)
        if any(other.name == name or other.digest == user.digest for other in users):
            raise TokenFileError(f"{where}: the name or the token of {name!r} is on an earlier line already.")
        users.append(user)
    return users


class TokenFile:
    """The users of ``KLING_MCP_HTTP_TOKENS_FILE``, read again whenever its content changes.

    The file is read on every sign-in and compared by its SHA-256, not by size and modification
    time: a file replaced by one of the same size and time (``cp -p``, ``rsync -t``) must not keep
    admitting a removed token. It is one short line per user, so reading it costs next to nothing.
    A file that becomes unreadable or invalid admits nobody until it is fixed (and the reason
    is logged), so a botched edit never keeps a removed user in.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._content_hash: bytes | None = None
        self._users: list[FileUser] = []
        self._load()  # a bad file stops the start, with the reason

    def _load(self) -> None:
        content = self.path.read_bytes()
        content_hash = hashlib.sha256(content).digest()
        if content_hash != self._content_hash:
            self._content_hash, self._users = content_hash, []
            self._users = parse_token_file(content.decode(), str(self.path))

    def match(self, token: str) -> FileUser | None:
        """The user whose token this is. Every entry is compared, each in constant time."""
        try:
            self._load()
        except (OSError, UnicodeDecodeError, TokenFileError) as exc:
            log.error("KLING_MCP_HTTP_TOKENS_FILE admits nobody until fixed: %s", exc)
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for user in self._users:
            if hmac.compare_digest(user.digest, digest):
                found = user
        return found


# -- what an OAuth token says --------------------------------------------------------------------


def subject_problem(subject: object) -> str | None:
    """Why a token's ``sub`` cannot name a user here, if it cannot.

    A ``sub`` must be a non-empty string of at most :data:`MAX_SUBJECT_CHARS` characters without
    control characters, and not a reserved owner name (:data:`LOCAL_OWNER`, the stdio user's).
    """
    if not isinstance(subject, str) or not subject.strip():
        return "is missing or empty"
    if subject.strip() == LOCAL_OWNER:
        return f"is {LOCAL_OWNER!r}, the server's own user"
    if len(subject) > MAX_SUBJECT_CHARS or _CONTROL_CHARACTERS.search(subject):
        return f"is longer than {MAX_SUBJECT_CHARS} characters or holds control characters"
    return None


def _token_scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes from ``scope`` (RFC 9068, Keycloak, Auth0), ``scp`` (Microsoft Entra) or
    ``permissions`` (Auth0 with RBAC): a space-separated string or a list."""
    scopes: list[str] = []
    for claim in ("scope", "scp", "permissions"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.extend(value.split())
        elif isinstance(value, list):
            scopes.extend(str(item) for item in value)
    return scopes


# -- one verifier for every kind of token ----------------------------------------------------------


class CallerVerifier(TokenVerifier):
    """The SDK's ``TokenVerifier`` over the configured kinds of token.

    The ``AccessToken`` it returns names the owner in ``subject`` and never holds the token
    itself (it travels with the request and must not reach a log).
    """

    def __init__(
        self,
        *,
        shared_token: SecretStr | None = None,
        token_file: TokenFile | None = None,
        oauth: JwtVerifier | None = None,
    ) -> None:
        self.shared_token = shared_token.get_secret_value().encode() if shared_token else None
        self.token_file = token_file
        self.oauth = oauth

    async def check_at_start(self) -> None:
        """Raises :class:`IssuerRefused` when the issuer's metadata names keys this server will not fetch."""
        if self.oauth is not None:
            await self.oauth.check_at_start()

    def issuer_retry_seconds(self) -> int:
        """Whole seconds until the issuer is asked again after a failure (at least 1): ``Retry-After``."""
        return max(1, math.ceil(self.oauth.backoff.seconds_left())) if self.oauth is not None else 1

    async def verify_token(self, token: str) -> AccessToken | None:
        """Raises :class:`IssuerUnavailable` when only the issuer could have vouched for it."""
        if self.shared_token is not None and hmac.compare_digest(token.encode(), self.shared_token):
            return AccessToken(token="", client_id="shared-token", scopes=list(SCOPES), subject=LOCAL_OWNER)
        if self.token_file is not None and (user := self.token_file.match(token)) is not None:
            return AccessToken(
                token="", client_id="token-file", scopes=list(user.scopes), subject=token_file_owner(user.name),
                claims={"iss": "token-file"},
            )  # fmt: skip
        if self.oauth is not None and token.count(".") == 2 and (claims := await self.oauth.verify(token)):
            if (problem := subject_problem(claims["sub"])) is not None:
                log.warning("refused a bearer token: its sub %s", problem)
                return None
            client = claims.get("client_id") or claims.get("azp") or claims.get("appid") or "unknown-client"
            return AccessToken(
                token="", client_id=str(client), scopes=_token_scopes(claims), subject=oauth_owner(claims["sub"]),
                expires_at=int(claims["exp"]), claims={"iss": claims["iss"]},
            )  # fmt: skip
        return None


# -- scopes per request ----------------------------------------------------------------------------


def scope_for(method: str, params: Any) -> str | None:
    """The scope one JSON-RPC request needs, ``None`` if any signed-in caller may send it."""
    if method == "tools/call":
        name = params.get("name") if isinstance(params, dict) else None
        return GENERATE_SCOPE if name in SPENDING_TOOLS else READ_SCOPE
    if method.startswith("resources/"):
        return READ_SCOPE
    if method.startswith("tasks/"):  # MCP tasks: answering a spend question or cancelling acts on spending
        return GENERATE_SCOPE if method in ("tasks/update", "tasks/cancel") else READ_SCOPE
    return None


def required_scopes(body: bytes) -> set[str]:
    """The scopes a JSON-RPC POST body needs (a single message or a batch).

    A body that is not JSON, or nests too deep to parse safely, needs none here: it calls
    nothing, and :class:`~kling_video_mcp.surface.limits.MessageLimits` or the MCP transport refuses it.
    """
    if nested_deeper_than(body, MAX_JSON_DEPTH):
        return set()
    try:
        parsed = json.loads(body)
    except ValueError:
        return set()
    messages = parsed if isinstance(parsed, list) else [parsed]
    needed = set()
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("method"), str):
            if (scope := scope_for(message["method"], message.get("params"))) is not None:
                needed.add(scope)
    return needed


# -- the middleware ----------------------------------------------------------------------------------


class AccessGuard:
    """ASGI middleware: every HTTP request but those under ``open_prefixes`` needs a verified bearer token, and
    the scopes of what it asks for (:func:`required_scopes` on ``mcp_paths``, ``video:read``
    on :data:`FILE_PATHS`).

    A verified caller lands in the ASGI scope as the SDK's ``AuthenticatedUser`` (so the SDK
    binds each legacy session to the user who opened it) and in its ``auth_context_var``.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: CallerVerifier,
        *,
        mcp_paths: Iterable[str],
        open_prefixes: Iterable[str] = (),
        resource_metadata_url: str | None = None,
        admit: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.mcp_paths = frozenset(mcp_paths)
        self.open_prefixes = tuple(open_prefixes)
        self.resource_metadata_url = resource_metadata_url
        self.admit = admit
        """Requests the endpoint itself authenticates (a signed media link): passed on unverified."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._start(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"].startswith(self.open_prefixes) or (self.admit and self.admit(scope)):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        try:
            access = await self.verifier.verify_token(token) if token else None
        except IssuerUnavailable as exc:
            log.error("cannot check bearer tokens: %s", exc)
            message = "The authorization server's keys cannot be fetched right now; try again shortly."
            retry = str(self.verifier.issuer_retry_seconds())
            await JSONResponse({"error": "temporarily_unavailable", "error_description": message}, 503,
                               headers={"Retry-After": retry})(scope, receive, send)  # fmt: skip
            return
        if access is None:
            await self._refuse(scope, receive, send, 401, "invalid_token" if token else None, "Sign in: send a valid bearer token.")
            return
        needed, receive = await self._needed_scopes(scope, receive)
        if missing := sorted(needed - set(access.scopes)):
            await self._refuse(
                scope, receive, send, 403, "insufficient_scope", f"This needs the scope {' '.join(missing)}.", missing
            )
            return
        user = AuthenticatedUser(access)
        scope["user"], scope["auth"] = user, AuthCredentials(access.scopes)
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _start(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI lifespan: the issuer is checked before the app starts, and a refused
        ``jwks_uri`` fails the start (``lifespan.startup.failed``: uvicorn exits, saying why)."""
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.verifier.check_at_start()
            except IssuerRefused as exc:
                await send({"type": "lifespan.startup.failed", "message": f"KLING_MCP_OAUTH_ISSUER cannot be used: {exc}"})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _needed_scopes(self, scope: Scope, receive: Receive) -> tuple[set[str], Receive]:
        """The scopes this request needs, and a ``receive`` that replays the body read to learn them."""
        path = scope["path"]
        if path.startswith(FILE_PATHS):
            return {READ_SCOPE}, receive
        if scope["method"] != "POST" or path not in self.mcp_paths:
            return set(), receive
        body, replay = await read_body(receive, MAX_BODY_BYTES)  # MessageLimits refuses a longer one
        return required_scopes(body), replay

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, error: str | None, description: str,
        scopes: Sequence[str] = SCOPES,
    ) -> None:  # fmt: skip
        """401/403 with ``WWW-Authenticate`` (RFC 6750 §3; MCP: ``resource_metadata`` and ``scope``)."""
        parts = [f'error="{error}"', f'error_description="{description}"'] if error else []
        if self.resource_metadata_url:
            parts.append(f'resource_metadata="{self.resource_metadata_url}"')
        parts.append(f'scope="{" ".join(scopes)}"')
        body = {"error": error or "unauthorized", "error_description": description}
        headers = {"WWW-Authenticate": "Bearer " + ", ".join(parts)}
        await JSONResponse(body, status, headers=headers)(scope, receive, send)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            # The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
            return credentials.strip() or None if scheme.lower() == "bearer" else None
    return None


# -- assembling it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What :func:`build_access` gives the HTTP app."""

    verifier: CallerVerifier
    routes: list[Route]
    """The protected-resource metadata route, when an issuer is set."""
    resource_metadata_url: str | None


def build_access(
    *,
    shared_token: SecretStr | None,
    tokens_file: Path | None,
    issuer: str | None,
    audience: str | None,
    resource_url: str,
    public_url: str,
    jwks_cooldown_seconds: float = 30.0,
) -> Access | None:
    """The verifier and routes for the configured sign-in, ``None`` when none is configured.

    ``resource_url`` is the MCP endpoint's public URL, the resource the metadata describes.
    Without ``audience``, tokens issued for ``public_url`` or for ``resource_url`` (what an MCP
    client asks its authorization server for, RFC 8707) are accepted.

    Raises:
        TokenFileError, OSError: the token file cannot be used.
    """
    if shared_token is None and tokens_file is None and issuer is None:
        return None
    oauth = None
    routes: list[Route] = []
    metadata_url = None
    if issuer is not None:
        audiences = [audience] if audience else [public_url, resource_url]
        oauth = JwtVerifier(issuer, audiences, jwks_cooldown_seconds=jwks_cooldown_seconds)
        settings = AuthSettings(
            issuer_url=AnyHttpUrl(issuer), resource_server_url=AnyHttpUrl(resource_url),
            required_scopes=list(SCOPES), validate_token_resource=False,  # audience checked by JwtVerifier
        )  # fmt: skip
        assert settings.resource_server_url is not None
        routes = create_protected_resource_routes(
            resource_url=settings.resource_server_url,
            authorization_servers=[settings.issuer_url],
            scopes_supported=settings.required_scopes,
            resource_name="kling-video-mcp",
        )
        metadata_url = str(build_resource_metadata_url(settings.resource_server_url))
    verifier = CallerVerifier(
        shared_token=shared_token, token_file=TokenFile(tokens_file) if tokens_file else None, oauth=oauth
    )
    return Access(verifier, list(routes), metadata_url)


def caller_owner_of(scope: Scope) -> str:
    """The owner id of the caller of one HTTP request (:func:`caller_owner` says whose).

    Raises:
        PermissionError: a verified caller without an owner id (never made here): a token never
            falls back to the local user.
    """
    user = scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        return LOCAL_OWNER
    if not user.access_token.subject:
        raise PermissionError("a signed-in caller has no owner id; refusing rather than serving the local user")
    return user.access_token.subject


def _signed_in_caller(ctx: Context) -> AuthenticatedUser | None:
    request = ctx.request_context.request
    user = request.scope.get("user") if hasattr(request, "scope") else None
    return user if isinstance(user, AuthenticatedUser) else None


def caller_owner(ctx: Context) -> str:
    """The owner id of whoever sent this tool call or resource read.

    Over HTTP with sign-in, the verified caller :class:`AccessGuard` put on the request; on stdio,
    or over HTTP without sign-in, :data:`LOCAL_OWNER`.
    """
    request = ctx.request_context.request
    return caller_owner_of(request.scope) if hasattr(request, "scope") else LOCAL_OWNER


def caller_may_read(ctx: Context) -> bool:
    """Whether this caller may read media (the ``video:read`` scope), as the ``/clips/`` and
    ``/previews/`` routes require: true on stdio and over HTTP without sign-in. Signed media links
    go only to such callers, so a link never opens what the caller's own token could not."""
    user = _signed_in_caller(ctx)
    return user is None or READ_SCOPE in user.access_token.scopes
