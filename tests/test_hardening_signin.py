"""Sign-in under attack (identities, owners and the OAuth issuer): each test runs the
installed server over HTTP as users start it, against the test authorization server
(``authserver.py``) or a token file, and fails on the code before the fix it names.

- a token whose ``sub`` is empty, missing or reserved is refused, never served as the local user (item 1);
- a token-file name equal to an OAuth ``sub`` is another person, and journals from before are
  migrated on both backends (item 4);
- a token file replaced with the same size and time (``cp -p``) stops admitting the old token (item 5);
- signed media links go only to callers whose token may read media (item 6);
- a broken issuer (a ``file:`` or plain-http ``jwks_uri``, a key set that is not JSON, or 404) is
  refused at start-up or answered 503 with back-off, never 500 and never one fetch per request (item 9).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import anyio
import httpx2
import psycopg
import pytest

from authserver import GENERATE, READ, auth_server
from conftest import make_settings
from helpers import wait_done
from kling_video_mcp.journal import open_journal
from kling_video_mcp.journal.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from kling_video_mcp.journal.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from kling_video_mcp.models import LOCAL_OWNER
from kling_video_mcp.surface.view import MEDIA_META_KEY
from kling_video_mcp.tasks.owners import SAFE_NAME, oauth_owner, owner_folder, token_file_owner
from test_auth import INITIALIZE, oauth_env, post
from test_consent import apps_host
from test_http import TOKEN, STARTUP_SECONDS, http_server, sandbox_env, start_server, stop_server
from test_journal import record
from test_users import signed_in, token_file

pytestmark = pytest.mark.anyio

PROMPT = "a paper boat on a rain gutter"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def make_clip(client, prompt: str = PROMPT) -> dict:
    made = await client.call_tool("generate_video", {"prompt": prompt, "duration": 3})
    assert not made.is_error, made.structured_content
    done = (await wait_done(client, made.structured_content["task_id"])).structured_content
    assert done["status"] == "succeeded", done
    return done


# -- 1. no token is the local user but the shared one ----------------------------------------------


async def test_a_token_without_a_usable_sub_is_refused_never_served_as_the_local_user(tmp_path):
    with auth_server() as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        async with signed_in(server.mcp_url, TOKEN) as (local, _):  # the shared token: the local user
            local_clip = (await make_clip(local))["file_uri"]
        unusable = {
            "an empty sub": issuer.token("", server.base),
            "a blank sub": issuer.token("   ", server.base),
            "no sub": issuer.token("alice", server.base, sub=None),
            "the local user's name": issuer.token(LOCAL_OWNER, server.base),
            "the local user's name, padded": issuer.token(f" {LOCAL_OWNER} ", server.base),
            "a sub with a NUL": issuer.token("alice\x00", server.base),
            "a sub that is not a string": issuer.token("alice", server.base, sub=42),
        }
        answers = {
            name: (post(server.mcp_url, token, INITIALIZE).status_code,
                   httpx2.get(local_clip, headers={"Authorization": f"Bearer {token}"}).status_code)
            for name, token in unusable.items()
        }  # fmt: skip
        alice = issuer.token("alice", server.base)
        alices = (post(server.mcp_url, alice, INITIALIZE).status_code,
                  httpx2.get(local_clip, headers={"Authorization": f"Bearer {alice}"}).status_code)  # fmt: skip
        log = server.log()
    assert answers == {name: (401, 401) for name in unusable}, answers
    assert alices == (200, 404)  # a real user signs in, and the local user's clip is not theirs
    assert "refused a bearer token: its sub" in log


# -- 4. sign-in methods are separate namespaces ----------------------------------------------------


async def test_a_token_file_name_equal_to_an_oauth_sub_is_another_person(tmp_path, emulator):
    users, tokens = token_file(tmp_path, "alice")
    with auth_server() as issuer:
        env = sandbox_env(
            tmp_path, KLING_MCP_OAUTH_ISSUER=issuer.issuer, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN
        )
        with http_server(env, log_dir=tmp_path) as server:
            async with signed_in(server.mcp_url, issuer.token("alice", server.mcp_url)) as (sso_alice, _):
                done = await make_clip(sso_alice)
            async with signed_in(server.mcp_url, tokens["alice"]) as (file_alice, file_http):
                listed = (await file_alice.call_tool("list_tasks", {})).structured_content["tasks"]
                checked = await file_alice.call_tool("check_task", {"task_id": done["task_id"]})
                clip = await file_http.get(done["file_uri"])
                own = await make_clip(file_alice, "the token-file alice's own clip")
    assert listed == [] and checked.structured_content["error"]["code"] == "not_found"
    assert clip.status_code == 404
    clips = tmp_path / "clips"
    assert Path(done["file_path"]).parent == clips / "oauth@alice"  # the issuer's alice
    assert Path(own["file_path"]).parent == clips / "alice"  # the token file's alice, as before


def test_owner_folders_are_safe_names_and_never_shared():
    owners = [LOCAL_OWNER]
    for name in ["alice", "Alice", "a.b-c_d", "x" * 64, "local", "oauth@alice", "alice@oauth"]:
        owners += [token_file_owner(name)] if SAFE_NAME.fullmatch(name) else []
        owners.append(oauth_owner(name))
    owners += [oauth_owner(sub) for sub in ["auth0|65f0ab", "../..", ".", "..", "a/b", "é", "x" * 255, "alice-9", " "]]
    folders = [owner_folder(owner) for owner in owners]
    assert folders[0] == ""
    assert len(set(folders)) == len(folders), folders
    for folder in folders[1:]:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}", folder) and folder not in (".", ".."), folder
    assert owner_folder(token_file_owner("alice")) == "alice" and owner_folder(oauth_owner("alice")) == "oauth@alice"


OLD_OWNERS = ["local", "alice", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "auth0|65f0ab", "bob@example.com"]
"""Owners as a journal from before the prefixes holds them: the local user, plain names (a token-file
user or a Keycloak-style sub, who knows), and subs no token-file name can be."""


def old_sqlite_journal(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript("".join(SQLITE_MIGRATIONS[:3]) + "PRAGMA user_version = 3;")
        for index, owner in enumerate(OLD_OWNERS):
            old = record(f"{index:032x}", owner=owner)
            db.execute(
                "INSERT INTO tasks (task_id, provider, provider_task_id, status, fingerprint, created_at, record, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (old.task_id, old.provider, old.provider_task_id, old.status, old.fingerprint, old.created_at.isoformat(),
                 old.model_dump_json(), owner),
            )  # fmt: skip


def old_postgres_journal(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        for number, script in enumerate(POSTGRES_MIGRATIONS[:2], start=1):
            db.execute(script)
            db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        for index, owner in enumerate(OLD_OWNERS):
            old = record(f"{index:032x}", owner=owner)
            db.execute(
                "INSERT INTO tasks (task_id, provider, provider_task_id, status, fingerprint, created_at, record, open, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s)",
                (old.task_id, old.provider, old.provider_task_id, old.status, old.fingerprint, old.created_at,
                 old.model_dump_json(), owner),
            )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("sign_in", "plain_names_go_to"),
    [("issuer", "oauth"), ("token file", "file"), ("both", "file")],
)
async def test_owners_from_before_the_namespaces_are_migrated(tmp_path, emulator, request, backend, sign_in, plain_names_go_to):
    """``local`` stays; what no token-file name can be was a sub; a plain name goes to the only
    sign-in method configured, and to the token file when both are (its names are the operator's)."""
    url = request.getfixturevalue("database_url") if backend == "postgres" else None
    users = tmp_path / "users.txt"
    users.write_text(f"alice {digest('x')}\n")
    options = {"issuer": {"oauth_issuer": "https://sso.example.com"}, "token file": {"http_tokens_file": users}}
    options["both"] = options["issuer"] | options["token file"]
    settings = make_settings(tmp_path, emulator, database_url=url, **options[sign_in])
    old_postgres_journal(url) if url else old_sqlite_journal(settings.journal_path)
    async with open_journal(settings) as journal:
        owners = {task.task_id: task.owner for task in await journal.recent(limit=100, owner=None)}
        alices = [task.task_id for task in await journal.recent(owner=f"{plain_names_go_to}:alice")]
    expected = [
        "local", f"{plain_names_go_to}:alice", f"{plain_names_go_to}:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "oauth:auth0|65f0ab", "oauth:bob@example.com",
    ]  # fmt: skip
    assert [owners[f"{index:032x}"] for index in range(len(OLD_OWNERS))] == expected
    assert alices == [f"{1:032x}"]  # the record's own owner field moved with the column


# -- 5. the token file is reloaded on its content --------------------------------------------------


def test_a_token_file_replaced_with_the_same_size_and_time_stops_the_old_token(tmp_path):
    users = tmp_path / "users.txt"
    old_token, new_token = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    users.write_text(f"alice {digest(old_token)}\n")
    env = sandbox_env(tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN)

    def status(token: str) -> int:
        return httpx2.get(f"{server.base}/healthz", headers={"Authorization": f"Bearer {token}"}).status_code

    with http_server(env, log_dir=tmp_path) as server:
        before = status(old_token)
        rotated = tmp_path / "rotated.txt"
        rotated.write_text(f"alice {digest(new_token)}\n")  # the same length: one name, one digest
        stamp = users.stat()
        os.utime(rotated, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        subprocess.run(["cp", "-p", str(rotated), str(users)], check=True)  # keeps size and time
        assert (users.stat().st_size, users.stat().st_mtime_ns) == (stamp.st_size, stamp.st_mtime_ns)
        after = (status(old_token), status(new_token))
    assert before == 200
    assert after == (401, 200)


# -- 6. signed links only for readers ----------------------------------------------------------------


async def test_signed_media_links_go_only_to_a_token_that_may_read_media(tmp_path):
    """A ``video:generate``-only token is 403 on ``/clips/``; a signed link must not open it instead."""
    with auth_server() as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        maker = issuer.token("alice", server.mcp_url, scopes=(GENERATE,))
        both = issuer.token("alice", server.mcp_url, scopes=(GENERATE, READ))
        async with signed_in(server.mcp_url, maker, extensions=apps_host()) as (client, http):
            made = await client.call_tool("generate_video", {"prompt": PROMPT, "duration": 3, "wait_seconds": 40})
            task_id = made.structured_content["task_id"]
            direct = await http.get(made.structured_content["file_uri"])
        async with signed_in(server.mcp_url, both, extensions=apps_host()) as (reader, _):
            checked = await reader.call_tool("check_task", {"task_id": task_id})
    assert made.structured_content["status"] == "succeeded", made.structured_content
    assert direct.status_code == 403  # the token itself may not read the clip
    assert made.meta[MEDIA_META_KEY][task_id] == {"prompt": PROMPT}  # so no link to it either
    assert "clip_url" in checked.meta[MEDIA_META_KEY][task_id]  # a reader of the same user gets one


# -- 9. a broken issuer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("jwks_uri", ["file:///etc/passwd", "http://keys.example.com/realms/studio/keys"])
def test_an_issuer_naming_keys_that_are_not_https_stops_the_start(tmp_path, jwks_uri):
    with auth_server() as issuer:
        issuer.jwks_uri = jwks_uri
        server = start_server(oauth_env(tmp_path, issuer), log_dir=tmp_path)
        try:
            exit_code = server.process.wait(STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            exit_code = None
        finally:
            stop_server(server)
    log = server.log()
    assert exit_code not in (None, 0), log
    assert "KLING_MCP_OAUTH_ISSUER cannot be used" in log and jwks_uri in log and "https://" in log
    assert issuer.key_set_fetches == 0


@pytest.mark.parametrize("answer", ["not-json", "missing"])
async def test_a_broken_key_set_is_503_with_back_off_whatever_the_traffic(tmp_path, answer):
    """Fifty requests at once with a good-looking token: every one 503 (not 500), one fetch at most."""
    with auth_server() as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        issuer.key_set_answer = answer
        token = issuer.token("alice", server.base)
        statuses: list[tuple[int, str | None]] = []
        async with httpx2.AsyncClient(timeout=30) as http:

            async def one() -> None:
                response = await http.post(server.mcp_url, json=INITIALIZE, headers={
                    "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})  # fmt: skip
                statuses.append((response.status_code, response.headers.get("retry-after")))

            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(one)
        fetches = issuer.key_set_fetches
        log = server.log()
    assert {status for status, _ in statuses} == {503}, statuses
    assert all(retry is not None and 1 <= int(retry) <= 60 for _, retry in statuses)
    assert fetches == 1
    assert "Traceback" not in log


async def test_an_issuer_that_recovers_is_used_again_after_the_back_off(tmp_path):
    with auth_server() as issuer, http_server(oauth_env(tmp_path, issuer), log_dir=tmp_path) as server:
        issuer.key_set_answer = "missing"
        token = issuer.token("alice", server.base)
        failed = post(server.mcp_url, token, INITIALIZE)
        issuer.key_set_answer = "keys"
        waited = post(server.mcp_url, token, INITIALIZE)  # still within the back-off: no fetch
        time.sleep(int(failed.headers["retry-after"]) + 0.5)
        recovered = post(server.mcp_url, token, INITIALIZE)
        fetches = issuer.key_set_fetches
    assert (failed.status_code, waited.status_code, recovered.status_code) == (503, 503, 200)
    assert fetches == 2

