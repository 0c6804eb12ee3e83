"""The three tools end to end through mcp.Client, against the emulator, in both eras."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mcp.types import ResourceLink, TextContent

from helpers import FLAVORS, clip_duration, clip_size, submits, wait_done

pytestmark = pytest.mark.anyio


async def test_lists_three_tools_with_schemas_from_the_api_docs(client):
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"generate_video", "animate_image", "assemble_video", "check_task", "list_tasks"}

    schema = tools["generate_video"].input_schema["properties"]
    assert schema["duration"]["minimum"] == 3 and schema["duration"]["maximum"] == 15
    assert schema["duration"]["default"] == 5
    assert schema["aspect_ratio"]["enum"] == ["16:9", "9:16", "1:1"]
    assert schema["aspect_ratio"]["default"] == "16:9"
    assert schema["mode"]["enum"] == ["std", "pro", "4k"] and schema["mode"]["default"] == "4k"
    assert schema["provider"]["enum"] == ["novita", "highway", "wavespeed", "kling", "fal", "replicate", "sandbox"]
    assert any(branch.get("maxLength") == 2500 for branch in schema["prompt"]["anyOf"])
    shots = next(b for b in schema["multi_prompt"]["anyOf"] if b.get("type") == "array")
    assert shots["minItems"] == 1 and shots["maxItems"] == 6
    assert "aspect_ratio" not in tools["animate_image"].input_schema["properties"]
    assert tools["animate_image"].input_schema["required"] == ["image"]
    check = tools["check_task"].input_schema["properties"]
    assert {"task_id", "task_ids", "wait_seconds"} <= set(check)
    assert check["wait_seconds"]["maximum"] == 50 and schema["wait_seconds"]["maximum"] == 50

    for name in tools:
        assert tools[name].output_schema["type"] == "object"
        assert tools[name].output_schema["properties"]["task_id"]
    for name in ("check_task", "list_tasks"):
        assert tools[name].annotations.read_only_hint is True
        assert tools[name].annotations.idempotent_hint is True
    for name in ("generate_video", "animate_image"):
        annotations = tools[name].annotations
        assert annotations.read_only_hint is False and annotations.idempotent_hint is False
        assert annotations.open_world_hint is True
    assemble = tools["assemble_video"]
    assert assemble.annotations.read_only_hint is False and assemble.annotations.open_world_hint is False
    cut = assemble.input_schema["properties"]
    assert assemble.input_schema["required"] == ["task_ids"]
    assert cut["task_ids"]["minItems"] == 2 and cut["task_ids"]["maxItems"] == 20
    assert cut["transition"]["enum"] == ["cut", "crossfade"] and cut["transition"]["default"] == "cut"
    assert (cut["crossfade_seconds"]["minimum"], cut["crossfade_seconds"]["maximum"]) == (0.2, 2.0)
    assert cut["crossfade_seconds"]["default"] == 0.5
    assert cut["audio"]["enum"] == ["keep", "mute"] and cut["audio"]["default"] == "keep"
    assert any(branch.get("maxLength") == 100 for branch in cut["title"]["anyOf"])
    assert cut["wait_seconds"]["maximum"] == 50


@pytest.mark.parametrize("provider", FLAVORS)
async def test_text_to_video_end_to_end(client, emulator, settings, provider):
    submitted = await client.call_tool(
        "generate_video", {"prompt": "a red fox runs through snow", "duration": 4, "aspect_ratio": "9:16", "provider": provider}
    )
    assert not submitted.is_error, submitted.content
    report = submitted.structured_content
    assert report["status"] == "queued" and report["provider"] == provider
    assert report["model"] == "Kling v3.0 4K text-to-video"
    assert report["estimated_cost_usd"] == pytest.approx(0.42 * 4)
    assert report["task_id"] in submitted.content[0].text

    done = await wait_done(client, report["task_id"])
    final = done.structured_content
    assert final["status"] == "succeeded", final
    path = Path(final["file_path"])
    assert path.parent == settings.output_dir and path.suffix == ".mp4"
    assert path.stat().st_size == final["size_bytes"]
    links = [block for block in done.content if isinstance(block, ResourceLink)]
    assert len(links) == 1 and links[0].mime_type == "video/mp4" and links[0].uri == path.as_uri()
    text = next(block.text for block in done.content if isinstance(block, TextContent))
    assert str(path) in text and "succeeded" in text
    assert clip_duration(path) == pytest.approx(4, abs=0.1)
    width, height = clip_size(path)
    assert height > width  # 9:16

    [sent] = submits(emulator, provider)
    assert sent["json"]["prompt"] == "a red fox runs through snow"
    assert sent["json"]["duration"] == 4 and sent["json"]["aspect_ratio"] == "9:16"
    assert sent["path"].endswith("kling-v3.0-4k-t2v" if provider != "wavespeed" else "kling-v3.0-4k/text-to-video")


@pytest.mark.parametrize("provider", FLAVORS)
async def test_animate_a_local_png(client, emulator, png_file, provider):
    submitted = await client.call_tool(
        "animate_image", {"image": str(png_file), "prompt": "the sea moves", "mode": "std", "provider": provider}
    )
    assert not submitted.is_error, submitted.content
    assert submitted.structured_content["model"] == "Kling v3.0 Standard image-to-video"
    done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content
    width, height = clip_size(done.structured_content["file_path"])
    assert width > height  # the 640x360 image's landscape shape

    [sent] = submits(emulator, provider)
    assert "aspect_ratio" not in sent["json"]
    if provider == "wavespeed":
        uploads = [r for r in emulator.requests("wavespeed") if r["path"].endswith("/media/upload/binary")]
        assert len(uploads) == 1
        assert "/__fake/media/" in sent["json"]["image"]
    else:
        head, _, payload = sent["json"]["image"].partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(payload) == png_file.read_bytes()


async def test_check_task_reports_the_providers_failure_reason(client):
    submitted = await client.call_tool("generate_video", {"prompt": "something [[fail:moderation]]"})
    done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.is_error
    report = done.structured_content
    assert report["status"] == "failed"
    assert report["error"]["code"] == "content_policy"
    assert report["error"]["message"] in done.content[0].text


async def test_unknown_task_id_is_a_clear_error(client):
    result = await client.call_tool("check_task", {"task_id": "no-such-task"})
    assert result.is_error
    assert result.structured_content["error"]["code"] == "not_found"
    assert "no-such-task" in result.structured_content["message"]
