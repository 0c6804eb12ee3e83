"""The OAuth issuer's side of sign-in: its keys found, fetched, cached and used to check JWTs.

In: ``KLING_MCP_OAUTH_ISSUER`` (and the audiences tokens must name). Out: :class:`JwtVerifier`,
whose :meth:`~JwtVerifier.verify` gives a token's claims or ``None``, and raises
:class:`IssuerUnavailable` when only the issuer could tell.

The MCP spec (2025-11-25 and 2026-07-28, ``basic/authorization``) makes this server an OAuth 2.1
resource server. The issuer's signing keys come from the ``jwks_uri`` of its metadata (RFC 8414
``/.well-known/oauth-authorization-server``, else OpenID Connect discovery); they are fetched
with ``httpx2`` and read with PyJWT's ``PyJWKSet``, kept for :data:`KEY_SET_LIFETIME_SECONDS`, and
fetched again for an unknown ``kid`` at most once per ``KLING_MCP_OAUTH_JWKS_COOLDOWN_SECONDS``
(so a key rotation needs no restart). PyJWT checks the signature, ``iss``, ``aud``, ``exp`` and
``nbf`` (:data:`LEEWAY_SECONDS` of clock skew) and requires ``sub``; only asymmetric algorithms are
accepted, so ``alg: none`` and HMAC tokens are refused.

Any issuer failure (unreachable, an error status, an answer that is not a key set, a ``jwks_uri``
that is not ``https``) is remembered with back-off (:class:`Backoff`): requests meanwhile get it at
once (a 503), so however much traffic arrives, the issuer is asked a few times a minute at most. A
``jwks_uri`` that is not ``https`` (``http`` only on loopback, for tests) stops the start-up
(:meth:`JwtVerifier.check_at_start`): keys fetched without TLS, or from a local file, are no keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls

from kling_video_mcp.tasks.addresses import host_is_loopback

if TYPE_CHECKING:
    # PyJWT (and the cryptography it loads) is imported where a key set or token is first read:
    # the sign-in module that imports this one is loaded on stdio too, where no token ever comes.
    from jwt import PyJWK, PyJWKSet

log = logging.getLogger(__name__)
T = TypeVar("T")

LEEWAY_SECONDS = 30
"""Clock skew allowed on ``exp`` and ``nbf``."""
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""The JWS algorithms accepted: public-key signatures only (never ``none``, never ``HS*``)."""
DISCOVERY_TIMEOUT = 10.0
"""Seconds for one request to the issuer (metadata or keys)."""
KEY_SET_LIFETIME_SECONDS = 300.0
"""How long a fetched key set is used before it is fetched again (PyJWKClient's default lifespan)."""
BACKOFF_SECONDS = (10.0, 60.0)
"""After an issuer failure, requests are answered 503 at once for the first of these, doubling
after each further failure up to the second, instead of each asking the issuer again."""


class IssuerUnavailable(Exception):
    """The issuer's metadata or keys could not be fetched or used, so no token can be checked now."""


class IssuerRefused(IssuerUnavailable):
    """The issuer's metadata names a ``jwks_uri`` this server will not fetch (not ``https``)."""


class Backoff:
    """Remembers an issuer failure, so requests during the wait get it at once (without a fetch).

    The wait is :data:`BACKOFF_SECONDS`: its first value after one failure, doubled after each
    further failure up to its second; a success forgets it all.
    """

    def __init__(self) -> None:
        self._failure: IssuerUnavailable | None = None
        self._retry_at = 0.0
        self._wait = BACKOFF_SECONDS[0]

    def check(self) -> None:
        """Raises (a copy of) the remembered failure while its wait lasts."""
        if self._failure is not None and anyio.current_time() < self._retry_at:
            # A copy: one instance raised again and again would grow its traceback each time.
            raise type(self._failure)(*self._failure.args)

    def failed(self, failure: IssuerUnavailable) -> None:
        if self._failure is not None:
            self._wait = min(self._wait * 2, BACKOFF_SECONDS[1])
        self._failure, self._retry_at = failure, anyio.current_time() + self._wait

    def succeeded(self) -> None:
        self._failure, self._wait = None, BACKOFF_SECONDS[0]

    def seconds_left(self) -> float:
        """Seconds until the issuer is asked again (0 when it may be asked now)."""
        return max(0.0, self._retry_at - anyio.current_time()) if self._failure is not None else 0.0


