"""The provider contract of docs/providers.md, end to end through mcp.Client.

Each test drives the real adapters against the corrected emulator, and fails on the code
from before its correction: string shots on Pro, prompt with multi_prompt on Novita pro-i2v, no
``shot_type`` with WaveSpeed shots, 1-2 s shots where 3 s is the minimum, 200 answers that
carry an error, and inline images refused by a 4K image-to-video route.
"""

from __future__ import annotations

import httpx2
import pytest

from helpers import submits, total_requests, wait_done

pytestmark = pytest.mark.anyio

THREE_AND_TWO = [{"prompt": "a door opens", "duration": 3}, {"prompt": "light pours in", "duration": 2}]
TWO_AND_THREE = [{"prompt": "a door opens", "duration": 2}, {"prompt": "light pours in", "duration": 3}]
THREE_AND_THREE = [{"prompt": "a door opens", "duration": 3}, {"prompt": "light pours in", "duration": 3}]


def error_of(result) -> dict:
    assert result.is_error, result.structured_content
    return result.structured_content["error"]


# -- Pro multi_prompt items are objects with durations ---------------------------


@pytest.mark.parametrize(
    ("provider", "tool"),
    [("novita", "generate_video"), ("novita", "animate_image"), ("highway", "generate_video"), ("highway", "animate_image")],
)
async def test_pro_multi_prompt_is_sent_as_shots_with_durations(client, emulator, png_file, provider, tool):
    arguments = {"provider": provider, "mode": "pro", "multi_prompt": THREE_AND_TWO, "duration": 5}
    if tool == "animate_image":
        arguments["image"] = str(png_file)
    submitted = await client.call_tool(tool, arguments)
    assert not submitted.is_error, submitted.structured_content
    [sent] = submits(emulator, provider)
    assert sent["json"]["multi_prompt"] == THREE_AND_TWO
    assert not submitted.structured_content.get("notes")
    done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded"


IMAGE = "https://example.com/frame.png"
SHOTS_3_3 = [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}]


@pytest.mark.parametrize(
    ("flavor", "route", "body", "refusal"),
    [
        pytest.param("novita", "kling-v3.0-pro-t2v", {"multi_prompt": ["a", "b"]}, "multi_prompt[0]", id="10.1-novita-strings"),
        pytest.param("highway", "kling-v3.0-pro-i2v", {"image": IMAGE, "multi_prompt": ["a", "b"]}, "multi_prompt[0]", id="10.1-highway-strings"),
        pytest.param("novita", "kling-v3.0-pro-i2v", {"image": IMAGE, "prompt": "x", "multi_prompt": SHOTS_3_3, "duration": 6},
                     "mutually exclusive", id="10.2-novita-pro-i2v"),
        pytest.param("wavespeed", "kwaivgi/kling-v3.0-std/text-to-video", {"multi_prompt": SHOTS_3_3, "duration": 6},
                     'field "shot_type" must be "customize"', id="10.3-no-shot-type"),
        pytest.param("wavespeed", "kwaivgi/kling-v3.0-pro/text-to-video",
                     {"multi_prompt": [{"prompt": "a", "duration": 2}, {"prompt": "b", "duration": 3}], "shot_type": "customize"},
                     "multi_prompt[0].duration", id="10.4-wavespeed-2s"),
        pytest.param("novita", "kling-v3.0-std-i2v", {"image": IMAGE, "prompt": "x", "multi_prompt": [{"prompt": "a", "duration": 2}, {"prompt": "b", "duration": 3}]},
                     "multi_prompt[0].duration", id="10.4-novita-std-i2v-2s"),
        pytest.param("novita", "kling-v3.0-4k-i2v", {"image": IMAGE, "multi_prompt": SHOTS_3_3, "duration": 6},
                     "prompt is required", id="10.7-novita-4k-i2v"),
    ],
)  # fmt: skip
def test_emulator_serves_the_corrected_contract(emulator, flavor, route, body, refusal):
    prefix = "/api/v3/" if flavor == "wavespeed" else "/v3/async/"
    answer = httpx2.post(f"{emulator.url(flavor)}{prefix}{route}", json=body, headers={"Authorization": "Bearer test-key"})
    assert answer.status_code == 400 and refusal in answer.json()["message"], answer.text


@pytest.mark.parametrize(
    ("flavor", "route", "body"),
    [
        ("wavespeed", "kwaivgi/kling-v3.0-4k/text-to-video", {"prompt": "x", "multi_prompt": SHOTS_3_3, "duration": 6}),
        ("highway", "kling-v3.0-4k-t2v", {"multi_prompt": [{"prompt": "a", "duration": 1}, {"prompt": "b", "duration": 4}]}),
    ],
)
def test_emulator_still_takes_what_the_pages_allow(emulator, flavor, route, body):
    prefix = "/api/v3/" if flavor == "wavespeed" else "/v3/async/"
    answer = httpx2.post(f"{emulator.url(flavor)}{prefix}{route}", json=body, headers={"Authorization": "Bearer test-key"})
    assert answer.status_code == 200, answer.text


