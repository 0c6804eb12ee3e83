"""The installed console script, run over stdio exactly as Claude Desktop runs it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from conftest import KEY, POLL_TIME_SCALE
from helpers import clip_duration, wait_done

pytestmark = pytest.mark.anyio


def console_script() -> str:
    """The ``kling-video-mcp`` entry point installed beside this Python."""
    beside = Path(sys.executable).parent / "kling-video-mcp"
    found = str(beside) if beside.exists() else shutil.which("kling-video-mcp")
    assert found, "the package must be installed (pip install -e '.[test]') so its console script exists"
    return found


def server_env(emulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(
        NOVITA_API_KEY=KEY, HIGHWAY_API_KEY=KEY, WAVESPEED_API_KEY=KEY,
        NOVITA_BASE_URL=emulator.url("novita"), HIGHWAY_BASE_URL=emulator.url("highway"),
        WAVESPEED_BASE_URL=emulator.url("wavespeed"),
        KLING_MCP_OUTPUT_DIR=str(tmp_path / "clips"), KLING_MCP_STATE_DIR=str(tmp_path / "state"),
        KLING_MCP_POLL_TIME_SCALE=str(POLL_TIME_SCALE),
    )  # fmt: skip
    env.update(extra)
    return env


async def test_console_script_over_stdio(emulator, tmp_path, era):
    params = StdioServerParameters(command=console_script(), args=[], env=server_env(emulator, tmp_path))
    async with Client(params, mode=era) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"generate_video", "animate_image", "check_task"} <= names
        submitted = await client.call_tool("generate_video", {"prompt": "rain on a tin roof", "duration": 3, "provider": "highway"})
        assert not submitted.is_error, submitted.structured_content
        done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content
    assert Path(done.structured_content["file_path"]).parent == tmp_path / "clips"
    assert clip_duration(done.structured_content["file_path"]) == pytest.approx(3, abs=0.1)
