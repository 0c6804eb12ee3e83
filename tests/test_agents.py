"""Built for agents and storyboards: waiting with progress, previews, continuity, cost control."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from mcp import Client, MCPError
from mcp.types import ImageContent, TextResourceContents, BlobResourceContents

from conftest import make_settings
from helpers import submit_count, submits, total_requests, wait_done
from kling_video_mcp.surface.server import build_server

pytestmark = pytest.mark.anyio


async def finished_clip(client, **arguments) -> dict:
    submitted = await client.call_tool("generate_video", {"prompt": "a kite over a beach", "duration": 3, **arguments})
    assert not submitted.is_error, submitted.structured_content
    done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content
    return done.structured_content


async def test_wait_seconds_sends_progress_and_returns_the_clip(client):
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    # [[render:40]] at the emulator's 0.05 clock renders for 2 s: several updates arrive.
    result = await client.call_tool(
        "generate_video",
        {"prompt": "a slow sunrise [[render:40]]", "duration": 3, "provider": "novita", "wait_seconds": 30},
        progress_callback=on_progress,
    )
    assert result.structured_content["status"] == "succeeded", result.structured_content
    assert len(updates) >= 2
    progresses = [progress for progress, _, _ in updates]
    assert progresses == sorted(progresses) and len(set(progresses)) == len(progresses)  # strictly rising
    assert all(total == 100 for _, total, _ in updates)
    assert any(message and "rendering" in message for _, _, message in updates)


async def test_wait_seconds_returns_early_when_time_is_up(client):
    result = await client.call_tool(
        "generate_video", {"prompt": "never ends [[slow]]", "provider": "wavespeed", "wait_seconds": 1}
    )
    assert result.structured_content["status"] in ("queued", "running")


async def test_finished_clip_is_probed_previewed_and_described(client, settings):
    report = await finished_clip(client, provider="wavespeed", sound=True, aspect_ratio="16:9")
    clip = report["clip"]
    assert clip["duration_seconds"] == pytest.approx(3, abs=0.1)
    assert clip["width"] > clip["height"] and clip["has_audio"] is True and clip["fps"] == 24
    assert clip["video_codec"] == "h264"

    done = await client.call_tool("check_task", {"task_id": report["task_id"]})
    [image] = [block for block in done.content if isinstance(block, ImageContent)]
    assert image.mime_type == "image/jpeg"
    jpeg = base64.b64decode(image.data)
    assert len(jpeg) < 1_000_000
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as sheet:
        assert sheet.format == "JPEG" and sheet.width == 4 * 320

    last = Path(report["last_frame_path"])
    assert last.parent == settings.output_dir and last.suffix == ".png"
    with Image.open(last) as frame:
        assert (frame.width, frame.height) == (clip["width"], clip["height"])

    sidecar = json.loads(Path(report["sidecar_path"]).read_text())
    assert sidecar["request"]["prompt"] == "a kite over a beach" and sidecar["sha256"] == report["sha256"]
    assert sidecar["provider_task_id"] and sidecar["clip_facts"]["duration_seconds"] == clip["duration_seconds"]


async def test_clip_names_sort_and_say_what_they_are(client):
    report = await finished_clip(client, prompt="Über den Wolken / ../ a flight!", provider="novita", mode="std")
    name = Path(report["file_path"]).name
    date, provider_mode, slug, task = name.removesuffix(".mp4").split("_")
    assert len(date) == 15 and date[8] == "-" and provider_mode == "novita-std"
    assert slug == "uber-den-wolken-a-flight" and report["task_id"].startswith(task)


@pytest.fixture
def chainable_clips(emulator, monkeypatch):
    """Emulator clips large enough (640x360) that their last frame is a valid first frame."""
    monkeypatch.setattr(emulator.config, "video_long_side", 640)


async def test_chained_shot_starts_from_the_last_frame(client, emulator, chainable_clips):
    first = await finished_clip(client, provider="novita", mode="std")
    second = await client.call_tool(
        "animate_image",
        {"image": f"task:{first['task_id']}#last_frame", "prompt": "the kite lands", "provider": "novita", "mode": "std"},
    )
    assert not second.is_error, second.structured_content
    sent = submits(emulator, "novita")[-1]["json"]["image"]
    head, _, payload = sent.partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(payload) == Path(first["last_frame_path"]).read_bytes()

    bare = await client.call_tool("animate_image", {"image": f"task:{first['task_id']}", "prompt": "again", "force_new": True})
    assert not bare.is_error


async def test_chaining_from_an_unfinished_task_is_refused(client, emulator):
    pending = await client.call_tool("generate_video", {"prompt": "never ends [[slow]]", "provider": "highway"})
    # The pending task's own polls go on in the background: count what creates tasks, on every provider.
    before = submit_count(emulator)
    refused = await client.call_tool("animate_image", {"image": f"task:{pending.structured_content['task_id']}", "prompt": "x"})
    assert refused.structured_content["error"]["code"] == "validation_error"
    assert "not finished" in refused.structured_content["error"]["message"]
    assert submit_count(emulator) == before


async def test_batch_check_and_list(client):
    first = await finished_clip(client, provider="novita")
    second = await finished_clip(client, provider="wavespeed")
    pending = await client.call_tool("generate_video", {"prompt": "never ends [[slow]]", "provider": "highway"})
    ids = [first["task_id"], second["task_id"], pending.structured_content["task_id"]]

    batch = await client.call_tool("check_task", {"task_ids": ids})
    assert not batch.is_error
    rows = batch.structured_content["tasks"]
    assert [row["task_id"] for row in rows] == ids
    assert [row["status"] for row in rows[:2]] == ["succeeded", "succeeded"]
    assert batch.structured_content["message"].startswith("3 tasks: 2 succeeded")
    assert sum(block.type == "resource_link" for block in batch.content) == 2

    listed = await client.call_tool("list_tasks", {"status": "succeeded"})
    assert {row["task_id"] for row in listed.structured_content["tasks"]} == set(ids[:2])
    newest = await client.call_tool("list_tasks", {"limit": 1})
    assert [row["task_id"] for row in newest.structured_content["tasks"]] == [ids[2]]

    neither = await client.call_tool("check_task", {})
    assert neither.structured_content["error"]["code"] == "validation_error"


async def test_dry_run_prices_and_sends_nothing(client, emulator):
    result = await client.call_tool("generate_video", {"prompt": "x", "duration": 10, "provider": "wavespeed", "dry_run": True})
    assert not result.is_error
    report = result.structured_content
    assert report["dry_run"] is True and report["task_id"] is None
    assert report["estimated_cost_usd"] == pytest.approx(4.20) and "confirmed" in report["cost_basis"]
    assert total_requests(emulator) == 0


async def test_max_cost_refuses_before_sending(client, emulator):
    result = await client.call_tool("generate_video", {"prompt": "x", "duration": 15, "max_cost_usd": 5})
    assert result.structured_content["error"]["code"] == "budget_exceeded"
    assert "$6.30" in result.structured_content["error"]["message"]
    assert total_requests(emulator) == 0


async def test_default_max_cost_from_settings(tmp_path, emulator):
    async with Client(build_server(make_settings(tmp_path, emulator, max_cost_usd=1.0))) as client:
        result = await client.call_tool("generate_video", {"prompt": "x", "duration": 3})
    assert result.structured_content["error"]["code"] == "budget_exceeded"
    assert total_requests(emulator) == 0


async def test_budget_refuses_new_work_and_says_what_is_left(tmp_path, emulator):
    async with Client(build_server(make_settings(tmp_path, emulator, budget_usd=3.0))) as client:
        first = await client.call_tool("generate_video", {"prompt": "one", "duration": 5})  # $2.10
        assert not first.is_error
        sent = total_requests(emulator)
        second = await client.call_tool("generate_video", {"prompt": "two", "duration": 5})
    error = second.structured_content["error"]
    assert error["code"] == "budget_exceeded" and "$0.90" in error["message"]
    assert len(submits(emulator, "novita")) == 1 and total_requests(emulator) >= sent


async def test_task_and_clip_resources(client, settings):
    report = await finished_clip(client, provider="highway")
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert {"kling-video://tasks/{task_id}", "kling-video://clips/{task_id}"} <= templates

    record = await client.read_resource(f"kling-video://tasks/{report['task_id']}")
    [text] = record.contents
    assert isinstance(text, TextResourceContents) and json.loads(text.text)["file_path"] == report["file_path"]

    clip = await client.read_resource(f"kling-video://clips/{report['task_id']}")
    [blob] = clip.contents
    assert isinstance(blob, BlobResourceContents) and blob.mime_type == "video/mp4"
    assert base64.b64decode(blob.blob) == Path(report["file_path"]).read_bytes()

    for uri in ("kling-video://clips/unknown", "kling-video://tasks/..%2F..%2Fetc%2Fpasswd", "kling-video://clips/../x"):
        with pytest.raises(MCPError):
            await client.read_resource(uri)


async def test_clip_resource_above_the_cap_is_refused(tmp_path, emulator):
    async with Client(build_server(make_settings(tmp_path, emulator, clip_resource_max_bytes=1000))) as client:
        report = await finished_clip(client)
        with pytest.raises(MCPError, match="cap"):
            await client.read_resource(f"kling-video://clips/{report['task_id']}")


async def test_storyboard_prompt(client):
    prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert {arg.name for arg in prompts["storyboard"].arguments} == {"idea", "shots", "aspect_ratio", "mode"}
    result = await client.get_prompt("storyboard", {"idea": "a robot learns to paint", "shots": "3", "aspect_ratio": "9:16"})
    text = result.messages[0].content.text
    assert "a robot learns to paint" in text and "3 shots" in text and 'image="task:<previous task_id>"' in text
    assert "check_task(task_ids=" in text and "dry_run=true" in text and "screening room" in text
    # It ends with the final cut, the shots in story order.
    assert "assemble_video(task_ids=" in text and text.rfind("assemble_video") > text.rfind("check_task(task_ids=")
    assert "never answer for me" in text


def test_an_unreadable_clip_is_kept_with_a_warning(tmp_path):
    from kling_video_mcp.media.companions import make_companions

    clip = tmp_path / "broken.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 100)
    found = make_companions(clip)
    assert found.facts is None and found.contact_sheet is None and found.last_frame is None
    assert found.warnings and "could not be probed" in found.warnings[0]
    assert clip.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")  # left as it was
