"""Long renders as MCP tasks, through ``mcp.Client`` in both protocol eras, on the wire.

``auto`` negotiates 2026-07-28 and opts in to the ``io.modelcontextprotocol/tasks`` extension
(SEP-2663): the server answers the call with a task by itself. ``legacy`` speaks 2025-11-25
and asks for a task with the ``task`` param (SEP-1686). Every request here is raw JSON-RPC
(``tools/call``, ``tasks/get``, ``tasks/result``, ``tasks/list``, ``tasks/update``,
``tasks/cancel``) sent through the SDK client's session, so the tests see exactly what a
client gets. The SDK's session validates a 2025-11-25 ``tools/call`` result as a
``CallToolResult``, which a ``CreateTaskResult`` is not: that one call goes through the
session's dispatcher, one level lower, unvalidated.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client import advertise
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, Request, ResourceLink, TaskStatusNotificationParams
from pydantic import TypeAdapter

from conftest import make_settings
from helpers import submit_count, submits
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.surface.auth import required_scopes
from kling_video_mcp.surface.http import HttpConfig, build_app
from test_consent import EXPENSIVE, Person
from test_http import TOKEN, http_server
from test_stdio import server_env
from test_users import signed_in, token_file
from workers import workers

pytestmark = pytest.mark.anyio

TASKS = "io.modelcontextprotocol/tasks"
RELATED_TASK = "io.modelcontextprotocol/related-task"
RAW = TypeAdapter(dict[str, Any])
SLOW = {"prompt": "a slow sunrise over the bay [[render:40]]", "duration": 3, "provider": "novita"}
"""Renders for 2 s at the emulator's clock: long enough to be seen working."""
ENDLESS = {"prompt": "never ends [[slow]]", "duration": 3, "provider": "wavespeed"}
SCOPED_USERS = {"viewer": "video:read", "maker": "video:generate"}


class RawRequest(Request[dict[str, Any] | None, str]):
    """Any JSON-RPC request; the session adds the 2026-07-28 envelope to it where it belongs."""


async def ask(client: Client, method: str, **params: Any) -> dict[str, Any]:
    """Send ``method`` with ``params`` as they go on the wire; the raw result."""
    return await client.session.send_request(RawRequest(method=method, params=params), RAW)


async def refused(client: Client, method: str, **params: Any) -> MCPError:
    with pytest.raises(MCPError) as raised:
        await ask(client, method, **params)
    return raised.value


def opt_in(era: str) -> list[ClientExtension]:
    """A 2026-07-28 client lists the tasks extension; a 2025-11-25 one asks per call instead."""
    return [advertise(TASKS)] if era == "auto" else []


