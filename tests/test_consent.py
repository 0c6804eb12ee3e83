"""A person says yes before money is spent (``KLING_MCP_CONFIRM_ABOVE_USD``), through ``mcp.Client`` in both eras.

Three kinds of client: one that answers elicitation (Claude Code, VS Code), an MCP Apps host
without elicitation (Claude Desktop: the screening room's Confirm/Decline call the app-only
``confirm_spend``), and one that can do neither. "Nothing was sent" is asserted at the
emulator: no task-creating POST reached any provider.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import ElicitRequestParams, ElicitResult

from conftest import make_settings
from helpers import eventually, submit_count, submits, wait_done
from test_stdio import console_script, server_env
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.server import build_server

pytestmark = pytest.mark.anyio

THRESHOLD = 1.0
EXPENSIVE = {"prompt": "a lighthouse in a storm, waves crash", "duration": 10, "provider": "wavespeed"}
"""Kling v3.0 4K on WaveSpeedAI for 10 s: $4.20, above the threshold."""
CHEAP = {"prompt": "a paper boat on a pond", "duration": 5, "mode": "std", "provider": "novita"}
"""Kling v3.0 Standard for 5 s: $0.42, below it."""


def apps_host() -> list:
    """What an MCP Apps host advertises (``mcp.server.apps.client_supports_apps`` checks the MIME type)."""
    return [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]


class Person:
    """An elicitation callback: answers every question with ``action`` and remembers the questions."""

    def __init__(self, action: str, content: dict | None = None) -> None:
        self.action = action
        self.content = content
        self.questions: list[ElicitRequestParams] = []

    async def __call__(self, context: object, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(params)
        return ElicitResult(action=self.action, content=self.content)


@pytest.fixture
def settings(tmp_path: Path, emulator) -> Settings:
    return make_settings(tmp_path, emulator, confirm_above_usd=THRESHOLD)


@pytest.fixture
async def app_client(settings: Settings, era: str) -> AsyncIterator[Client]:
    """Claude Desktop's kind of client: renders the screening room, cannot answer elicitation."""
    async with Client(build_server(settings), mode=era, extensions=apps_host()) as connected:
        yield connected


async def awaiting(app_client: Client, arguments: dict = EXPENSIVE) -> dict:
    result = await app_client.call_tool("generate_video", arguments)
    assert not result.is_error, result.content
    report = result.structured_content
    assert report["status"] == "awaiting_confirmation", report
    return report


# -- elicitation --------------------------------------------------------------------------


async def test_accepting_sends_the_request_after_asking_once(settings, emulator, era):
    person = Person("accept", {"confirm": True})
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        result = await client.call_tool("generate_video", EXPENSIVE)
        assert not result.is_error, result.content
        report = result.structured_content
        assert report["status"] == "queued" and report["estimated_cost_usd"] == pytest.approx(4.20)
        assert any("The person confirmed spending about $4.20" in note for note in report["notes"])
        [question] = person.questions
        assert question.message.splitlines()[0] == "Render 10 s of Kling v3.0 4K on WaveSpeedAI for about $4.20?"
        assert "a lighthouse in a storm" in question.message
        assert set(question.requested_schema["properties"]) == {"confirm"}
        [sent] = submits(emulator, "wavespeed")
        assert sent["json"]["prompt"] == EXPENSIVE["prompt"]
        assert (await wait_done(client, report["task_id"])).structured_content["status"] == "succeeded"


async def test_a_repeat_that_spends_nothing_is_not_asked_about(settings, emulator, era, png_file):
    person = Person("accept", {"confirm": True})
    animate = {**EXPENSIVE, "image": str(png_file), "duration": 5}
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        for tool, arguments in (("generate_video", EXPENSIVE), ("animate_image", animate)):
            first = await client.call_tool(tool, arguments)
            again = await client.call_tool(tool, arguments)
            assert again.structured_content["reused_existing"], again.content
            assert again.structured_content["task_id"] == first.structured_content["task_id"]
    assert len(person.questions) == 2  # once per tool, not for the repeats
    assert len(submits(emulator, "wavespeed")) == 2


@pytest.mark.parametrize(
    ("action", "content", "words"),
    [("decline", None, "declined"), ("cancel", None, "dismissed"), ("accept", {"confirm": False}, "declined")],
    ids=["decline", "cancel", "accept-unticked"],
)
async def test_no_from_the_person_sends_nothing(settings, emulator, era, action, content, words):
    person = Person(action, content)
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        result = await client.call_tool("generate_video", EXPENSIVE)
        assert result.is_error
        error = result.structured_content["error"]
        assert error["code"] == "declined" and f"The person {words}" in error["message"] and "$4.20" in error["message"]
        assert len(person.questions) == 1
        listed = await client.call_tool("list_tasks", {})
        assert listed.structured_content["tasks"] == []  # not even journaled
    assert submit_count(emulator) == 0


