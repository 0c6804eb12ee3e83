"""After an ownership check, the record the check found is the one acted on (confirm, decline, check, adopt, assemble).

A caller's id may be a provider task id, and providers choose those: one may hand user B a
task id equal to user A's task id. The ownership check finds B's own record by its provider
id; everything after it must use that record's own task id, never the id B gave (which names
A's task), for confirm_spend (confirm and decline), check_task and assemble_video. And
adopting a provider task id links it only to the caller's own orphaned submit: a user who
adopted it first does not take it away from the orphan's owner, and a provider id linked to
another user's record is "not found" for anyone else, in the words of a missing id.

The installed server runs over streamable HTTP against the emulator, with users from a token
file; the emulator is made to hand out chosen task ids (its ``uuid`` module replaced), as a
provider could.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import submit_count, wait_done
from kling_video_mcp.emulator import novita as novita_flavor
from kling_video_mcp.emulator import wavespeed as wavespeed_flavor
from test_consent import EXPENSIVE, apps_host
from test_http import TOKEN, http_server
from test_stdio import server_env
from test_users import error_of, signed_in, token_file

pytestmark = pytest.mark.anyio

CHEAP_WAVESPEED = {"prompt": "bob's own paper boat", "duration": 3, "mode": "std", "provider": "wavespeed"}
"""Kling v3.0 Standard on WaveSpeedAI for 3 s: $0.25, below the $1 confirmation threshold."""


def hands_out(monkeypatch: pytest.MonkeyPatch, flavor_module: object, task_id: str) -> None:
    """Make an emulator flavor give its next tasks the id ``task_id`` (a 32-digit hex uuid)."""
    monkeypatch.setattr(flavor_module, "uuid", SimpleNamespace(uuid4=lambda: uuid.UUID(hex=task_id)))


def journaled(tmp_path: Path, task_id: str) -> dict[str, str | None]:
    with sqlite3.connect(tmp_path / "state" / "tasks.sqlite3") as db:
        owner, status, provider_task_id = db.execute(
            "SELECT owner, status, provider_task_id FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
    return {"owner": owner, "status": status, "provider_task_id": provider_task_id}


@pytest.mark.parametrize("decision", ["confirm", "decline"])
async def test_a_provider_id_equal_to_another_users_task_id_acts_on_the_callers_own_task(
    tmp_path, emulator, monkeypatch, decision
):
    users, tokens = token_file(tmp_path, "alice", "bob")
    env = server_env(
        emulator, tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN,
        KLING_MCP_CONFIRM_ABOVE_USD="1",
    )  # fmt: skip
    with http_server(env, log_dir=tmp_path) as server:
        async with signed_in(server.mcp_url, tokens["alice"], extensions=apps_host()) as (alice, _), \
                signed_in(server.mcp_url, tokens["bob"], extensions=apps_host()) as (bob, _):  # fmt: skip
            parked = (await alice.call_tool("generate_video", EXPENSIVE)).structured_content
            assert parked["status"] == "awaiting_confirmation", parked
            alices = parked["task_id"]

            hands_out(monkeypatch, wavespeed_flavor, alices)  # the provider gives bob alice's task id
            made = (await bob.call_tool("generate_video", CHEAP_WAVESPEED)).structured_content
            monkeypatch.undo()
            bobs = made["task_id"]
            assert journaled(tmp_path, bobs)["provider_task_id"] == alices and bobs != alices
            sent = submit_count(emulator)

            answered = await bob.call_tool("confirm_spend", {"task_id": alices, "decision": decision})
            checked = (await bob.call_tool("check_task", {"task_id": alices, "wait_seconds": 30})).structured_content
            assert checked["status"] == "succeeded", checked
            film = await bob.call_tool("assemble_video", {"task_ids": [alices, alices], "wait_seconds": 30})
            still = (await alice.call_tool("check_task", {"task_id": alices})).structured_content

    # Bob's answer acted on his own task: alice's request is still waiting, and nothing was sent.
    assert not answered.is_error, answered.structured_content
    assert answered.structured_content["task_id"] == bobs
    assert EXPENSIVE["prompt"] not in str(answered.structured_content)
    assert still["status"] == "awaiting_confirmation", still
    assert journaled(tmp_path, alices)["status"] == "awaiting_confirmation"
    assert submit_count(emulator) == sent
    # check_task and assemble_video found bob's task by its provider id, and kept to it.
    assert checked["task_id"] == bobs and EXPENSIVE["prompt"] not in str(checked)
    sources = film.structured_content["assembly"]["sources"]
    assert [source["task_id"] for source in sources] == [bobs, bobs], film.structured_content


async def test_adoption_links_only_the_callers_own_orphan(tmp_path, emulator, monkeypatch):
    """Carol's submit was cut off (the provider made the task, its answer was lost). Bob, who
    saw the provider's task id on a shared dashboard, adopts it first; carol can still adopt it
    into her orphaned record, and dave, who has no claim, hears what a missing id gets."""
    users, tokens = token_file(tmp_path, "bob", "carol", "dave")
    env = server_env(emulator, tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN)
    providers_id = uuid.uuid4()
    with http_server(env, log_dir=tmp_path) as server:
        async with signed_in(server.mcp_url, tokens["bob"]) as (bob, _), \
                signed_in(server.mcp_url, tokens["carol"]) as (carol, _), \
                signed_in(server.mcp_url, tokens["dave"]) as (dave, _):  # fmt: skip
            hands_out(monkeypatch, novita_flavor, providers_id.hex)
            emulator.inject_fault("novita", "submit", "created_then_status", status=502)
            lost_shot = {"prompt": "carol's lost shot", "duration": 3, "provider": "novita"}
            lost = (await carol.call_tool("generate_video", lost_shot)).structured_content
            monkeypatch.undo()
            assert lost["error"]["code"] == "unknown_outcome", lost
            orphan = lost["task_id"]
            adopt = {"task_id": str(providers_id), "provider": "novita", "mode": "4k"}

            bobs = (await bob.call_tool("check_task", adopt)).structured_content
            carols = (await carol.call_tool("check_task", adopt)).structured_content
            foreign = await error_of(dave, "check_task", adopt, str(providers_id))
            missing_id = str(uuid.uuid4())
            missing = await error_of(dave, "check_task", adopt | {"task_id": missing_id}, missing_id)
            done = (await wait_done(carol, orphan)).structured_content

    assert bobs["task_id"] not in (None, orphan), bobs  # bob adopted it as a task of his own
    assert carols["task_id"] == orphan and carols.get("error") is None, carols  # carol's orphan got it
    assert journaled(tmp_path, orphan)["provider_task_id"] == str(providers_id)
    assert done["status"] == "succeeded" and done["estimated_cost_usd"] == 1.26, done
    assert foreign == missing and foreign["code"] == "not_found", (foreign, missing)