async def call_as_task(client: Client, era: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call ``tool`` as a task-aware client of ``era`` does; the raw ``tools/call`` result."""
    if era == "auto":
        return await ask(client, "tools/call", name=tool, arguments=arguments)
    params = {"name": tool, "arguments": arguments, "task": {"ttl": 60_000}}
    return await client.session._dispatcher.send_raw_request("tools/call", params, None)


async def create(client: Client, era: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The task a call made (the ``Task`` fields, in either era's shape)."""
    answer = await call_as_task(client, era, tool, arguments)
    if era == "auto":
        assert answer["resultType"] == "task", answer
        return answer
    assert set(answer) == {"task", "_meta"}, answer
    return answer["task"]


def poll_seconds(task: dict[str, Any]) -> float:
    return task.get("pollIntervalMs", task.get("pollInterval", 100)) / 1000


async def until(client: Client, task_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``tasks/get`` at the task's poll interval until its status is one of ``statuses``."""
    with anyio.fail_after(timeout):
        while (task := await ask(client, "tasks/get", taskId=task_id))["status"] not in statuses:
            await anyio.sleep(min(poll_seconds(task), 0.5))
    return task


def journaled(settings: Settings, task_id: str) -> bool:
    with sqlite3.connect(settings.state_dir / "tasks.sqlite3") as db:
        return db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is not None


def clip_link(result: CallToolResult) -> ResourceLink:
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    return link


# -- negotiation ---------------------------------------------------------------------------------


async def test_tasks_are_offered_in_each_eras_own_way(settings, era):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        capabilities = client.server_capabilities
    if era == "auto":
        assert TASKS in (capabilities.extensions or {})
        assert all(tool.execution is None for tool in tools.values())  # the 2026 extension has no taskSupport
    else:
        assert capabilities.tasks is not None and capabilities.tasks.requests.tools.call is not None
        assert capabilities.tasks.list is not None and capabilities.tasks.cancel is not None
        optional = {name for name, tool in tools.items() if tool.execution and tool.execution.task_support == "optional"}
        assert optional == {"generate_video", "animate_image", "assemble_video"}


async def test_a_client_that_does_not_opt_in_gets_todays_results(settings, era):
    async with Client(build_server(settings), mode=era) as client:
        answer = await ask(client, "tools/call", name="generate_video", arguments=SLOW)
        plain = await client.call_tool("generate_video", {**SLOW, "prompt": "another sunrise [[render:40]]"})
    assert "content" in answer and answer.get("resultType", "complete") == "complete", answer
    assert answer["structuredContent"]["status"] == "queued" and not plain.is_error
    assert plain.structured_content["status"] == "queued" and plain.structured_content["task_id"]


# -- a task from start to clip -------------------------------------------------------------------


async def test_a_render_runs_as_a_task_from_start_to_its_clip(settings, era):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        with anyio.fail_after(1.5):  # wait_seconds is not waited for: a task returns at once
            task = await create(client, era, "generate_video", {**SLOW, "wait_seconds": 30})
        task_id = task["taskId"]
        assert task["status"] == "working" and journaled(settings, task_id)  # journaled before the answer
        running = await ask(client, "tasks/get", taskId=task_id)
        done = await until(client, task_id, "completed")
        result = done["result"] if era == "auto" else await ask(client, "tasks/result", taskId=task_id)
        checked = await client.call_tool("check_task", {"task_id": task_id})

    assert running["status"] == "working" and running["taskId"] == task_id
    assert any(words in running["statusMessage"] for words in ("queued at the provider", "rendering"))
    ttl = running["ttlMs"] if era == "auto" else running["ttl"]
    assert ttl > settings.task_ceiling_seconds * 1000 and poll_seconds(running) > 0
    assert done["createdAt"] == task["createdAt"] and done["lastUpdatedAt"] >= running["lastUpdatedAt"]
    clip = CallToolResult.model_validate(result)
    assert not clip.is_error and clip.structured_content["status"] == "succeeded"
    assert clip.structured_content["task_id"] == task_id and Path(clip.structured_content["file_path"]).is_file()
    assert clip_link(clip).mime_type == "video/mp4" and clip_link(clip).uri == checked.structured_content["file_uri"]
    assert any(isinstance(block, ImageContent) for block in clip.content)  # the contact sheet
    assert clip.structured_content == checked.structured_content  # exactly what check_task gives
    if era == "legacy":
        assert result["_meta"][RELATED_TASK] == {"taskId": task_id}


async def test_a_finished_tasks_result_makes_missing_companions_again(settings, era):
    """Companion files deleted after delivery come back when the task's result is read as a task."""
    companions = ("last_frame_path", "contact_sheet_path", "sidecar_path")
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        task_id = (await create(client, era, "generate_video", SLOW))["taskId"]
        done = await until(client, task_id, "completed")
        first = (done["result"] if era == "auto" else await ask(client, "tasks/result", taskId=task_id))["structuredContent"]
        for field in companions:
            Path(first[field]).unlink()
        again = await ask(client, "tasks/get" if era == "auto" else "tasks/result", taskId=task_id)
    read = (again["result"] if era == "auto" else again)["structuredContent"]
    assert all(Path(read[field]).is_file() for field in companions), read


async def test_tasks_result_waits_for_the_end(settings):
    async with Client(build_server(settings), mode="legacy") as client:
        task = await create(client, "legacy", "generate_video", SLOW)
        result = CallToolResult.model_validate(await ask(client, "tasks/result", taskId=task["taskId"]))
    assert result.structured_content["status"] == "succeeded" and clip_link(result)


async def test_a_failed_render_is_failed_in_2025_and_a_completed_error_in_2026(settings, era):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        task = await create(client, era, "generate_video", {**SLOW, "prompt": "a storm [[fail:moderation]]"})
        ended = await until(client, task["taskId"], "completed", "failed")
        result = ended["result"] if era == "auto" else await ask(client, "tasks/result", taskId=task["taskId"])
    # SEP-2663: "failed" is for JSON-RPC errors only; SEP-1686 counts an isError result as failed.
    assert ended["status"] == ("completed" if era == "auto" else "failed"), ended
    failed = CallToolResult.model_validate(result)
    assert failed.is_error and failed.structured_content["error"]["code"] == "content_policy"


async def test_an_assembly_and_a_chained_shot_run_as_tasks(settings, era):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        shots = []
        for prompt in ("a red kite rises", "the kite dives"):
            task = await create(client, era, "generate_video", {"prompt": prompt, "duration": 3, "provider": "sandbox"})
            shots.append((await until(client, task["taskId"], "completed"))["taskId"])
        chained = await create(client, era, "animate_image", {"image": f"task:{shots[0]}", "prompt": "it lands", "provider": "sandbox"})
        film = await create(client, era, "assemble_video", {"task_ids": shots, "title": "Kite"})
        chained_done = await until(client, chained["taskId"], "completed")
        film_done = await until(client, film["taskId"], "completed")
    assert chained_done["status"] == film_done["status"] == "completed"
    assert "Final cut 'Kite' of 2 shots" in film_done["statusMessage"]


# -- calls that make no task ---------------------------------------------------------------------


async def test_a_call_that_makes_no_task_is_answered_without_one(settings, era, emulator):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        if era == "auto":  # the server decides: no task to make, so the plain result
            priced = await call_as_task(client, era, "generate_video", {**SLOW, "dry_run": True})
            bad = await call_as_task(client, era, "generate_video", {**SLOW, "duration": 20})
            assert "resultType" not in priced or priced["resultType"] == "complete"
            assert priced["structuredContent"]["dry_run"] is True and "task" not in priced
            assert bad["isError"] and bad["structuredContent"]["error"]["code"] == "validation_error"
        else:  # a task was asked for and cannot be made: a JSON-RPC error with the tool's own words
            with pytest.raises(MCPError) as raised:
                await call_as_task(client, era, "generate_video", {**SLOW, "duration": 20})
            assert raised.value.code == -32602 and "duration" in raised.value.message
            assert raised.value.data["error"]["code"] == "validation_error"
            with pytest.raises(MCPError) as raised:
                await call_as_task(client, era, "check_task", {"task_id": uuid.uuid4().hex})
            assert raised.value.code == -32601  # check_task's taskSupport is "forbidden" (absent)
    assert submit_count(emulator) == 0


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_stops_watching_and_says_the_provider_may_still_bill(settings, era, emulator):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        task = await create(client, era, "generate_video", ENDLESS)
        task_id = task["taskId"]
        watched = len(emulator.requests("wavespeed"))
        await anyio.sleep(1.0)
        watched = len(emulator.requests("wavespeed")) - watched
        answer = await ask(client, "tasks/cancel", taskId=task_id)
        cancelled = await ask(client, "tasks/get", taskId=task_id)
        await anyio.sleep(0.3)  # a poll already on its way when the cancel came may still land
        polls = len(emulator.requests("wavespeed"))
        await anyio.sleep(1.0)  # the server polled every few tens of ms while it watched the task
        polls_after = len(emulator.requests("wavespeed"))
        checked = await client.call_tool("check_task", {"task_id": task_id})
        if era == "auto":
            again = await ask(client, "tasks/cancel", taskId=task_id)  # an ack, for any id
            assert {key for key in again if key != "_meta"} == {"resultType"}
        else:
            assert (await refused(client, "tasks/cancel", taskId=task_id)).code == -32602  # already terminal
            result = CallToolResult.model_validate(await ask(client, "tasks/result", taskId=task_id))
            assert result.is_error and result.structured_content["error"]["code"] == "cancelled"
    if era == "auto":
        assert {key for key in answer if key != "_meta"} == {"resultType"}  # an empty ack
    else:
        assert answer["status"] == "cancelled" and answer["taskId"] == task_id
    assert cancelled["status"] == "cancelled"
    assert "cannot stop a render at WaveSpeedAI, so it may still finish it and bill it" in cancelled["statusMessage"]
    assert watched >= 2 and polls_after == polls  # watched (polled) until the cancel, no longer after it
    report = checked.structured_content
    assert report["status"] == "failed" and report["error"]["code"] == "cancelled"
    assert report["message"].startswith("Cancelled: Kling v3.0")


# -- owners, restarts, workers -------------------------------------------------------------------


async def test_another_users_task_is_not_found_through_tasks(tmp_path, emulator, era):
    users, tokens = token_file(tmp_path, "alice", "bob")
    env = server_env(emulator, tmp_path, KLING_MCP_HTTP_TOKENS_FILE=str(users), KLING_MCP_HTTP_TOKEN=TOKEN)
    with http_server(env, log_dir=tmp_path) as server:
        async with signed_in(server.mcp_url, tokens["alice"], era, extensions=opt_in(era)) as (alice, _), \
                signed_in(server.mcp_url, tokens["bob"], era, extensions=opt_in(era)) as (bob, _):  # fmt: skip
            task_id = (await create(alice, era, "generate_video", ENDLESS))["taskId"]
            missing = uuid.uuid4().hex
            methods = ["tasks/get"] + (["tasks/result", "tasks/cancel"] if era == "legacy" else [])
            answers = {
                method: [
                    (error.code, error.message.replace(hidden, "<id>"))
                    for hidden in (task_id, missing)
                    if (error := await refused(bob, method, taskId=hidden))
                ]
                for method in methods
            }
            if era == "auto":  # acks for any id, and nothing done to alice's task
                await ask(bob, "tasks/cancel", taskId=task_id)
                consent = {"action": "accept", "content": {"confirm": True}}
                await ask(bob, "tasks/update", taskId=task_id, inputResponses={"spend-consent": consent})
            else:
                listed = await ask(bob, "tasks/list")
                assert task_id not in str(listed) and listed["tasks"] == []
                assert [task["taskId"] for task in (await ask(alice, "tasks/list"))["tasks"]] == [task_id]
            still = await ask(alice, "tasks/get", taskId=task_id)
    for method, (foreign, absent) in answers.items():
        assert foreign == absent and foreign[0] == -32602, (method, foreign, absent)
        assert "No task '<id>'" in foreign[1] and "alice" not in foreign[1]
    assert still["status"] == "working"


async def test_a_broken_task_id_is_refused_as_the_tools_refuse_it(settings, era):
    broken = "bad\x00id"  # PostgreSQL could not even compare it: refused before the journal
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        got = await refused(client, "tasks/get", taskId=broken)
        if era == "auto":
            cancelled = await ask(client, "tasks/cancel", taskId=broken)  # an ack, for any id
            assert {key for key in cancelled if key != "_meta"} == {"resultType"}
        else:
            assert (await refused(client, "tasks/cancel", taskId=broken)).code == -32602
            assert (await refused(client, "tasks/result", taskId=broken)).code == -32602
    assert got.code == -32602 and "printable ASCII" in str(got.message) + str(got.data)


async def test_cancelling_or_answering_for_a_task_needs_the_scope_that_spends(tmp_path):
    """``tasks/cancel`` and ``tasks/update`` (a yes sends a request) need ``video:generate``;
    ``tasks/get``, ``tasks/result`` and ``tasks/list`` need ``video:read``, as ``check_task`` does."""
    users = tmp_path / "users.txt"
    lines = [f"{name} {hashlib.sha256(f'{name}-token'.encode()).hexdigest()} {scope}" for name, scope in SCOPED_USERS.items()]
    users.write_text("\n".join(lines) + "\n")
    settings = Settings(output_dir=tmp_path / "clips", state_dir=tmp_path / "state", http_tokens_file=users)
    app = build_app(settings, HttpConfig())
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:

        async def status(name: str, method: str) -> int:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"taskId": "x"}}
            return (await http.post("/mcp", json=body, headers={"Authorization": f"Bearer {name}-token"})).status_code

        viewer = [await status("viewer", method) for method in ("tasks/cancel", "tasks/update")]
        maker = [await status("maker", method) for method in ("tasks/get", "tasks/result", "tasks/list")]
    assert viewer == [403, 403] and maker == [403, 403, 403]
    needed = {
        method: required_scopes(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode())
        for method in ("tasks/get", "tasks/result", "tasks/list", "tasks/update", "tasks/cancel")
    }
    assert needed == {
        "tasks/get": {"video:read"}, "tasks/result": {"video:read"}, "tasks/list": {"video:read"},
        "tasks/update": {"video:generate"}, "tasks/cancel": {"video:generate"},
    }  # fmt: skip


