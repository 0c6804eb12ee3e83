"""Each user's work is their own: owners, visibility, folders, idempotency, budgets.

The installed server runs over streamable HTTP against the provider emulator, in both protocol
eras, with users signed in by the test authorization server (``authserver.py``) or by a token
file. User B tries every path to user A's task (check_task by our id and by the provider's,
list_tasks, the ``kling-video://`` resources, ``task:<id>`` chaining, the clip and preview URLs,
adopting the provider task id, assemble_video, confirm_spend) and gets exactly the answer a
missing task gets, with only the id differing; user A keeps every path. The journal's owner queries are tested on both backends
(SQLite and PostgreSQL, with two workers), and a journal from before owners gives its tasks
to the local user.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from authserver import auth_server
from helpers import submit_count, wait_done
from kling_video_mcp.journal.sqlite import MIGRATIONS, SqliteJournal
from kling_video_mcp.models import LOCAL_OWNER, utcnow
from test_http import TOKEN, http_server
from test_journal import journal, journal_settings, record, two_workers  # noqa: F401 (fixtures)
from test_consent import EXPENSIVE, apps_host
from test_stdio import server_env
from workers import workers

pytestmark = pytest.mark.anyio

PROMPT = "alice's secret storyboard: a red kite over the harbour"


@asynccontextmanager
async def signed_in(
    url: str, token: str, era: str = "auto", **options: object
) -> AsyncIterator[tuple[Client, httpx2.AsyncClient]]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=era, **options) as client:
            yield client, http


def provider_task_id(state_dir: Path, task_id: str) -> str:
    with sqlite3.connect(state_dir / "tasks.sqlite3") as db:
        return db.execute("SELECT provider_task_id FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0]


async def error_of(client: Client, tool: str, arguments: dict, hidden: str) -> dict:
    """The tool's error with ``hidden`` (the id asked about) blanked out."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    error = result.structured_content["error"]
    return error | {"message": error["message"].replace(hidden, "<id>")}


async def resource_error(client: Client, uri: str, hidden: str) -> str:
    with pytest.raises(Exception) as raised:
        await client.read_resource(uri)
    return str(raised.value).replace(hidden, "<id>")


