"""With no API key, the sandbox renders a real placeholder clip through the same code path."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from conftest import EMULATOR_TIME_SCALE, POLL_TIME_SCALE
from helpers import clip_duration, clip_size, wait_done
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.journal.sqlite import SqliteJournal

pytestmark = pytest.mark.anyio


@pytest.fixture
def keyless_settings(tmp_path) -> Settings:
    return Settings(
        provider_keys={"NOVITA_API_KEY": None, "HIGHWAY_API_KEY": None, "WAVESPEED_API_KEY": None}, provider=None,
        output_dir=tmp_path / "clips", state_dir=tmp_path / "state",
        provider_settings={"KLING_MCP_SANDBOX_TIME_SCALE": str(EMULATOR_TIME_SCALE)}, poll_time_scale=POLL_TIME_SCALE,
    )  # fmt: skip


async def test_sandbox_is_the_default_without_keys(keyless_settings, era):
    assert keyless_settings.default_provider == "sandbox"
    async with Client(build_server(keyless_settings), mode=era) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["generate_video"].input_schema["properties"]["provider"]["default"] == "sandbox"
        submitted = await client.call_tool("generate_video", {"prompt": "a paper boat on a river", "duration": 3, "aspect_ratio": "1:1"})
        assert not submitted.is_error, submitted.structured_content
        assert submitted.structured_content["estimated_cost_usd"] == 0
        done = await wait_done(client, submitted.structured_content["task_id"])
    report = done.structured_content
    assert report["status"] == "succeeded" and report["sandbox"] is True
    assert any("placeholder" in note and "NOVITA_API_KEY" in note for note in report["notes"])
    assert "placeholder" in done.content[0].text
    assert clip_duration(report["file_path"]) == pytest.approx(3, abs=0.1)
    width, height = clip_size(report["file_path"])
    assert width == height


async def test_restart_mid_download_fetches_a_fresh_link(keyless_settings):
    async with Client(build_server(keyless_settings)) as client:
        submitted = await client.call_tool("generate_video", {"prompt": "a clock tower", "duration": 3})
        done = await wait_done(client, submitted.structured_content["task_id"])
    task_id = done.structured_content["task_id"]

    # Make the journal look as if that server stopped mid-download: the clip is not on disk and
    # its link points at that server's embedded emulator, which is gone now.
    journal = SqliteJournal(keyless_settings.journal_path)
    record = await journal.get(task_id)
    Path(record.file_path).unlink()
    record.file_path = None
    await journal.save(record)
    await journal.aclose()

    async with Client(build_server(keyless_settings)) as client:
        again = await wait_done(client, task_id)
    report = again.structured_content
    assert report["status"] == "succeeded", report
    assert Path(report["file_path"]).is_file()
    assert report["provider_video_url"] != record.video_url  # a fresh link from the new sandbox
