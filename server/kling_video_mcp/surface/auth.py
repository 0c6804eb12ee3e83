"""Who is calling over HTTP: bearer tokens verified, callers named, scopes enforced.

In: :class:`~kling_video_mcp.config.Settings` (``KLING_MCP_OAUTH_ISSUER``,
``KLING_MCP_OAUTH_AUDIENCE``, ``KLING_MCP_HTTP_TOKENS_FILE``, ``KLING_MCP_HTTP_TOKEN``). Out:
an :class:`AccessGuard` for the HTTP app, the RFC 9728 protected-resource metadata route, and
:func:`caller_owner`, the owner name of the caller of a tool or resource.

Three ways to know the caller, usable together:

- **OAuth 2.1 resource server** (MCP spec 2025-11-25 and 2026-07-28, ``basic/authorization``):
  the bearer token is a JWT from ``KLING_MCP_OAUTH_ISSUER``. Its signing keys come from the
  ``jwks_uri`` of the issuer's metadata (RFC 8414 ``/.well-known/oauth-authorization-server``,
  else OpenID Connect discovery), are cached, and are fetched again when a token names an unknown
  ``kid`` (PyJWT's ``PyJWKClient``). PyJWT checks the signature, ``iss``, ``aud``, ``exp`` and
  ``nbf`` (:data:`LEEWAY_SECONDS` of clock skew) and requires ``sub``; only asymmetric
  algorithms are accepted, so ``alg: none`` and HMAC tokens are refused. The caller is the
  token's ``sub`` (the issuer's user, not the client application).
- **A token file** (``KLING_MCP_HTTP_TOKENS_FILE``): one user per line, a name and the SHA-256
  (hex) of their token; see :func:`parse_token_file`. It is read again when it changes.
- **One shared token** (``KLING_MCP_HTTP_TOKEN``): one user, :data:`LOCAL_OWNER`, like stdio.

Refusals (RFC 6750 §3): no token, or one that fails any check, gets 401; a token without the
scope a request needs gets 403 ``insufficient_scope``. Both carry ``WWW-Authenticate``, with
``resource_metadata`` pointing at the protected-resource metadata when an issuer is set (RFC 9728
§5.1), so a client finds where to sign in. Scopes (:func:`required_scopes`): ``video:generate``
for the tools that spend, ``video:read`` for every other tool, for resources and for clip files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jwt
from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from pydantic import AnyHttpUrl, SecretStr
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_video_mcp.tasks.owners import LOCAL_OWNER

log = logging.getLogger(__name__)

GENERATE_SCOPE = "video:generate"
READ_SCOPE = "video:read"
SCOPES = (GENERATE_SCOPE, READ_SCOPE)

SPENDING_TOOLS = frozenset({"generate_video", "animate_image", "assemble_video", "confirm_spend"})
"""Tools that can spend provider credit: they need ``video:generate`` (``confirm_spend`` submits
a task that waited for consent). Every other tool needs ``video:read``."""
FILE_PATHS = ("/clips/", "/previews/")
"""HTTP routes that serve a user's media files: they need ``video:read``."""

