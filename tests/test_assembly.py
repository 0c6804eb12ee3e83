"""assemble_video end to end through mcp.Client, in both eras: real clips from the emulator,
joined by the real server, read back with PyAV."""

from __future__ import annotations

import array
import json
from pathlib import Path

import anyio
import av
import pytest
from mcp import Client
from mcp.types import ImageContent, ResourceLink
from PIL import Image

from helpers import submit_count, wait_done
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.tasks.assembly import Assembler

pytestmark = pytest.mark.anyio

FPS = 24


async def make_clips(client: Client, *specs: dict) -> list[str]:
    """Render one clip per spec (generate_video arguments) at the emulator; their task ids once all are on disk."""
    ids = []
    for number, spec in enumerate(specs):
        result = await client.call_tool("generate_video", {"prompt": f"shot {number} of the storyboard", **spec})
        assert not result.is_error, result.structured_content
        ids.append(result.structured_content["task_id"])
    for task_id in ids:
        assert (await wait_done(client, task_id)).structured_content["status"] == "succeeded"
    return ids


async def assemble(client: Client, task_ids: list[str], **arguments) -> dict:
    result = await client.call_tool("assemble_video", {"task_ids": task_ids, **arguments})
    assert not result.is_error, result.structured_content
    report = result.structured_content
    if arguments.get("wait_seconds"):
        assert report["status"] == "succeeded", report  # waited for it inside the call
    else:
        report = (await wait_done(client, report["task_id"])).structured_content
    assert report["status"] == "succeeded", report
    return report


def decoded_frames(path: str) -> int:
    """Every video frame of the file, decoded (so it plays), counted."""
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def frame_at(path: str, seconds: float):
    with av.open(path) as container:
        for frame in container.decode(video=0):
            if frame.time >= seconds:
                return frame.to_image().convert("RGB")
    raise AssertionError(f"no frame at {seconds} s")


def loudness(path: str, start: float, end: float) -> float:
    """Largest absolute sample of the first audio channel between ``start`` and ``end`` seconds."""
    with av.open(path) as container:
        peak = 0.0
        for frame in container.decode(audio=0):
            if frame.time is not None and start <= frame.time < end:
                samples = array.array("f", bytes(frame.planes[0])[: frame.samples * 4])  # float planar
                peak = max(peak, max(abs(value) for value in samples))
        return peak


async def test_three_clips_of_different_lengths_make_one_film(client, settings, emulator):
    # Sandbox clips are 640x360, so the film's last frame meets Kling's 300 px minimum for chaining.
    shots = await make_clips(client, *({"duration": seconds, "provider": "sandbox"} for seconds in (3, 4, 5)))
    sent = submit_count(emulator)
    report = await assemble(client, shots, title="The fox's day", wait_seconds=30)

    film = report["file_path"]
    assert Path(film).parent == settings.output_dir and Path(film).name.endswith(f"_final-cut_the-fox-s-day_{report['task_id'][:12]}.mp4")
    assert report["clip"]["duration_seconds"] == pytest.approx(12, abs=0.05)
    assert report["assembly"]["expected_duration_seconds"] == pytest.approx(12, abs=0.05)
    assert decoded_frames(film) == 12 * FPS  # it plays, every frame of every shot
    assert report["clip"]["video_codec"] == "h264"
    assert report["assembly"]["method"] == "stream_copy"  # same provider, same mode: no re-encode
    assert report["estimated_cost_usd"] == 0 and "nothing is billed" in report["cost_basis"]
    assert report["provider"] is None and submit_count(emulator) == sent  # nothing was sent anywhere

    sidecar = json.loads(Path(report["sidecar_path"]).read_text())
    assert sidecar["assembly"]["title"] == "The fox's day" and sidecar["assembly"]["transition"] == "cut"
    assert [source["task_id"] for source in sidecar["assembly"]["sources"]] == shots
    for source, seconds in zip(sidecar["assembly"]["sources"], (3, 4, 5)):
        assert Path(source["file_path"]).is_file() and len(source["sha256"]) == 64
        assert source["facts"]["duration_seconds"] == pytest.approx(seconds, abs=0.05)

    with Image.open(report["contact_sheet_path"]) as sheet:
        assert sheet.size[0] == 3 * 320  # one frame per shot
    with Image.open(report["last_frame_path"]) as last:
        assert last.size == (report["clip"]["width"], report["clip"]["height"])

    # It is a task like any other: check_task, list_tasks, both resources, and chaining from its last frame.
    checked = await client.call_tool("check_task", {"task_id": report["task_id"]})
    assert any(isinstance(block, ResourceLink) and block.uri == Path(film).as_uri() for block in checked.content)
    assert any(isinstance(block, ImageContent) for block in checked.content)
    listed = (await client.call_tool("list_tasks", {"status": "succeeded"})).structured_content["tasks"]
    assert report["task_id"] in [row["task_id"] for row in listed]
    record = json.loads((await client.read_resource(f"kling-video://tasks/{report['task_id']}")).contents[0].text)
    assert record["assembly"]["sources"][2]["task_id"] == shots[2]
    clip = (await client.read_resource(f"kling-video://clips/{report['task_id']}")).contents[0]
    assert clip.mime_type == "video/mp4" and len(clip.blob) > 0
    chained = await client.call_tool("animate_image", {"image": f"task:{report['task_id']}", "prompt": "the fox sleeps", "dry_run": True})
    assert not chained.is_error, chained.structured_content