def jwks_uri_problem(uri: str) -> str | None:
    """Why the issuer's ``jwks_uri`` will not be fetched, if it will not: keys fetched over
    anything but TLS could be swapped on the way (RFC 8414 §2 requires ``https``); ``http`` is
    allowed to a loopback host only (a test authorization server)."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and host_is_loopback(parts.hostname):
        return None
    return f"the issuer's metadata names jwks_uri {uri!r}, which is not an https:// URL (http:// only on loopback)"


class JwtVerifier:
    """Checks JWT access tokens from one issuer, against the keys it publishes."""

    def __init__(self, issuer: str, audiences: Sequence[str], *, jwks_cooldown_seconds: float = 30.0) -> None:
        self.issuer = issuer
        self.audiences = list(audiences)
        self.jwks_cooldown_seconds = jwks_cooldown_seconds
        self.backoff = Backoff()
        self._jwks_uri: str | None = None
        self._keys: PyJWKSet | None = None
        self._fetched_at = -math.inf
        """When the key set was last fetched (``anyio.current_time()``)."""
        self._fetching = anyio.Lock()

    async def check_at_start(self) -> None:
        """Find the issuer's keys' URL at start-up.

        Raises:
            IssuerRefused: the metadata names a ``jwks_uri`` that is not ``https``. An issuer that
                cannot be reached now is only logged: requests get 503 until it can.
        """
        try:
            async with self._fetching:
                await self._asking_issuer(self._found_jwks_uri)
        except IssuerRefused:
            raise
        except IssuerUnavailable as exc:
            log.warning("the OAuth issuer cannot be reached now (%s); requests get 503 until it can", exc)

    async def _asking_issuer(self, ask: Callable[[], Awaitable[T]]) -> T:
        """``ask()``, unless a recent failure is still being waited out; a failure starts the wait."""
        self.backoff.check()
        try:
            answer = await ask()
        except IssuerUnavailable as exc:
            self.backoff.failed(exc)
            raise
        self.backoff.succeeded()
        return answer

    async def _found_jwks_uri(self) -> str:
        if self._jwks_uri is None:
            uri = await self._discover_jwks_uri()
            if (problem := jwks_uri_problem(uri)) is not None:
                raise IssuerRefused(problem)
            self._jwks_uri = uri
        return self._jwks_uri

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

    async def _fetch_keys(self) -> PyJWKSet:
        """The issuer's key set, fetched now.

        Raises:
            IssuerUnavailable: its URL is unknown or refused, or it answers with anything but a usable key set.
        """
        import jwt

        uri = await self._found_jwks_uri()
        async with httpx2.AsyncClient(timeout=DISCOVERY_TIMEOUT, follow_redirects=False) as client:
            try:
                response = await client.get(uri, headers={"Accept": "application/json"})
            except httpx2.HTTPError as exc:
                raise IssuerUnavailable(f"the issuer's keys at {uri} could not be fetched ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise IssuerUnavailable(f"the issuer's keys at {uri} answered HTTP {response.status_code}")
        try:
            document = response.json()
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            return jwt.PyJWKSet.from_dict(document)
        except (ValueError, jwt.PyJWTError) as exc:
            raise IssuerUnavailable(f"the issuer's keys at {uri} are not a JSON Web Key Set ({exc})") from exc

    async def _signing_key(self, kid: str | None) -> PyJWK | None:
        """The published signing key named ``kid``, fetching the key set when it is missing, older
        than :data:`KEY_SET_LIFETIME_SECONDS`, or (once per cooldown) lacks ``kid``.

        Raises:
            IssuerUnavailable: the key set had to be fetched and could not be.
        """
        async with self._fetching:  # concurrent requests wait for one fetch rather than each making one
            fetched = self._keys is None or anyio.current_time() - self._fetched_at >= KEY_SET_LIFETIME_SECONDS
            if fetched:
                await self._refresh_keys()
            key = _signing_key_named(self._keys, kid)
            if key is None and not fetched and anyio.current_time() - self._fetched_at >= self.jwks_cooldown_seconds:
                await self._refresh_keys()
                key = _signing_key_named(self._keys, kid)
            return key

    async def _refresh_keys(self) -> None:
        self._keys = await self._asking_issuer(self._fetch_keys)
        self._fetched_at = anyio.current_time()

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims if it passes every check, else ``None`` (the reason is logged).

        Raises:
            IssuerUnavailable: the issuer's metadata or keys could not be fetched.
        """
        import jwt

        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            log.info("refused a bearer token: %s", exc)
            return None
        if (key := await self._signing_key(kid)) is None:
            log.info("refused a bearer token: the issuer publishes no signing key with its kid")
            return None
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(ASYMMETRIC_ALGORITHMS),
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refused a bearer token: %s", exc)  # PyJWT's reasons never quote the token
            return None


def _signing_key_named(keys: PyJWKSet | None, kid: object) -> PyJWK | None:
    """The key of ``keys`` with id ``kid`` meant for signatures (``use`` ``sig`` or unset), if any."""
    for key in keys.keys if keys is not None else []:
        if kid is not None and key.key_id == kid and key.public_key_use in ("sig", None):
            return key
    return None