async def test_another_users_task_is_exactly_like_a_missing_one(tmp_path, emulator, era, monkeypatch):
    monkeypatch.setattr(emulator.config, "video_long_side", 640)  # last frames big enough to chain from
    with auth_server() as issuer:
        env = server_env(emulator, tmp_path, KLING_MCP_OAUTH_ISSUER=issuer.issuer, KLING_MCP_HTTP_TOKEN=TOKEN)
        with http_server(env, log_dir=tmp_path) as server:
            alice_token, bob_token = issuer.token("alice", server.mcp_url), issuer.token("bob", server.mcp_url)
            async with signed_in(server.mcp_url, alice_token, era) as (alice, alice_http), \
                    signed_in(server.mcp_url, bob_token, era) as (bob, bob_http):  # fmt: skip
                made = await alice.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})
                task_id = made.structured_content["task_id"]
                done = (await wait_done(alice, task_id)).structured_content
                assert done["status"] == "succeeded", done
                theirs = provider_task_id(tmp_path / "state", task_id)
                missing, missing_provider_id = uuid.uuid4().hex, str(uuid.uuid4())

                # Every path, for bob: A's task and a missing one, side by side.
                pairs = {
                    "check_task": [
                        await error_of(bob, "check_task", {"task_id": hidden}, hidden) for hidden in (task_id, missing)
                    ],
                    "check_task by provider id": [
                        await error_of(bob, "check_task", {"task_id": hidden}, hidden) for hidden in (theirs, missing)
                    ],
                    "check_task with wait": [
                        await error_of(bob, "check_task", {"task_ids": [hidden], "wait_seconds": 1}, hidden)
                        for hidden in (task_id, missing)
                    ],
                    "chaining": [
                        await error_of(bob, "animate_image", {"image": f"task:{hidden}", "prompt": "on", "duration": 3}, hidden)
                        for hidden in (task_id, missing)
                    ],
                    "adoption": [
                        await error_of(bob, "check_task", {"task_id": hidden, "provider": "novita", "mode": "4k"}, hidden)
                        for hidden in (theirs, missing_provider_id)
                    ],
                    "task resource": [
                        await resource_error(bob, f"kling-video://tasks/{hidden}", hidden) for hidden in (task_id, missing)
                    ],
                    "clip resource": [
                        await resource_error(bob, f"kling-video://clips/{hidden}", hidden) for hidden in (task_id, missing)
                    ],
                    "preview resource": [
                        await resource_error(bob, f"kling-video://previews/{hidden}", hidden) for hidden in (task_id, missing)
                    ],
                    "assembly": [
                        await error_of(bob, "assemble_video", {"task_ids": [hidden, hidden]}, hidden)
                        for hidden in (task_id, missing)
                    ],
                }
                clip_name = Path(done["file_path"]).name
                downloads = [await bob_http.get(f"{server.base}/clips/{name}") for name in (clip_name, "missing.mp4")]
                previews = [await bob_http.get(f"{server.base}/previews/{name}.mp4") for name in (task_id, missing)]
                bob_list = (await bob.call_tool("list_tasks", {"limit": 100})).structured_content
                sent_for_bob = submit_count(emulator) - 1

                # Alice keeps every path.
                mine = await alice.call_tool("check_task", {"task_id": theirs})
                record = await alice.read_resource(f"kling-video://tasks/{task_id}")
                clip = await alice_http.get(done["file_uri"])
                chained = await alice.call_tool("animate_image", {"image": f"task:{task_id}", "prompt": "on", "duration": 3})
                listed = (await alice.call_tool("list_tasks", {})).structured_content["tasks"]

                # Idempotency is per user: bob's identical request is a task of his own.
                bobs = await bob.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})
                again = await alice.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})
                bobs_done = (await wait_done(bob, bobs.structured_content["task_id"])).structured_content
            log = server.log()

    for path, (foreign, absent) in pairs.items():
        assert foreign == absent, (path, foreign, absent)
        assert "alice" not in str(foreign) and PROMPT not in str(foreign), path
    assert pairs["check_task"][0]["code"] == "not_found" and pairs["adoption"][0]["code"] == "not_found"
    assert pairs["chaining"][0]["code"] == "validation_error" and "task '<id>' is unknown" in pairs["chaining"][0]["message"]
    assert downloads[0].status_code == downloads[1].status_code == 404 and downloads[0].text == downloads[1].text
    assert previews[0].status_code == previews[1].status_code == 404 and previews[0].text == previews[1].text
    assert pairs["assembly"][0]["code"] == "validation_error" and "no task '<id>'" in pairs["assembly"][0]["message"]
    assert bob_list["tasks"] == [] and task_id not in str(bob_list)
    assert sent_for_bob == 0  # nothing bob did reached the provider (adoption only asked about the task)

    assert not chained.is_error, chained.structured_content
    assert not mine.is_error and mine.structured_content["task_id"] == task_id
    assert [row["task_id"] for row in listed] == [chained.structured_content["task_id"], task_id]
    assert task_id in record.contents[0].text
    assert clip.status_code == 200 and hashlib.sha256(clip.content).hexdigest() == done["sha256"]

    assert bobs.structured_content["task_id"] != task_id and not bobs.structured_content["reused_existing"]
    assert again.structured_content["task_id"] == task_id and again.structured_content["reused_existing"]

    # Each user's clips (and their companions) in their own folder, and nothing else there
    # (an OAuth user's folder is "oauth@<sub>", kept apart from a token-file name's).
    clips = tmp_path / "clips"
    assert Path(done["file_path"]).parent == clips / "oauth@alice"
    assert Path(bobs_done["file_path"]).parent == clips / "oauth@bob"
    bobs_id = bobs_done["task_id"][:12]
    assert all(bobs_id in path.name for path in (clips / "oauth@bob").iterdir())
    assert not any(bobs_id in path.name for path in (clips / "oauth@alice").iterdir())
    assert not [path for path in clips.iterdir() if path.is_file()]  # nothing left in the shared folder

    # Logs name the user and the task, never a token.
    assert f"task {task_id} (user oauth:alice)" in log and "(user oauth:bob)" in log
    assert alice_token not in log and bob_token not in log


def token_file(folder: Path, *names: str) -> tuple[Path, dict[str, str]]:
    tokens = {name: f"{name}-token-{uuid.uuid4().hex}" for name in names}
    path = folder / "users.txt"
    path.write_text("".join(f"{name} {hashlib.sha256(token.encode()).hexdigest()}\n" for name, token in tokens.items()))
    return path, tokens