async def test_the_answer_cannot_come_from_the_arguments(settings, emulator, era):
    person = Person("decline")
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name in ("generate_video", "animate_image"):
            assert "consent" not in tools[name].input_schema["properties"]
        forged = {**EXPENSIVE, "consent": {"confirm": True}, "confirm": True}
        result = await client.call_tool("generate_video", forged)
    assert result.structured_content["error"]["code"] == "declined" and len(person.questions) == 1
    assert submit_count(emulator) == 0


async def test_below_the_threshold_or_dry_run_never_asks(settings, emulator, era):
    person = Person("decline")
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        priced = await client.call_tool("generate_video", {**EXPENSIVE, "dry_run": True})
        assert not priced.is_error and priced.structured_content["dry_run"] is True
        assert "they will be asked before it is sent" in priced.structured_content["message"]
        assert submit_count(emulator) == 0

        cheap = await client.call_tool("generate_video", CHEAP)
        assert not cheap.is_error and cheap.structured_content["status"] == "queued"
    assert person.questions == []
    assert len(submits(emulator, "novita")) == 1


async def test_a_refused_request_is_not_asked_about(settings, emulator, era):
    """Broken rules or a cap are reported as such; the person is not bothered for a request that cannot go."""
    person = Person("accept", {"confirm": True})
    async with Client(build_server(settings), mode=era, elicitation_callback=person) as client:
        broken = await client.call_tool("generate_video", {**EXPENSIVE, "prompt": None})
        capped = await client.call_tool("generate_video", {**EXPENSIVE, "max_cost_usd": 2})
    assert broken.structured_content["error"]["code"] == "validation_error"
    assert capped.structured_content["error"]["code"] == "budget_exceeded"
    assert person.questions == [] and submit_count(emulator) == 0


async def test_asking_works_over_stdio_from_the_environment_variable(emulator, tmp_path, era):
    """The real console script, configured by KLING_MCP_CONFIRM_ABOVE_USD, over the stdio transport."""
    env = server_env(emulator, tmp_path, KLING_MCP_CONFIRM_ABOVE_USD="1")
    person = Person("accept", {"confirm": True})
    params = StdioServerParameters(command=console_script(), args=[], env=env)
    async with Client(params, mode=era, elicitation_callback=person) as client:
        result = await client.call_tool("generate_video", EXPENSIVE)
        assert not result.is_error, result.content
        assert "confirm_spend" not in {tool.name for tool in (await client.list_tools()).tools}
    assert len(person.questions) == 1 and len(submits(emulator, "wavespeed")) == 1


# -- a client that can do neither -----------------------------------------------------------


async def test_a_client_that_can_neither_ask_nor_show_is_refused(client, emulator, png_file):
    result = await client.call_tool("animate_image", {**EXPENSIVE, "image": str(png_file)})
    assert result.is_error
    error = result.structured_content["error"]
    assert error["code"] == "declined"
    assert "KLING_MCP_CONFIRM_ABOVE_USD" in error["message"] and "$1.00" in error["message"]
    assert "$4.20" in error["message"] and "raise" in error["message"]
    assert (await client.call_tool("list_tasks", {})).structured_content["tasks"] == []
    assert submit_count(emulator) == 0


# -- the screening room (MCP Apps, no elicitation) -------------------------------------------


async def test_screening_room_confirm_submits_once(app_client, emulator):
    report = await awaiting(app_client)
    task_id = report["task_id"]
    assert report["estimated_cost_usd"] == pytest.approx(4.20) and report["confirm_by"]
    assert "must confirm it in the screening room" in report["message"]
    assert submit_count(emulator) == 0

    # Asking again, or waiting on it, neither pays twice nor hangs: nothing moves it but the person.
    again = await app_client.call_tool("generate_video", {**EXPENSIVE, "wait_seconds": 50})
    assert again.structured_content["task_id"] == task_id and again.structured_content["reused_existing"]
    with anyio.fail_after(10):
        checked = await app_client.call_tool("check_task", {"task_id": task_id, "wait_seconds": 50})
    assert checked.structured_content["status"] == "awaiting_confirmation" and submit_count(emulator) == 0
    listed = await app_client.call_tool("list_tasks", {"status": "awaiting_confirmation"})
    assert [row["task_id"] for row in listed.structured_content["tasks"]] == [task_id]

    confirmed = await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"})
    assert not confirmed.is_error, confirmed.content
    assert confirmed.structured_content["status"] in ("queued", "running")
    assert len(submits(emulator, "wavespeed")) == 1

    twice = await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"})
    assert twice.structured_content["task_id"] == task_id and not twice.is_error
    late_no = await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "decline"})
    assert late_no.structured_content["status"] != "failed"  # a sent request is not undone by a late Decline
    assert (await wait_done(app_client, task_id)).structured_content["status"] == "succeeded"
    assert len(submits(emulator, "wavespeed")) == 1