async def test_a_task_made_before_a_restart_answers_after_it(settings, era):
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:
        task_id = (await create(client, era, "generate_video", SLOW))["taskId"]
    async with Client(build_server(settings), mode=era, extensions=opt_in(era)) as client:  # a new server process's
        after = await ask(client, "tasks/get", taskId=task_id)
        done = await until(client, task_id, "completed")
    assert after["taskId"] == task_id and after["status"] in ("working", "completed")
    assert done["status"] == "completed"


async def test_any_worker_answers_for_a_task(tmp_path, emulator, database_url):
    """Two ``--stateless`` workers on one PostgreSQL journal: made on one, followed on the other."""

    @asynccontextmanager
    async def connected(url: str) -> AsyncIterator[Client]:
        async with httpx2.AsyncClient(timeout=60) as http:
            async with Client(streamable_http_client(url, http_client=http), extensions=[advertise(TASKS)]) as client:
                yield client

    with workers(emulator, tmp_path, database_url, count=2) as (first, second):
        async with connected(first.mcp_url) as one, connected(second.mcp_url) as other:
            task_id = (await create(one, "auto", "generate_video", SLOW))["taskId"]
            seen = await ask(other, "tasks/get", taskId=task_id)
            done = await until(other, task_id, "completed", timeout=60)
    assert seen["status"] == "working"
    assert clip_link(CallToolResult.model_validate(done["result"])).mime_type == "video/mp4"