async def test_a_repeated_shot_and_an_earlier_assembly_are_legitimate_sources(client):
    first, second = await make_clips(client, {"duration": 3}, {"duration": 4})
    reel = await assemble(client, [first, second, first])
    assert reel["clip"]["duration_seconds"] == pytest.approx(10, abs=0.05)
    longer = await assemble(client, [reel["task_id"], second])
    assert decoded_frames(longer["file_path"]) == 14 * FPS


async def test_a_crossfade_film_is_shorter_by_the_crossfades(client):
    shots = await make_clips(client, {"duration": 3}, {"duration": 3}, {"duration": 4})
    report = await assemble(client, shots, transition="crossfade", crossfade_seconds=0.5)
    assert report["assembly"]["method"] == "re_encode"
    assert report["clip"]["duration_seconds"] == pytest.approx(10 - 2 * 0.5, abs=0.05)
    assert decoded_frames(report["file_path"]) == 9 * FPS
    assert "crossfade" in report["message"] and "$0" in report["message"]


async def test_mixed_frame_sizes_are_letterboxed_to_the_first(client):
    shots = await make_clips(client, {"duration": 3, "aspect_ratio": "16:9"}, {"duration": 3, "aspect_ratio": "9:16"})
    report = await assemble(client, shots)
    assert report["assembly"]["method"] == "re_encode"
    first = report["assembly"]["sources"][0]["facts"]
    assert (report["clip"]["width"], report["clip"]["height"]) == (first["width"], first["height"]) == (320, 180)
    portrait = frame_at(report["file_path"], 4.5)  # the second shot, 180x320 fitted into 320x180
    width, height = portrait.size
    for x in (2, 40, width - 41, width - 3):  # pillarbox bars either side: 320 - 180 * 180/320 = 218 px of black
        assert max(portrait.getpixel((x, height // 2))) <= 8, x
    assert max(portrait.getpixel((width // 2, height // 2))) > 8  # the picture itself, not stretched over the bars
    assert decoded_frames(report["file_path"]) == 6 * FPS


async def test_mixed_frame_rates_play_at_the_first_clips_rate(client, emulator, monkeypatch):
    [first] = await make_clips(client, {"duration": 3})
    monkeypatch.setattr(emulator.config, "fps", 30)  # the emulator renders the next clip at 30 fps
    [second] = await make_clips(client, {"duration": 4})
    monkeypatch.undo()
    report = await assemble(client, [first, second])
    assert report["assembly"]["sources"][1]["facts"]["fps"] == 30
    assert report["assembly"]["method"] == "re_encode" and report["clip"]["fps"] == FPS
    assert report["clip"]["duration_seconds"] == pytest.approx(7, abs=0.05)
    assert decoded_frames(report["file_path"]) == 7 * FPS


async def test_sound_and_silence_make_one_audio_track_and_mute_drops_it(client):
    shots = await make_clips(client, {"duration": 3, "sound": True}, {"duration": 3})
    report = await assemble(client, shots)
    assert report["clip"]["has_audio"] is True
    film = report["file_path"]
    assert loudness(film, 0.2, 2.8) > 0.01  # the first clip's tone
    assert loudness(film, 3.2, 5.8) == 0.0  # silence under the silent clip
    with av.open(film) as container:
        heard = sum(frame.samples for frame in container.decode(audio=0)) / container.streams.audio[0].sample_rate
    assert heard == pytest.approx(6, abs=0.1)

    muted = await assemble(client, shots, audio="mute")
    assert muted["clip"]["has_audio"] is False


async def test_bad_input_is_refused_before_any_work(client, settings, emulator):
    done, gone = await make_clips(client, {"duration": 3}, {"duration": 3})
    slow = (await client.call_tool("generate_video", {"prompt": "a very slow render [[render:2000]]"})).structured_content
    Path((await wait_done(client, gone)).structured_content["file_path"]).unlink()
    files = sorted(settings.output_dir.iterdir())
    tasks = len((await client.call_tool("list_tasks", {"limit": 100})).structured_content["tasks"])
    sent = submit_count(emulator)

    cases = [
        ({"task_ids": [done, "no-such-task"]}, ["task_ids[1]", "'no-such-task'", "no task"]),
        ({"task_ids": [slow["task_id"], done]}, ["task_ids[0]", slow["task_id"], "not finished"]),
        ({"task_ids": [done, gone]}, ["task_ids[1]", gone, "no longer on disk"]),
        ({"task_ids": [done, done, done], "transition": "crossfade", "crossfade_seconds": 2.0}, ["task_ids[1]", "too short"]),
        ({"task_ids": [done]}, ["task_ids"]),
        ({"task_ids": [done, done], "title": "x" * 101}, ["title"]),
        ({"task_ids": [done, done], "crossfade_seconds": 5}, ["crossfade_seconds"]),
    ]
    for arguments, named in cases:
        result = await client.call_tool("assemble_video", arguments)
        assert result.is_error, arguments
        text = result.content[0].text
        assert all(part in text for part in named), (named, text)

    assert sorted(settings.output_dir.iterdir()) == files  # nothing made
    assert len((await client.call_tool("list_tasks", {"limit": 100})).structured_content["tasks"]) == tasks  # nothing journaled
    assert submit_count(emulator) == sent  # nothing sent


async def test_an_assembly_survives_a_server_restart(settings, era, monkeypatch):
    async with Client(build_server(settings), mode=era) as first_server:
        shots = await make_clips(first_server, {"duration": 3}, {"duration": 4})

        async def cut_off(self, record):  # the server stops mid-assembly: the work never ends here
            await anyio.sleep_forever()

        monkeypatch.setattr(Assembler, "make", cut_off)
        started = (await first_server.call_tool("assemble_video", {"task_ids": shots})).structured_content
        assert started["status"] == "running" and started["estimated_cost_usd"] == 0
        running = (await first_server.call_tool("list_tasks", {"status": "running"})).structured_content["tasks"]
        assert [row["task_id"] for row in running] == [started["task_id"]]
    assert not list(settings.output_dir.glob("*final-cut*"))

    monkeypatch.undo()
    async with Client(build_server(settings), mode=era) as second_server:
        report = (await wait_done(second_server, started["task_id"])).structured_content
    assert report["status"] == "succeeded", report
    assert report["clip"]["duration_seconds"] == pytest.approx(7, abs=0.05)
    assert decoded_frames(report["file_path"]) == 7 * FPS