# -- Novita pro-i2v takes prompt or multi_prompt, not both ------------------------


async def test_novita_pro_i2v_refuses_prompt_with_multi_prompt(client, emulator, png_file):
    result = await client.call_tool(
        "animate_image",
        {"image": str(png_file), "prompt": "a door", "multi_prompt": THREE_AND_TWO, "provider": "novita", "mode": "pro"},
    )
    message = error_of(result)["message"]
    assert "prompt and multi_prompt" in message and "not both" in message
    assert "taken by: replicate pro, novita std, highway std, replicate std, novita 4k, replicate 4k." in message  # where both together are taken
    assert total_requests(emulator) == 0


async def test_novita_std_i2v_needs_prompt_beside_shots(client, emulator, png_file):
    result = await client.call_tool(
        "animate_image", {"image": str(png_file), "multi_prompt": THREE_AND_TWO, "provider": "novita", "mode": "std"}
    )
    message = error_of(result)["message"]
    assert message.count("prompt:") == 1 and "requires it even with multi_prompt" in message and "#novita-prompt-rule" in message
    assert total_requests(emulator) == 0


# -- WaveSpeed reads multi_prompt only with shot_type "customize" --------------------


@pytest.mark.parametrize("mode", ["std", "pro"])
async def test_wavespeed_shots_are_sent_with_customize(client, emulator, mode):
    submitted = await client.call_tool(
        "generate_video", {"provider": "wavespeed", "mode": mode, "multi_prompt": THREE_AND_THREE, "duration": 6}
    )
    assert not submitted.is_error, submitted.structured_content
    [sent] = submits(emulator, "wavespeed")
    assert sent["json"]["shot_type"] == "customize"
    assert (await wait_done(client, submitted.structured_content["task_id"])).structured_content["status"] == "succeeded"


async def test_wavespeed_intelligent_with_shots_is_refused(client, emulator):
    result = await client.call_tool(
        "generate_video",
        {"provider": "wavespeed", "mode": "std", "multi_prompt": THREE_AND_THREE, "duration": 6, "shot_type": "intelligent"},
    )
    message = error_of(result)["message"]
    assert "shot_type" in message and "customize" in message
    assert total_requests(emulator) == 0


async def test_shot_type_description_states_each_modes_default(client):
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    description = tools["generate_video"].input_schema["properties"]["shot_type"]["description"]
    assert "intelligent" in description and "Std and Pro" in description and "4K" in description
    assert "customize (default)" not in description


# -- shots of 3 to 15 s on WaveSpeed and Novita/HighwayAPI std/4k-i2v -----------------


@pytest.mark.parametrize(
    ("provider", "tool", "mode"),
    [("wavespeed", "generate_video", "pro"), ("novita", "animate_image", "std"), ("highway", "animate_image", "4k")],
)
async def test_short_shots_are_refused_where_3_s_is_the_minimum(client, emulator, png_file, provider, tool, mode):
    arguments = {"provider": provider, "mode": mode, "multi_prompt": TWO_AND_THREE, "duration": 5}
    if tool == "animate_image":
        arguments |= {"image": str(png_file), "prompt": "a door"} if provider == "novita" else {"image": str(png_file)}
    message = error_of(await client.call_tool(tool, arguments))["message"]
    assert "multi_prompt[0].duration: shot 1 is 2 s" in message and "3 to 15 s each" in message and "#shot-lengths" in message
    assert total_requests(emulator) == 0


async def test_short_shots_pass_where_kling_allows_them(client, emulator):
    submitted = await client.call_tool(
        "generate_video", {"provider": "highway", "mode": "4k", "multi_prompt": TWO_AND_THREE, "duration": 5}
    )
    assert not submitted.is_error, submitted.structured_content


# -- an HTTP 200 that carries an error is that error ------------------------------------


@pytest.mark.parametrize(
    ("provider", "status", "message", "code", "retryable"),
    [
        ("wavespeed", 400, "Insufficient balance, please top up", "insufficient_balance", False),
        ("wavespeed", 401, "Unauthorized: invalid authentication", "auth_error", False),
        ("wavespeed", 503, "Service Unavailable", "provider_error", True),
        ("novita", 400, "insufficient balance", "insufficient_balance", False),
        ("highway", 500, "Failed to create task", "provider_error", True),
    ],
)
async def test_submit_answered_200_with_an_error(client, emulator, settings, provider, status, message, code, retryable):
    emulator.inject_fault(provider, "submit", "ok_error", status=status, message=message)
    error = error_of(await client.call_tool("generate_video", {"prompt": "a lake", "provider": provider}))
    assert (error["code"], error["retryable"]) == (code, retryable)
    assert message in error["message"]
    listed = await client.call_tool("list_tasks", {})
    assert listed.structured_content["tasks"] == []  # nothing was created, so nothing is kept