async def test_screening_room_confirms_concurrently_once(app_client, emulator):
    task_id = (await awaiting(app_client))["task_id"]
    results = []

    async def click() -> None:
        results.append(await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"}))

    async with anyio.create_task_group() as task_group:
        for _ in range(3):
            task_group.start_soon(click)
    assert all(not result.is_error for result in results), [r.content for r in results]
    assert len(submits(emulator, "wavespeed")) == 1


async def test_screening_room_decline_ends_it_as_declined(app_client, emulator):
    task_id = (await awaiting(app_client))["task_id"]
    declined = await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "decline"})
    assert declined.is_error
    report = declined.structured_content
    assert report["status"] == "failed" and report["error"]["code"] == "declined"
    assert report["message"].startswith("Declined:")

    confirm_after = await app_client.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"})
    assert confirm_after.is_error and confirm_after.structured_content["error"]["code"] == "declined"
    assert submit_count(emulator) == 0

    # A declined request is no duplicate: asking again asks the person again.
    asked_again = await awaiting(app_client)
    assert asked_again["task_id"] != task_id


async def test_budget_is_held_while_waiting_and_freed_by_a_decline(tmp_path, emulator, era):
    settings = make_settings(tmp_path, emulator, confirm_above_usd=THRESHOLD, budget_usd=5.0)
    async with Client(build_server(settings), mode=era, extensions=apps_host()) as client:
        first = await awaiting(client)  # $4.20 held
        other = {**EXPENSIVE, "prompt": "a different storm"}
        refused = await client.call_tool("generate_video", other)
        assert refused.structured_content["error"]["code"] == "budget_exceeded"
        await client.call_tool("confirm_spend", {"task_id": first["task_id"], "decision": "decline"})
        await awaiting(client, other)
    assert submit_count(emulator) == 0


# -- who may call confirm_spend ---------------------------------------------------------------


async def test_the_model_cannot_call_confirm_spend(settings, emulator, era, app_client):
    task_id = (await awaiting(app_client))["task_id"]
    listed = {tool.name: tool for tool in (await app_client.list_tools()).tools}
    assert listed["confirm_spend"].meta["ui"]["visibility"] == ["app"]  # the host keeps it from its model

    # A client without Apps has no view: every call it makes is its model's.
    for callback in (None, Person("accept", {"confirm": True})):
        async with Client(build_server(settings), mode=era, elicitation_callback=callback) as plain:
            assert "confirm_spend" not in {tool.name for tool in (await plain.list_tools()).tools}
            forced = await plain.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"})
            assert forced.is_error and forced.structured_content["error"]["code"] == "declined"
            assert "shows no view" in forced.structured_content["error"]["message"]
    still = await app_client.call_tool("check_task", {"task_id": task_id})
    assert still.structured_content["status"] == "awaiting_confirmation"
    assert submit_count(emulator) == 0


# -- no answer in time ---------------------------------------------------------------------------


async def test_a_waiting_request_survives_a_restart(settings, emulator, era):
    async with Client(build_server(settings), mode=era, extensions=apps_host()) as first_run:
        parked = await awaiting(first_run)

    async with Client(build_server(settings), mode=era, extensions=apps_host()) as second_run:
        kept = (await second_run.call_tool("check_task", {"task_id": parked["task_id"]})).structured_content
        assert kept["status"] == "awaiting_confirmation" and kept["confirm_by"] == parked["confirm_by"]
        assert submit_count(emulator) == 0
        confirmed = await second_run.call_tool("confirm_spend", {"task_id": parked["task_id"], "decision": "confirm"})
        assert not confirmed.is_error, confirmed.content
        assert (await wait_done(second_run, parked["task_id"])).structured_content["status"] == "succeeded"
    assert len(submits(emulator, "wavespeed")) == 1


async def test_no_answer_in_time_ends_it_as_declined(tmp_path, emulator, era):
    settings = make_settings(tmp_path, emulator, confirm_above_usd=THRESHOLD, confirm_timeout_seconds=1.0)
    async with Client(build_server(settings), mode=era, extensions=apps_host()) as first_run:
        task_id = (await awaiting(first_run))["task_id"]

    # The deadline is journaled: the next server process ends it (its first sweep, or the next one).
    async with Client(build_server(settings), mode=era, extensions=apps_host()) as second_run:
        ended = await eventually(
            lambda: second_run.call_tool("check_task", {"task_id": task_id}),
            lambda result: result.structured_content["status"] != "awaiting_confirmation",
            timeout=10, what="the unanswered request ended",
        )  # fmt: skip
        report = ended.structured_content
        assert report["status"] == "failed" and report["error"]["code"] == "declined"
        assert "No one confirmed this request within" in report["error"]["message"]
        late = await second_run.call_tool("confirm_spend", {"task_id": task_id, "decision": "confirm"})
        assert late.is_error and late.structured_content["error"]["code"] == "declined"
    assert submit_count(emulator) == 0


# -- icons -----------------------------------------------------------------------------------------


async def test_server_and_tools_carry_small_svg_data_icons(client):
    tools = (await client.list_tools()).tools
    owners = [("server", client.server_info.icons)] + [(tool.name, tool.icons) for tool in tools]
    for owner, icons in owners:
        assert icons, f"{owner} has no icon"
        [icon] = icons
        assert icon.mime_type == "image/svg+xml" and icon.src.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(icon.src.removeprefix("data:image/svg+xml;base64,"))
        assert len(svg) < 1500, f"{owner}'s icon is {len(svg)} bytes"
        assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
