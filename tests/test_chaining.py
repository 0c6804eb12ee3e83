"""Chaining at agent speed: ``succeeded`` means the clip and all its companions are there.

An agent chains the next shot, ``animate_image(image="task:<id>")``, the moment a result says
``succeeded``, without checking again first. So a waited-for render and a waited-for film must
report ``succeeded`` only together with their last frame, contact sheet and sidecar, and the
chained call must be accepted at once. Ten rounds in a row, through ``mcp.Client``, in both
protocol eras: one round missing a companion fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.types import ResourceLink

from helpers import total_requests

pytestmark = pytest.mark.anyio

ROUNDS = 10
COMPANIONS = ("last_frame_path", "contact_sheet_path", "sidecar_path")


@pytest.fixture
def chainable_clips(emulator, monkeypatch):
    """Emulator clips large enough (640x360) that their last frame is a valid first frame."""
    monkeypatch.setattr(emulator.config, "video_long_side", 640)


def assert_whole(result) -> dict:
    """A succeeded result with its clip link and every companion on disk; returns its report."""
    report = result.structured_content
    assert not result.is_error and report["status"] == "succeeded", report
    for field in COMPANIONS:
        assert report[field] and Path(report[field]).is_file(), (field, report)
    assert any(isinstance(block, ResourceLink) for block in result.content)
    return report


async def chain_from(client, task_id: str, prompt: str) -> None:
    chained = await client.call_tool(
        "animate_image", {"image": f"task:{task_id}", "prompt": prompt, "duration": 3, "mode": "std"}
    )
    assert not chained.is_error, chained.structured_content
    assert chained.structured_content["status"] in ("queued", "running", "succeeded"), chained.structured_content


async def test_chaining_the_moment_a_render_and_a_film_succeed(client, chainable_clips):
    for round_number in range(ROUNDS):
        shot = await client.call_tool(
            "generate_video",
            {"prompt": f"round {round_number}: a kite rises", "duration": 3, "mode": "std", "wait_seconds": 30},
        )
        shot_id = assert_whole(shot)["task_id"]
        await chain_from(client, shot_id, f"round {round_number}: the kite lands")

        film = await client.call_tool(
            "assemble_video", {"task_ids": [shot_id, shot_id], "title": f"round {round_number}", "wait_seconds": 30}
        )
        film_id = assert_whole(film)["task_id"]
        await chain_from(client, film_id, f"round {round_number}: after the film")


async def test_missing_companions_are_made_again_when_read_or_chained(client, emulator, chainable_clips):
    """Companion files deleted after delivery come back from the clip on disk, asking no provider."""
    shot = assert_whole(
        await client.call_tool("generate_video", {"prompt": "a lantern sways", "duration": 3, "mode": "std", "wait_seconds": 30})
    )
    film = assert_whole(
        await client.call_tool("assemble_video", {"task_ids": [shot["task_id"]] * 2, "wait_seconds": 30})
    )
    asked = total_requests(emulator)
    for report in (shot, film):
        for field in COMPANIONS:
            Path(report[field]).unlink()
        checked = assert_whole(await client.call_tool("check_task", {"task_id": report["task_id"]}))
        assert [checked[field] for field in COMPANIONS] == [report[field] for field in COMPANIONS]
    assert total_requests(emulator) == asked

    Path(shot["last_frame_path"]).unlink()
    await chain_from(client, shot["task_id"], "the lantern goes out")  # chaining makes it again first
    assert Path(shot["last_frame_path"]).is_file()

    Path(shot["sidecar_path"]).unlink()
    listed = (await client.call_tool("list_tasks", {})).structured_content["tasks"]
    assert shot["task_id"] in {row["task_id"] for row in listed} and Path(shot["sidecar_path"]).is_file()
