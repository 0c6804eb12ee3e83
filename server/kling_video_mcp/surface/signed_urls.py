"""Signed, expiring links to clips and previews, for a ``<video>`` element that cannot send a token.

A link is ``<base>/clips/<file>?exp=<unix seconds>&sig=<HMAC-SHA256>`` (or ``/previews/``),
with ``&folder=<owner folder>`` for a signed-in user's file: the signature covers the route,
the folder, the file name and the expiry, so a link opens exactly one file until it expires. The key is ``KLING_MCP_URL_SECRET``, else 32 random bytes generated once into
``<state_dir>/url-secret`` (readable by the owner only), so links survive a restart and every
worker on one state folder signs alike. Workers on several machines need the variable set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import quote, urlencode

from kling_video_mcp import atomic
from kling_video_mcp.config import Settings

LINK_LIFETIME_SECONDS = 3600
"""How long a signed link works: long enough to watch a film and seek in it, short enough that
a leaked link soon opens nothing. A view whose link expired reads the preview through MCP instead."""
SECRET_FILE = "url-secret"
SIGNED_ROUTES = ("clips", "previews")


class Verdict(Enum):
    """What a request's ``exp``/``sig`` query says."""

    UNSIGNED = "unsigned"
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


def _state_secret(state_dir: Path) -> bytes:
    """The key in ``<state_dir>/url-secret``, created on first use (owner-only, never overwritten).

    Written whole before it gets its name, so a worker starting at the same moment reads either
    no file (and loses the race to create it) or the whole key, never an empty one.
    """
    path = state_dir / SECRET_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        atomic.write_bytes(path, key, mode=0o600, exclusive=True)
    except FileExistsError:
        return path.read_bytes().strip()
    return key


@dataclass(frozen=True)
class UrlSigner:
    """Signs and checks links under one base URL; see the module docstring for the shape."""

    key: bytes
    base_url: str
    lifetime: float = LINK_LIFETIME_SECONDS

    @classmethod
    def for_settings(cls, settings: Settings, base_url: str) -> UrlSigner:
        """The signer for a server at ``base_url``, keyed as the module docstring says."""
        secret = settings.url_secret.get_secret_value().encode() if settings.url_secret else None
        return cls(key=secret or _state_secret(settings.state_dir), base_url=base_url.rstrip("/"))

    def _signature(self, route: str, folder: str, name: str, expires: int) -> str:
        message = f"{route}\n{folder}\n{name}\n{expires}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def url(self, route: str, name: str, *, folder: str = "", now: float | None = None) -> str:
        """``<base>/<route>/<name>?exp=...&sig=...``, valid for :attr:`lifetime` seconds from ``now``;
        with ``folder`` (an owner's subfolder of the route's folder) also ``&folder=<folder>``, signed too."""
        expires = int((time.time() if now is None else now) + self.lifetime)
        fields: dict[str, str | int] = {"folder": folder} if folder else {}
        query = urlencode({**fields, "exp": expires, "sig": self._signature(route, folder, name, expires)})
        return f"{self.base_url}/{route}/{quote(name)}?{query}"

    def verify(self, route: str, name: str, query: Mapping[str, str], *, now: float | None = None) -> Verdict:
        """Whether ``query`` signs ``route``/``name`` and has not expired (constant-time compare)."""
        if "exp" not in query and "sig" not in query:
            return Verdict.UNSIGNED
        expires, signature = query.get("exp", ""), query.get("sig", "")
        if not expires.isdigit():
            return Verdict.INVALID
        expected = self._signature(route, query.get("folder", ""), name, int(expires))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return Verdict.INVALID
        if int(expires) <= (time.time() if now is None else now):
            return Verdict.EXPIRED
        return Verdict.VALID