async def test_only_the_owner_can_answer_a_spend_confirmation(tmp_path, emulator, era):
    """A request awaiting a person's yes is its owner's: another user's confirm_spend,
    from their own screening room, gets "not found" exactly like a missing id, and sends nothing."""
    with auth_server() as issuer:
        env = server_env(
            emulator, tmp_path, KLING_MCP_OAUTH_ISSUER=issuer.issuer, KLING_MCP_HTTP_TOKEN=TOKEN, KLING_MCP_CONFIRM_ABOVE_USD="1"
        )
        with http_server(env, log_dir=tmp_path) as server:
            alice_token, bob_token = issuer.token("alice", server.mcp_url), issuer.token("bob", server.mcp_url)
            async with signed_in(server.mcp_url, alice_token, era, extensions=apps_host()) as (alice, _), \
                    signed_in(server.mcp_url, bob_token, era, extensions=apps_host()) as (bob, _):  # fmt: skip
                parked = (await alice.call_tool("generate_video", EXPENSIVE)).structured_content
                assert parked["status"] == "awaiting_confirmation", parked
                task_id, missing = parked["task_id"], uuid.uuid4().hex
                answers = [
                    await error_of(bob, "confirm_spend", {"task_id": hidden, "decision": decision}, hidden)
                    for decision in ("confirm", "decline")
                    for hidden in (task_id, missing)
                ]
                sent_for_bob = submit_count(emulator)
                still = (await alice.call_tool("check_task", {"task_id": task_id})).structured_content
                confirmed = (await alice.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"}))
    assert answers[0] == answers[1] and answers[2] == answers[3], answers
    assert answers[0]["code"] == "not_found" and "alice" not in str(answers)
    assert sent_for_bob == 0 and still["status"] == "awaiting_confirmation"
    assert not confirmed.is_error and submit_count(emulator) == 1, confirmed.structured_content


async def test_budgets_are_per_user_and_the_total_caps_the_server(tmp_path, emulator):
    """A 3 s 4K clip on Novita is estimated at $1.26: each user's $2 fits one; the $3 total, two."""
    users, tokens = token_file(tmp_path, "alice", "bob", "carol")
    env = server_env(
        emulator, tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN,
        KLING_MCP_BUDGET_USD="2", KLING_MCP_TOTAL_BUDGET_USD="3", KLING_MCP_PROVIDER="novita",
    )  # fmt: skip
    outcomes: dict[str, list[dict]] = {}
    with http_server(env, log_dir=tmp_path) as server:
        for name, prompts in (("alice", ["first", "second"]), ("bob", ["first"]), ("carol", ["first"])):
            async with signed_in(server.mcp_url, tokens[name]) as (client, _):
                outcomes[name] = [
                    (await client.call_tool("generate_video", {"prompt": f"{name}'s {prompt}", "duration": 3})).structured_content
                    for prompt in prompts
                ]
    alice_first, alice_second = outcomes["alice"]
    assert alice_first["status"] in ("queued", "running") and alice_first["estimated_cost_usd"] == 1.26
    assert alice_second["error"]["code"] == "budget_exceeded"
    assert "$0.74 of alice's $2.00 daily budget (KLING_MCP_BUDGET_USD)" in alice_second["error"]["message"]
    assert outcomes["bob"][0]["status"] in ("queued", "running")  # alice's spending is not bob's
    carol = outcomes["carol"][0]["error"]
    assert carol["code"] == "budget_exceeded"
    assert "$0.48 of the server's $3.00 daily budget for all users (KLING_MCP_TOTAL_BUDGET_USD)" in carol["message"]


# -- the journal, on both backends ---------------------------------------------------------------


async def test_the_journal_keeps_owners_apart_on_both_backends(journal):
    """Every query made for a caller sees only their tasks; ``None`` (the server's own) sees all."""
    alices = await journal.save(record("a" * 32, owner="alice", provider_task_id="p-alice"))
    bobs = await journal.save(record("b" * 32, owner="bob", provider_task_id="p-bob"))
    since = utcnow() - timedelta(hours=1)
    assert (await journal.get(alices.task_id, "alice")) == alices
    assert await journal.get(alices.task_id, "bob") is None
    assert await journal.get("p-alice", "bob") is None and (await journal.get("p-alice", "alice")) == alices
    assert (await journal.get(bobs.task_id)) == bobs
    # The same request by both: each finds only their own as a duplicate.
    assert (await journal.same_request_since(alices.fingerprint, since, "alice")).task_id == alices.task_id
    assert (await journal.same_request_since(alices.fingerprint, since, "bob")).task_id == bobs.task_id
    assert await journal.same_request_since(alices.fingerprint, since, "carol") is None
    assert [r.task_id for r in await journal.created_since(since, "bob")] == [bobs.task_id]
    assert {r.task_id for r in await journal.created_since(since)} == {alices.task_id, bobs.task_id}
    assert [r.task_id for r in await journal.recent(owner="alice")] == [alices.task_id]
    assert [r.task_id for r in await journal.recent("queued", owner="bob")] == [bobs.task_id]
    assert [r.task_id for r in await journal.recent(owner=None)] == [bobs.task_id, alices.task_id]
    # The provider's id finds the task whoever owns it: adoption decides what the caller hears.
    assert (await journal.find_provider_task("novita", "p-bob")).owner == "bob"


async def test_tasks_from_before_owners_are_the_local_users(tmp_path):
    """An embedded journal written before owners existed: its tasks belong to stdio's user."""
    path = tmp_path / "tasks.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version = 2;")
        old = record("c" * 32)
        db.execute(
            "INSERT INTO tasks (task_id, provider, provider_task_id, status, fingerprint, created_at, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (old.task_id, old.provider, old.provider_task_id, old.status, old.fingerprint, old.created_at.isoformat(),
             old.model_dump_json(exclude={"owner"})),
        )  # fmt: skip
    migrated = SqliteJournal(path)
    try:
        assert (await migrated.get(old.task_id, LOCAL_OWNER)).owner == LOCAL_OWNER
        assert await migrated.get(old.task_id, "alice") is None
    finally:
        await migrated.aclose()


