"""A test OAuth authorization server on loopback: its own signing keys, a metadata document
(RFC 8414) and a key set (JWKS), and access tokens (RFC 9068-style JWTs) for any user.

It never runs a sign-in flow: tests ask it for tokens directly, as a real client would get
them after signing in. Keys are made with ``cryptography``, tokens are signed with PyJWT.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

GENERATE = "video:generate"
READ = "video:read"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls) -> SigningKey:
        return cls(f"rsa-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls) -> SigningKey:
        return cls(f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        key = codec.to_jwk(self.private.public_key(), as_dict=True)
        return key | {"kid": self.kid, "alg": self.algorithm, "use": "sig"}


@dataclass
class AuthServer:
    """The running server; ``keys`` are published, ``keys[0]`` signs."""

    port: int
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.rsa(), SigningKey.ec()])
    path: str = "/realms/studio"
    discovery: str = "oauth"
    """``oauth``: RFC 8414 metadata only; ``oidc``: only OpenID Connect discovery (as some issuers)."""
    key_set_fetches: int = 0
    jwks_uri: str | None = None
    """What the metadata names as ``jwks_uri`` (``None``: its own key set), e.g. a ``file:`` URL."""
    key_set_answer: str = "keys"
    """How the key set answers: ``keys``; ``not-json`` (200 with an HTML page); ``missing`` (404)."""

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": self.jwks_uri or f"{self.issuer}/keys",
            "scopes_supported": [GENERATE, READ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }

    def token(
        self, sub: str, audience: str, /, *, scopes: tuple[str, ...] = (GENERATE, READ), key: SigningKey | None = None,
        lifetime: float = 300, not_before: float = 0, **claims: Any,
    ) -> str:  # fmt: skip
        """An access token for user ``sub``; ``claims`` override or add (``None`` drops one)."""
        key = key or self.keys[0]
        now = time.time()
        body = {
            "iss": self.issuer, "sub": sub, "aud": audience, "client_id": "test-client", "scope": " ".join(scopes),
            "iat": int(now), "exp": int(now + lifetime), "nbf": int(now + not_before), "jti": uuid.uuid4().hex,
        } | claims  # fmt: skip
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid})

    def rotate(self) -> SigningKey:
        """Publish a new signing key and withdraw the old ones, as an issuer's key rollover does."""
        self.keys = [SigningKey.rsa()]
        return self.keys[0]


def _handler(server: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            metadata_path = {
                "oauth": f"/.well-known/oauth-authorization-server{server.path}",
                "oidc": f"{server.path}/.well-known/openid-configuration",
            }[server.discovery]
            documents = {
                metadata_path: server.metadata,
                f"{server.path}/keys": lambda: {"keys": [key.jwk() for key in server.keys]},
            }
            if self.path not in documents:
                self.send_error(404)
                return
            key_set = self.path.endswith("/keys")
            if key_set:
                server.key_set_fetches += 1
            if key_set and server.key_set_answer == "missing":
                self.send_error(404)
                return
            body, content_type = json.dumps(documents[self.path]()).encode(), "application/json"
            if key_set and server.key_set_answer == "not-json":
                body, content_type = b"<html>Service Unavailable</html>", "text/html"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def auth_server(discovery: str = "oauth") -> Iterator[AuthServer]:
    """An :class:`AuthServer` on a free loopback port, for the length of the block."""
    state = AuthServer(port=0, discovery=discovery)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