# -- a person's yes ------------------------------------------------------------------------------


@pytest.fixture
def consent_settings(tmp_path: Path, emulator) -> Settings:
    return make_settings(tmp_path, emulator, confirm_above_usd=1.0)


@pytest.mark.parametrize(("action", "confirm"), [("accept", True), ("decline", None)], ids=["yes", "no"])
async def test_a_spend_is_input_required_and_answered_through_tasks_update(consent_settings, emulator, action, confirm):
    person = Person("accept", {"confirm": True})  # declares elicitation; must never be asked inline
    async with Client(build_server(consent_settings), extensions=opt_in("auto"), elicitation_callback=person) as client:
        task = await create(client, "auto", "generate_video", EXPENSIVE)
        waiting = await ask(client, "tasks/get", taskId=task["taskId"])
        sent_while_waiting = submit_count(emulator)
        content = {"confirm": confirm} if confirm is not None else None
        answer = {"action": action, **({"content": content} if content else {})}
        ack = await ask(client, "tasks/update", taskId=task["taskId"], inputResponses={"spend-consent": answer})
        ended = await until(client, task["taskId"], "completed")
    assert task["status"] == "input_required" and "$4.20" in task["statusMessage"]
    request = waiting["inputRequests"]["spend-consent"]
    assert request["method"] == "elicitation/create" and request["params"]["mode"] == "form"
    assert request["params"]["message"].splitlines()[0] == "Render 10 s of Kling v3.0 4K on WaveSpeedAI for about $4.20?"
    assert set(request["params"]["requestedSchema"]["properties"]) == {"confirm"}
    assert sent_while_waiting == 0 and person.questions == []
    assert {key for key in ack if key != "_meta"} == {"resultType"}
    result = CallToolResult.model_validate(ended["result"])
    if action == "accept":
        assert not result.is_error and clip_link(result) and len(submits(emulator, "wavespeed")) == 1
    else:
        assert result.is_error and result.structured_content["error"]["code"] == "declined"
        assert submit_count(emulator) == 0


