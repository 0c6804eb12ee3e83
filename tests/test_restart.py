"""A server killed with SIGKILL mid-render, mid-download, or between a clip and its companions
loses nothing: the next one delivers, making missing companions from the clip on disk.

The first server runs over stdio as a subprocess that records its PID (so the test can
``kill -9`` exactly it); the second is the plain console script on the same state folder.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from conftest import make_settings
from helpers import clip_duration, eventually, total_requests, wait_done
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.tasks import recovery
from test_stdio import console_script, server_env

pytestmark = pytest.mark.anyio

RECORD_PID_AND_SERVE = (
    "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
    "from kling_video_mcp.cli import main; main([])"
)


async def submit_then_kill(
    emulator, tmp_path: Path, arguments: dict, kill_when: Callable[[], bool], tool: str = "generate_video", **env: str
) -> str:
    """Call ``tool`` on a first server process (``env`` added to its environment), wait until
    ``kill_when()``, then SIGKILL it."""
    pid_file = tmp_path / "server.pid"
    params = StdioServerParameters(
        command=sys.executable, args=["-c", RECORD_PID_AND_SERVE, str(pid_file)], env=server_env(emulator, tmp_path, **env)
    )
    submitted: list[str] = []
    killed = anyio.Event()

    async def first_server() -> None:
        try:
            async with Client(params) as client:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.structured_content
                submitted.append(result.structured_content["task_id"])
                await anyio.sleep_forever()
        except Exception:
            if not killed.is_set():
                raise  # a failure before the kill is the test's failure; after it, the expected broken pipe

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(first_server)
            await eventually(lambda: submitted and kill_when(), timeout=60, interval=0.02, what="the moment to kill the server")
            killed.set()
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            task_group.cancel_scope.cancel()
    return submitted[0]


async def deliver_after_restart(emulator, tmp_path: Path, task_id: str, **env: str) -> dict:
    params = StdioServerParameters(command=console_script(), args=[], env=server_env(emulator, tmp_path, **env))
    async with Client(params) as client:
        done = await wait_done(client, task_id, timeout=60)
    return done.structured_content


def media_requested(emulator, flavor: str) -> bool:
    return any("/__fake/media/" in r["path"] and r["method"] == "GET" for r in emulator.requests(flavor))


async def test_kill_9_during_a_render(emulator, tmp_path):
    def rendering() -> bool:
        return len(emulator.requests("wavespeed")) >= 2  # submitted and polled at least once

    # [[render:200]] at the emulator's 0.05 clock renders for 10 s: the kill lands mid-render.
    arguments = {"prompt": "a long pan over mountains [[render:200]]", "duration": 3, "provider": "wavespeed"}
    task_id = await submit_then_kill(emulator, tmp_path, arguments, rendering)
    report = await deliver_after_restart(emulator, tmp_path, task_id)
    assert report["status"] == "succeeded", report
    assert clip_duration(report["file_path"]) == pytest.approx(3, abs=0.1)


async def test_kill_9_during_a_download(emulator, tmp_path):
    emulator.inject_fault("novita", "media", "hang", seconds=5)
    arguments = {"prompt": "waves at night", "duration": 3, "provider": "novita"}
    task_id = await submit_then_kill(emulator, tmp_path, arguments, lambda: media_requested(emulator, "novita"))
    assert not list((tmp_path / "clips").glob("*.mp4"))
    report = await deliver_after_restart(emulator, tmp_path, task_id)
    assert report["status"] == "succeeded", report
    assert Path(report["file_path"]).stat().st_size == report["size_bytes"]
    assert not list((tmp_path / "clips").glob("*.part"))


# -- between a clip and its companions ------------------------------------------------------------

PAUSE_BEFORE_COMPANIONS = {"KLING_MCP_TEST_PAUSE_BEFORE_COMPANIONS": "60"}
"""The test hook of ``tasks/delivery.py``: the first server journals the clip, then waits a minute
before making its companions, so the kill lands exactly between the two."""


def clips_awaiting_companions(tmp_path: Path) -> list[str]:
    """Clips the journal holds without their companions yet (read while the server writes it)."""
    try:
        with sqlite3.connect(tmp_path / "state" / "tasks.sqlite3") as db:
            rows = db.execute("SELECT record FROM tasks").fetchall()
    except sqlite3.Error:
        return []  # not created yet, or busy this instant
    records = [json.loads(row) for (row,) in rows]
    return [record["file_path"] for record in records if record.get("companions_pending")]


def companion_files(clip: str) -> list[Path]:
    return [Path(clip + suffix) for suffix in (".last.png", ".contact.jpg", ".json")]


async def test_kill_9_between_a_clip_and_its_companions(emulator, tmp_path):
    arguments = {"prompt": "a heron takes off", "duration": 3, "provider": "novita"}
    task_id = await submit_then_kill(
        emulator, tmp_path, arguments, lambda: bool(clips_awaiting_companions(tmp_path)), **PAUSE_BEFORE_COMPANIONS
    )
    (clip,) = clips_awaiting_companions(tmp_path)
    assert Path(clip).is_file() and not any(path.exists() for path in companion_files(clip))
    asked = total_requests(emulator)

    report = await deliver_after_restart(emulator, tmp_path, task_id)
    assert report["status"] == "succeeded" and report["file_path"] == clip, report
    assert [report["last_frame_path"], report["contact_sheet_path"], report["sidecar_path"]] == [
        str(path) for path in companion_files(clip)
    ]
    assert all(path.is_file() for path in companion_files(clip))
    assert total_requests(emulator) == asked  # made from the clip on disk: the provider was not asked again


async def test_kill_9_between_a_film_and_its_companions(emulator, tmp_path):
    async with Client(build_server(make_settings(tmp_path, emulator))) as client:
        shots = [
            (await client.call_tool("generate_video", {"prompt": f"shot {n}", "duration": 3, "wait_seconds": 30}))
            .structured_content["task_id"]
            for n in (1, 2)
        ]
    task_id = await submit_then_kill(
        emulator, tmp_path, {"task_ids": shots}, lambda: bool(clips_awaiting_companions(tmp_path)),
        tool="assemble_video", **PAUSE_BEFORE_COMPANIONS,
    )  # fmt: skip
    (film,) = clips_awaiting_companions(tmp_path)
    assert "final-cut" in film and not any(path.exists() for path in companion_files(film))

    report = await deliver_after_restart(emulator, tmp_path, task_id)
    assert report["status"] == "succeeded" and report["file_path"] == film, report
    assert all(path.is_file() for path in companion_files(film))
    with Image.open(report["contact_sheet_path"]) as sheet:
        assert sheet.size[0] == 2 * 320  # still one frame per shot


async def test_a_restarted_server_resumes_its_tasks_by_itself(emulator, tmp_path, monkeypatch):
    """Start-up recovery runs in the background once the server has answered its first request
    after ``initialize``: nobody checks the task, yet the next server watches it again and
    delivers it, with its companions; until that answer, it asks the provider nothing."""
    monkeypatch.setattr(recovery, "RECOVERY_AFTER_SECONDS", 60.0)  # only the answer can start it here
    settings = make_settings(tmp_path, emulator)
    async with Client(build_server(settings)) as first:
        made = await first.call_tool("generate_video", {"prompt": "a slow tide [[render:60]]", "duration": 3})
        task_id = made.structured_content["task_id"]
    asked = total_requests(emulator)
    async with Client(build_server(settings)) as second:
        await anyio.sleep(0.5)  # initialized, and no other request yet
        idle = total_requests(emulator)
        assert {"generate_video", "check_task"} <= {tool.name for tool in (await second.list_tools()).tools}

        async def listed() -> dict:  # list_tasks only reads the journal: it neither polls nor watches
            (row,) = (await second.call_tool("list_tasks", {})).structured_content["tasks"]
            return row

        row = await eventually(listed, lambda row: row["status"] == "succeeded", timeout=60, interval=0.1, what="the task delivered")
    assert idle == asked  # recovery waited for the first answer
    assert row["task_id"] == task_id and all(Path(row[field]).is_file() for field in ("last_frame_path", "sidecar_path"))
