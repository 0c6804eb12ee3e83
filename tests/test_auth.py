"""Who is calling: the OAuth resource server, the token file, scopes.

The OAuth tests run the installed server over streamable HTTP against the test authorization
server in ``authserver.py`` (its own keys, metadata and JWKS on loopback): every kind of bad
token gets 401 with a ``WWW-Authenticate`` that points at the protected-resource metadata, a
token without the needed scope gets 403, a rotated key is picked up, and the MCP Inspector
connects with a token from that server. The token file is tested in process (no socket).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from authserver import GENERATE, READ, AuthServer, SigningKey, auth_server
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.auth import TokenFileError, parse_token_file, required_scopes
from kling_video_mcp.surface.http import HttpConfig, StartRefused, build_app
from test_http import TOKEN, HttpServer, clean_env, free_port, http_server, sandbox_env
from test_inspector import CALLED, INSPECTOR_PACKAGE, npm_tool

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


def call(name: str, arguments: dict | None = None) -> dict:
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


READ_RESOURCE = {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "kling-video://tasks/x"}}


def post(url: str, token: str | None, body: dict) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.post(url, json=body, headers=headers, timeout=30)


def oauth_env(folder: Path, issuer: AuthServer, **extra: str) -> dict[str, str]:
    """The sandbox with OAuth sign-in. The shared token is set too, only so the test harness
    can see ``/healthz`` answer; no test below signs in with it."""
    return sandbox_env(
        folder, KLING_MCP_OAUTH_ISSUER=issuer.issuer, KLING_MCP_OAUTH_JWKS_COOLDOWN_SECONDS="0",
        KLING_MCP_HTTP_TOKEN=TOKEN, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def issuer() -> Iterator[AuthServer]:
    with auth_server() as running:
        yield running


@pytest.fixture(scope="module")
def server(issuer: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    folder = tmp_path_factory.mktemp("oauth")
    with http_server(oauth_env(folder, issuer), log_dir=folder) as running:
        yield running


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict, sign=lambda signing_input: b"") -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bad_tokens(issuer: AuthServer, audience: str) -> dict[str, str]:
    """One token per way a token must fail, each otherwise valid."""
    good = issuer.token("alice", audience)
    published = issuer.keys[0]
    public_pem = published.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stranger = SigningKey.rsa()
    return {
        "expired": issuer.token("alice", audience, lifetime=-120),
        "not yet valid": issuer.token("alice", audience, not_before=600),
        "wrong issuer": issuer.token("alice", audience, iss="http://127.0.0.1:9/realms/other"),
        "wrong audience": issuer.token("alice", "https://another-server.example/mcp"),
        "no audience": issuer.token("alice", audience, aud=None),
        "no subject": issuer.token("alice", audience, sub=None),
        "the local user's name as subject": issuer.token("local", audience),
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": published.kid}, _claims(good)),
        "HMAC with the public key as secret": _unsigned(
            {"alg": "HS256", "typ": "JWT", "kid": published.kid}, _claims(good),
            lambda signing_input: hmac.new(public_pem, signing_input, hashlib.sha256).digest(),
        ),  # fmt: skip
        "unknown kid": issuer.token("alice", audience, key=stranger),
        "forged (a published kid, another key)": issuer.token(
            "alice", audience, key=SigningKey(published.kid, "RS256", stranger.private)
        ),
        "not a JWT": "definitely-not-a-token",
        "the signature of another token": ".".join(good.split(".")[:2] + [issuer.token("bob", audience).split(".")[2]]),
    }


def test_every_kind_of_bad_token_gets_401_pointing_at_the_metadata(server, issuer):
    metadata_url = f"{server.base}/.well-known/oauth-protected-resource/mcp"
    tokens = bad_tokens(issuer, server.base)
    refused = {name: post(server.mcp_url, token, INITIALIZE) for name, token in tokens.items()}
    missing = post(server.mcp_url, None, INITIALIZE)
    accepted = post(server.mcp_url, issuer.token("alice", server.base), INITIALIZE)
    for name, response in refused.items():
        assert response.status_code == 401, name
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, (name, challenge)
        assert f'resource_metadata="{metadata_url}"' in challenge, (name, challenge)
    assert missing.status_code == 401 and "error=" not in missing.headers["www-authenticate"]  # RFC 6750 §3.1
    assert f'resource_metadata="{metadata_url}"' in missing.headers["www-authenticate"]
    assert accepted.status_code == 200, accepted.text
    log = server.log()
    assert all(token not in log for token in tokens.values())


def test_the_protected_resource_metadata_names_the_issuer_and_scopes(server, issuer):
    metadata = httpx2.get(f"{server.base}/.well-known/oauth-protected-resource/mcp")  # no token needed
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == server.mcp_url
    assert metadata.json()["authorization_servers"] == [issuer.issuer]
    assert set(metadata.json()["scopes_supported"]) == {GENERATE, READ}


def test_tokens_for_the_public_url_or_the_endpoint_are_both_accepted(server, issuer):
    """The default audience: the public URL, or the MCP endpoint an RFC 8707 client names."""
    for audience in (server.base, server.mcp_url):
        assert post(server.mcp_url, issuer.token("alice", audience), INITIALIZE).status_code == 200, audience


def test_a_token_without_the_needed_scope_gets_403(server, issuer):
    reader = issuer.token("alice", server.base, scopes=(READ,))
    maker = issuer.token("alice", server.base, scopes=(GENERATE,))
    nothing = issuer.token("alice", server.base, scopes=())
    refusals = {
        "reader generates": post(server.mcp_url, reader, call("generate_video", {"prompt": "x"})),
        "reader animates": post(server.mcp_url, reader, call("animate_image", {"image": "x"})),
        "reader assembles": post(server.mcp_url, reader, call("assemble_video")),
        "maker checks": post(server.mcp_url, maker, call("check_task", {"task_id": "x"})),
        "maker lists": post(server.mcp_url, maker, call("list_tasks")),
        "maker reads a resource": post(server.mcp_url, maker, READ_RESOURCE),
        "maker downloads a clip": httpx2.get(f"{server.base}/clips/x.mp4", headers={"Authorization": f"Bearer {maker}"}),
    }
    for name, response in refusals.items():
        assert response.status_code == 403, (name, response.status_code, response.text)
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and "resource_metadata=" in challenge, name
    assert f'scope="{GENERATE}"' in refusals["reader generates"].headers["www-authenticate"]
    assert f'scope="{READ}"' in refusals["maker lists"].headers["www-authenticate"]
    # Signing in needs no scope; what is asked for does.
    assert post(server.mcp_url, nothing, INITIALIZE).status_code == 200
    passed = httpx2.get(f"{server.base}/clips/x.mp4", headers={"Authorization": f"Bearer {reader}"})
    assert passed.status_code == 404  # past the guard: no such clip


async def test_scopes_from_entra_and_auth0_claims_are_understood(server, issuer):
    """Microsoft Entra puts scopes in ``scp``, Auth0 with RBAC in ``permissions``."""
    for claims in ({"scope": None, "scp": f"{READ} {GENERATE}"}, {"scope": None, "permissions": [READ, GENERATE]}):
        token = issuer.token("alice", server.base, **claims)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
                made = await client.call_tool("generate_video", {"prompt": "scopes in scp", "duration": 3, "dry_run": True})
        assert not made.is_error, (claims, made.structured_content)


def test_a_rotated_key_is_picked_up_and_the_withdrawn_one_refused(tmp_path):
    with auth_server() as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        before = issuer.token("alice", server.base)
        assert post(server.mcp_url, before, INITIALIZE).status_code == 200
        fetches = issuer.key_set_fetches
        assert post(server.mcp_url, issuer.token("bob", server.base), INITIALIZE).status_code == 200
        assert issuer.key_set_fetches == fetches  # a known key: the cached key set serves
        issuer.rotate()
        after = issuer.token("alice", server.base)
        assert post(server.mcp_url, after, INITIALIZE).status_code == 200  # unknown kid: keys fetched again
        assert issuer.key_set_fetches == fetches + 1
        assert post(server.mcp_url, before, INITIALIZE).status_code == 401  # its key is gone from the set


def test_an_issuer_with_openid_connect_discovery_only_is_found(tmp_path):
    with auth_server(discovery="oidc") as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        assert post(server.mcp_url, issuer.token("alice", server.base), INITIALIZE).status_code == 200
        assert post(server.mcp_url, issuer.token("alice", server.base, lifetime=-120), INITIALIZE).status_code == 401


async def test_an_unreachable_issuer_gets_503_not_401(tmp_path):
    """The caller's token may be fine: an outage must not send clients into a new sign-in."""
    settings = Settings(
        output_dir=tmp_path / "clips", state_dir=tmp_path / "state",
        oauth_issuer=f"http://127.0.0.1:{free_port()}/realms/gone",
    )  # fmt: skip
    app = build_app(settings, HttpConfig())
    token = _unsigned({"alg": "RS256", "kid": "k"}, {"sub": "alice"}, lambda _: b"sig")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        response = await http.get("/healthz", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503 and response.headers["retry-after"]


# -- the token file ----------------------------------------------------------------------------------


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_token_file_users_sign_in_and_it_is_read_again_when_it_changes(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(f"# the team\nalice {digest('alice-token')}\n\nviewer {digest('viewer-token')} {READ}\n")
    settings = Settings(output_dir=tmp_path / "clips", state_dir=tmp_path / "state", http_tokens_file=users)
    app = build_app(settings, HttpConfig(host="0.0.0.0"))  # a token file counts as sign-in for a network bind

    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        async def status(token: str, method: str = "GET", path: str = "/healthz", body: dict | None = None) -> int:
            response = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            return response.status_code

        assert await status("alice-token") == 200
        assert await status("viewer-token") == 200
        assert await status("carol-token") == 401
        assert await status(digest("alice-token")) == 401  # the file's hash is not the token
        assert await status("viewer-token", "POST", "/mcp", call("generate_video")) == 403
        users.write_text(users.read_text() + f"carol {digest('carol-token')}\n")
        assert await status("carol-token") == 200  # no restart needed
        users.write_text(f"alice {digest('alice-token')}\nbroken line here too\n")
        assert await status("alice-token") == 401  # a broken file admits nobody until fixed


async def test_scopes_hold_on_the_sse_transport_too(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(f"viewer {digest('viewer-token')} {READ}\n")
    settings = Settings(output_dir=tmp_path / "clips", state_dir=tmp_path / "state", http_tokens_file=users)
    app = build_app(settings, HttpConfig(transport="sse"))
    headers = {"Authorization": "Bearer viewer-token"}
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        spend = await http.post("/messages/?session_id=0", json=call("generate_video"), headers=headers)
        anonymous = await http.post("/messages/?session_id=0", json=call("check_task"))
    assert spend.status_code == 403 and 'scope="video:generate"' in spend.headers["www-authenticate"]
    assert anonymous.status_code == 401


def test_token_file_rules():
    good = f"alice {digest('a')}\nbob {digest('b')} {GENERATE},{READ}\n"
    assert [user.name for user in parse_token_file(good)] == ["alice", "bob"]
    assert parse_token_file(f"viewer {digest('v')} {READ}")[0].scopes == (READ,)
    for text, rule in [
        ("alice", "expected"),
        (f"local {digest('a')}", "not 'local'"),
        (f"../up {digest('a')}", "letters, digits"),
        ("alice my-plain-token", "SHA-256"),
        (f"alice {digest('a')} video:admin", "unknown scope"),
        (f"alice {digest('a')}\nalice {digest('b')}", "earlier line"),
        (f"alice {digest('a')}\nbob {digest('a')}", "earlier line"),
    ]:
        with pytest.raises(TokenFileError, match=rule):
            parse_token_file(text, "users.txt")


def test_a_bad_token_file_stops_the_start(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("alice not-a-hash\n")
    settings = Settings(output_dir=tmp_path / "clips", state_dir=tmp_path / "state", http_tokens_file=users)
    with pytest.raises(StartRefused, match="line 1"):
        build_app(settings, HttpConfig())
    with pytest.raises(StartRefused, match="KLING_MCP_HTTP_TOKENS_FILE"):
        build_app(settings.model_copy(update={"http_tokens_file": tmp_path / "missing.txt"}), HttpConfig())


def test_scopes_are_judged_from_the_json_rpc_body():
    assert required_scopes(json.dumps(call("generate_video")).encode()) == {GENERATE}
    assert required_scopes(json.dumps(call("confirm_spend")).encode()) == {GENERATE}
    assert required_scopes(json.dumps(call("check_task")).encode()) == {READ}
    assert required_scopes(json.dumps([call("list_tasks"), call("animate_image")]).encode()) == {READ, GENERATE}
    assert required_scopes(json.dumps(READ_RESOURCE).encode()) == {READ}
    assert required_scopes(json.dumps(INITIALIZE).encode()) == set()
    assert required_scopes(b"{not json") == set()


# -- a client nobody here wrote -----------------------------------------------------------------------


def test_the_inspector_connects_with_a_token_from_the_issuer(server, issuer):
    token = issuer.token("alice", server.mcp_url)
    base = [*npm_tool("mcp-inspector", INSPECTOR_PACKAGE), "--cli", "--format", "json", "-q", "--stored-auth-only"]
    base += [server.mcp_url, "--method", "tools/list"]
    with_token = subprocess.run(
        [*base, "--header", f"Authorization: Bearer {token}"], env=clean_env(), capture_output=True, text=True, timeout=180
    )
    without = subprocess.run(base, env=clean_env(), capture_output=True, text=True, timeout=180)
    assert with_token.returncode == 0, with_token.stderr
    assert {tool["name"] for tool in json.loads(with_token.stdout)["result"]["tools"]} == CALLED
    assert without.returncode == 3 and "auth_required" in without.stderr  # the Inspector's AUTH_REQUIRED