async def test_two_workers_on_postgresql_keep_owners_apart(two_workers):
    first, second = two_workers
    await first.save(record("d" * 32, owner="alice"))
    assert (await second.get("d" * 32, "alice")).owner == "alice"
    assert await second.get("d" * 32, "bob") is None
    assert await second.recent(owner="bob") == []


async def test_several_workers_keep_users_apart_and_count_their_budgets_together(emulator, tmp_path, database_url):
    """Two --stateless workers on one PostgreSQL journal, users from one token file."""
    users, tokens = token_file(tmp_path, "alice", "bob")
    env = {"KLING_MCP_HTTP_TOKENS_FILE": str(users), "KLING_MCP_HTTP_TOKEN": TOKEN, "KLING_MCP_BUDGET_USD": "2"}
    with workers(emulator, tmp_path, database_url, count=2, **env) as (first, second):
        async with signed_in(first.mcp_url, tokens["alice"]) as (alice, _):
            task_id = (await alice.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})).structured_content["task_id"]
        async with signed_in(second.mcp_url, tokens["bob"]) as (bob, _):
            missing = uuid.uuid4().hex
            foreign = await error_of(bob, "check_task", {"task_id": task_id}, task_id)
            absent = await error_of(bob, "check_task", {"task_id": missing}, missing)
            bobs_list = (await bob.call_tool("list_tasks", {})).structured_content["tasks"]
            bobs = (await bob.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})).structured_content
        async with signed_in(second.mcp_url, tokens["alice"]) as (alice, _):
            done = (await wait_done(alice, task_id, timeout=60)).structured_content
            over = (await alice.call_tool("generate_video", {"prompt": "one more", "duration": 3})).structured_content
    assert foreign == absent and bobs_list == []
    assert bobs["task_id"] != task_id and not bobs["reused_existing"]
    assert done["status"] == "succeeded" and Path(done["file_path"]).parent == tmp_path / "clips" / "alice"
    assert over["error"]["code"] == "budget_exceeded" and "of alice's $2.00 daily budget" in over["error"]["message"]


async def test_over_sse_too_each_user_sees_only_their_tasks(tmp_path, emulator):
    users, tokens = token_file(tmp_path, "alice", "bob")
    env = server_env(emulator, tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN)
    listed: dict[str, list[str]] = {}
    with http_server(env, "--transport", "sse", log_dir=tmp_path) as server:
        for name in ("alice", "bob"):
            headers = {"Authorization": f"Bearer {tokens[name]}"}
            async with Client(sse_client(f"{server.base}/sse", headers=headers), mode="legacy") as client:
                if name == "alice":
                    made = await client.call_tool("generate_video", {"prompt": PROMPT, "duration": 3})
                rows = (await client.call_tool("list_tasks", {})).structured_content["tasks"]
                listed[name] = [row["task_id"] for row in rows]
    assert listed == {"alice": [made.structured_content["task_id"]], "bob": []}