async def test_a_spend_is_asked_through_tasks_result_in_2025(consent_settings, emulator):
    person = Person("accept", {"confirm": True})
    async with Client(build_server(consent_settings), mode="legacy", elicitation_callback=person) as client:
        task = await create(client, "legacy", "generate_video", EXPENSIVE)
        waiting = await ask(client, "tasks/get", taskId=task["taskId"])
        sent_while_waiting = submit_count(emulator)
        result = CallToolResult.model_validate(await ask(client, "tasks/result", taskId=task["taskId"]))
    assert task["status"] == waiting["status"] == "input_required" and sent_while_waiting == 0
    [question] = person.questions
    assert question.message.startswith("Render 10 s of Kling v3.0 4K on WaveSpeedAI for about $4.20?")
    assert question.meta[RELATED_TASK] == {"taskId": task["taskId"]}
    assert not result.is_error and clip_link(result) and len(submits(emulator, "wavespeed")) == 1


# -- 2025-11-25: listing and status notifications ------------------------------------------------


class TaskStatusWatcher(ClientExtension):
    """Collects ``notifications/tasks/status`` (a 2025-11-25 client's optional status stream)."""

    identifier = "test.kling-video-mcp/task-status"

    def __init__(self) -> None:
        self.seen: list[TaskStatusNotificationParams] = []

    def notifications(self) -> list[NotificationBinding[Any]]:
        async def collect(params: TaskStatusNotificationParams) -> None:
            self.seen.append(params)

        return [NotificationBinding(method="notifications/tasks/status", params_type=TaskStatusNotificationParams, handler=collect)]


async def test_status_changes_are_notified_and_tasks_are_listed(settings):
    watcher = TaskStatusWatcher()
    async with Client(build_server(settings), mode="legacy", extensions=[watcher]) as client:
        first = (await create(client, "legacy", "generate_video", SLOW))["taskId"]
        second = (await create(client, "legacy", "generate_video", {**SLOW, "prompt": "a second dawn [[render:40]]"}))["taskId"]
        await ask(client, "tasks/result", taskId=first)
        with anyio.fail_after(10):
            while not any(note.task_id == first and note.status == "completed" for note in watcher.seen):
                await anyio.sleep(0.05)
        listed = await ask(client, "tasks/list")
        with pytest.raises(MCPError) as raised:
            await ask(client, "tasks/list", cursor="not-a-cursor")
    assert [task["taskId"] for task in listed["tasks"]] == [second, first] and "nextCursor" not in listed
    completed = [note for note in watcher.seen if note.task_id == first and note.status == "completed"]
    assert len(completed) == 1 and "Done:" in (completed[0].status_message or "")
    assert raised.value.code == -32602