@pytest.mark.parametrize(
    ("provider", "status", "message", "code"),
    [("wavespeed", 401, "Unauthorized: invalid authentication", "auth_error"), ("novita", 400, "insufficient balance", "insufficient_balance")],
)
async def test_poll_answered_200_with_an_error_is_not_running(client, emulator, provider, status, message, code):
    submitted = await client.call_tool("generate_video", {"prompt": "a lake", "provider": provider})
    emulator.inject_fault(provider, "poll", "ok_error", times=50, status=status, message=message)
    # A poll already under way when the fault is set may still say "running": wait for the end.
    done = await wait_done(client, submitted.structured_content["task_id"])
    report = done.structured_content
    assert (report["status"], report["error"]["code"]) == ("failed", code), report


async def test_poll_answered_200_with_a_passing_error_keeps_watching(client, emulator):
    submitted = await client.call_tool("generate_video", {"prompt": "a lake", "provider": "novita"})
    emulator.inject_fault("novita", "poll", "ok_error", times=3, status=500, message="Failed to get task result")
    done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded"


async def test_upload_answered_200_with_an_error(client, emulator, png_file):
    emulator.inject_fault("wavespeed", "upload", "ok_error", status=401, message="Unauthorized: invalid authentication")
    error = error_of(await client.call_tool("animate_image", {"image": str(png_file), "prompt": "x", "provider": "wavespeed"}))
    assert error["code"] == "auth_error"
    assert submits(emulator, "wavespeed") == []


# -- an inline image a 4K image-to-video route refuses -----------------------------------


@pytest.mark.parametrize("provider", ["novita", "highway"])
async def test_refused_inline_image_says_what_works_instead(client, emulator, png_file, provider):
    emulator.config.inline_images_4k_i2v = False
    try:
        error = error_of(await client.call_tool("animate_image", {"image": str(png_file), "provider": provider, "mode": "4k", "prompt": "x"}))
    finally:
        emulator.config.inline_images_4k_i2v = True
    message = error["message"]
    assert error["code"] == "validation_error"
    assert "nothing was charged" in message and "https://" in message and "provider='wavespeed'" in message
    assert message.startswith("image:")


async def test_inline_image_goes_through_where_the_route_takes_it(client, emulator, png_file):
    submitted = await client.call_tool("animate_image", {"image": str(png_file), "provider": "novita", "mode": "4k", "prompt": "x"})
    assert not submitted.is_error, submitted.structured_content
    [sent] = submits(emulator, "novita")
    assert sent["json"]["image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("provider", ["wavespeed", "novita"])
async def test_prompt_token_makes_the_submit_answer_200_with_an_error(client, emulator, provider):
    error = error_of(await client.call_tool("generate_video", {"prompt": "a lake [[ok_error:submit]]", "provider": provider}))
    assert error["code"] == "insufficient_balance"


async def test_prompt_token_makes_polls_answer_200_with_an_error(client, emulator, settings):
    from kling_video_mcp.journal.sqlite import SqliteJournal

    submitted = await client.call_tool("generate_video", {"prompt": "a lake [[ok_error:poll]]", "provider": "highway"})
    task_id = submitted.structured_content["task_id"]
    report = (await client.call_tool("check_task", {"task_id": task_id})).structured_content
    assert report["status"] == "queued", report  # as submitted: an error answer is not read as progress
    journal = SqliteJournal(settings.journal_path)
    try:
        record = await journal.get(task_id)
    finally:
        await journal.aclose()
    assert record.error_code == "provider_error" and "Failed to get task result" in record.error_message
    assert not record.gave_up  # a passing error: the watcher keeps polling


# -- WaveSpeed outputs as objects ---------------------------------------------------


async def test_wavespeed_output_objects_are_read_by_their_url(client, emulator):
    emulator.config.wavespeed_output_objects = True
    try:
        submitted = await client.call_tool("generate_video", {"prompt": "a lake", "provider": "wavespeed"})
        done = await wait_done(client, submitted.structured_content["task_id"])
    finally:
        emulator.config.wavespeed_output_objects = False
    assert done.structured_content["status"] == "succeeded", done.structured_content
    assert done.structured_content["file_path"].endswith(".mp4")
