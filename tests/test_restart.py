"""A server killed with SIGKILL mid-render or mid-download loses nothing: the next one delivers.

The first server runs over stdio as a subprocess that records its PID (so the test can
``kill -9`` exactly it); the second is the plain console script on the same state folder.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from helpers import clip_duration, wait_done
from test_stdio import console_script, server_env

pytestmark = pytest.mark.anyio

RECORD_PID_AND_SERVE = (
    "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
    "from kling_video_mcp.cli import main; main([])"
)


async def submit_then_kill(emulator, tmp_path: Path, arguments: dict, kill_when: Callable[[], bool], **env: str) -> str:
    """Submit through a first server process, wait until ``kill_when()``, then SIGKILL it.
    ``env`` is added to the server's environment (another provider's variables)."""
    pid_file = tmp_path / "server.pid"
    params = StdioServerParameters(
        command=sys.executable, args=["-c", RECORD_PID_AND_SERVE, str(pid_file)], env=server_env(emulator, tmp_path, **env)
    )
    submitted: list[str] = []
    killed = anyio.Event()

    async def first_server() -> None:
        try:
            async with Client(params) as client:
                result = await client.call_tool("generate_video", arguments)
                assert not result.is_error, result.structured_content
                submitted.append(result.structured_content["task_id"])
                await anyio.sleep_forever()
        except Exception:
            if not killed.is_set():
                raise  # a failure before the kill is the test's failure; after it, the expected broken pipe

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(first_server)
            while not (submitted and kill_when()):
                await anyio.sleep(0.02)
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