LEEWAY_SECONDS = 30
"""Clock skew allowed on ``exp`` and ``nbf``."""
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""The JWS algorithms accepted: public-key signatures only (never ``none``, never ``HS*``)."""
DISCOVERY_TIMEOUT = 10.0
"""Seconds for one request to the issuer (metadata or keys)."""
DISCOVERY_RETRY_SECONDS = 5.0
"""After a failed discovery, requests are answered at once for this long instead of each
waiting on the issuer again."""

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class IssuerUnavailable(Exception):
    """The issuer's metadata or keys could not be fetched, so no token can be checked now."""


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
        if not _USER_NAME.fullmatch(name) or name == LOCAL_OWNER:
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
    """The users of ``KLING_MCP_HTTP_TOKENS_FILE``, read again whenever the file changes.

    A file that becomes unreadable or invalid admits nobody until it is fixed (and the reason
    is logged), so a botched edit never keeps a removed user in.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: list[FileUser] = []
        self._load()  # a bad file stops the start, with the reason

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp, self._users = stamp, []
            self._users = parse_token_file(self.path.read_text(), str(self.path))

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


# -- OAuth access tokens ------------------------------------------------------------------------


class JwtVerifier:
    """Checks JWT access tokens from one issuer, against the keys it publishes."""

    def __init__(self, issuer: str, audiences: Sequence[str], *, jwks_cooldown_seconds: float = 30.0) -> None:
        self.issuer = issuer
        self.audiences = list(audiences)
        self.jwks_cooldown_seconds = jwks_cooldown_seconds
        self._keys: jwt.PyJWKClient | None = None
        self._discovery = anyio.Lock()
        self._failure: tuple[float, IssuerUnavailable] | None = None

    async def _key_client(self) -> jwt.PyJWKClient:
        """The issuer's key set client, found through its metadata on first use.

        Raises:
            IssuerUnavailable: no metadata document for this issuer names a ``jwks_uri``.
        """
        async with self._discovery:
            if self._keys is None:
                if self._failure and anyio.current_time() - self._failure[0] < DISCOVERY_RETRY_SECONDS:
                    raise self._failure[1]
                try:
                    jwks_uri = await self._discover_jwks_uri()
                except IssuerUnavailable as exc:
                    self._failure = (anyio.current_time(), exc)
                    raise
                self._keys = jwt.PyJWKClient(
                    jwks_uri, cooldown_duration=self.jwks_cooldown_seconds, timeout=DISCOVERY_TIMEOUT
                )
            return self._keys

    async def _discover_jwks_uri(self) -> str:
        """RFC 8414 §3 and OpenID Connect Discovery §4, in the order the MCP spec gives clients.

        A document counts only if its ``issuer`` is exactly ours (RFC 8414 §3.3).
        """
        tried = []
        async with httpx2.AsyncClient(timeout=DISCOVERY_TIMEOUT, follow_redirects=False) as client:
            for url in build_oauth_authorization_server_metadata_discovery_urls(self.issuer, self.issuer):
                try:
                    response = await client.get(url, headers={"Accept": "application/json"})
                    document = response.json() if response.status_code == 200 else None
                except (httpx2.HTTPError, ValueError) as exc:
                    tried.append(f"{url} ({type(exc).__name__})")
                    continue
                if isinstance(document, dict) and document.get("issuer") == self.issuer and document.get("jwks_uri"):
                    return str(document["jwks_uri"])
                tried.append(f"{url} (HTTP {response.status_code}, no matching issuer and jwks_uri)")
        raise IssuerUnavailable(f"no metadata for issuer {self.issuer} names its keys; tried {'; '.join(tried)}")

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims if it passes every check, else ``None`` (the reason is logged).

        Raises:
            IssuerUnavailable: the issuer's metadata or keys could not be fetched.
        """
        keys = await self._key_client()
        try:
            # PyJWKClient fetches with urllib, which blocks: keep it off the event loop.
            key = await anyio.to_thread.run_sync(keys.get_signing_key_from_jwt, token)
            return jwt.decode(
                token,
                key,
                algorithms=list(ASYMMETRIC_ALGORITHMS),
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable(f"the issuer's keys could not be fetched: {exc}") from exc
        except (jwt.PyJWKClientError, jwt.PyJWTError) as exc:
            log.info("refused a bearer token: %s", exc)  # PyJWT's reasons never quote the token
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

    async def verify_token(self, token: str) -> AccessToken | None:
        """Raises :class:`IssuerUnavailable` when only the issuer could have vouched for it."""
        if self.shared_token is not None and hmac.compare_digest(token.encode(), self.shared_token):
            return AccessToken(token="", client_id="shared-token", scopes=list(SCOPES), subject=LOCAL_OWNER)
        if self.token_file is not None and (user := self.token_file.match(token)) is not None:
            return AccessToken(
                token="", client_id="token-file", scopes=list(user.scopes), subject=user.name, claims={"iss": "token-file"}
            )
        if self.oauth is not None and token.count(".") == 2 and (claims := await self.oauth.verify(token)):
            if claims["sub"] == LOCAL_OWNER:
                log.warning("refused a token whose sub is %r: that name is the server's own user", LOCAL_OWNER)
                return None
            client = claims.get("client_id") or claims.get("azp") or claims.get("appid") or "unknown-client"
            return AccessToken(
                token="", client_id=str(client), scopes=_token_scopes(claims), subject=str(claims["sub"]),
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

    A body that is not JSON needs none here: it calls nothing, and the MCP transport refuses it.
    """
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
        verifier: TokenVerifier,
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
        if scope["type"] != "http" or scope["path"].startswith(self.open_prefixes) or (self.admit and self.admit(scope)):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        try:
            access = await self.verifier.verify_token(token) if token else None
        except IssuerUnavailable as exc:
            log.error("cannot check bearer tokens: %s", exc)
            message = "The authorization server's keys cannot be fetched right now; try again shortly."
            await JSONResponse({"error": "temporarily_unavailable", "error_description": message}, 503,
                               headers={"Retry-After": "5"})(scope, receive, send)  # fmt: skip
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

    async def _needed_scopes(self, scope: Scope, receive: Receive) -> tuple[set[str], Receive]:
        """The scopes this request needs, and a ``receive`` that replays the body read to learn them."""
        path = scope["path"]
        if path.startswith(FILE_PATHS):
            return {READ_SCOPE}, receive
        if scope["method"] != "POST" or path not in self.mcp_paths:
            return set(), receive
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
                break  # the transport refuses a body this big; nothing in it is called
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

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
    """The owner name of the caller of one HTTP request (:func:`caller_owner` says whose)."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser) and user.access_token.subject:
        return user.access_token.subject
    return LOCAL_OWNER


def caller_owner(ctx: Context) -> str:
    """The owner name of whoever sent this tool call or resource read.

    Over HTTP with sign-in, the verified caller :class:`AccessGuard` put on the request; on stdio,
    or over HTTP without sign-in, :data:`LOCAL_OWNER`.
    """
    request = ctx.request_context.request
    return caller_owner_of(request.scope) if hasattr(request, "scope") else LOCAL_OWNER
