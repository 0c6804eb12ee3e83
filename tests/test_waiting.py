"""Never poll late: a client waiting on a task gets its clip within moments of the render's end.

The scenario: a Novita render that reports ``eta: 0`` while it runs, watched by a
client calling with ``wait_seconds``. Before the fix the watcher read 0 as "unknown", fell back
to the model's usual 4K time and slept long, so the clip landed well after the render ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from mcp import Client

from conftest import make_settings
from helpers import eventually
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.tasks.watcher import Pace

pytestmark = pytest.mark.anyio

RENDER_SECONDS = 12.0
"""The render of the issue's report, in provider seconds."""
LATE_AFTER = 6.0
"""Provider seconds after the render's end by which the clip must be in the client's hands:
the provider's 2 s minimum poll interval, plus the download and previews of a small clip
(real time that the sped-up clock magnifies)."""
REAL_RATE_LIMIT = Settings.model_fields["provider_rate_limit"].default


@pytest.fixture
def world(tmp_path, emulator) -> Iterator[Callable[[float], Settings]]:
    """Speeds up the emulator's clock, the polling pace and the rate limit alike by ``1 / scale``."""
    before = emulator.config.time_scale

    def speed_up(scale: float) -> Settings:
        emulator.config.time_scale = scale
        return make_settings(tmp_path, emulator, poll_time_scale=scale, provider_rate_limit=REAL_RATE_LIMIT / scale)

    yield speed_up
    emulator.config.time_scale = before


def render_end(emulator) -> float:
    """Unix time the emulator's one Novita task finished rendering."""
    polls = [r for r in emulator.requests("novita") if r["path"] == "/v3/async/task-result"]
    task = emulator.emulator.find_task("novita", polls[0]["query"]["task_id"])
    assert task is not None
    return task.finishes_at


async def test_eta_zero_render_is_delivered_to_a_waiting_client_on_time(world, emulator, era):
    scale = 0.25
    prompt = f"a harbour at dawn [[eta:zero]] [[render:{RENDER_SECONDS:g}]]"
    async with Client(build_server(world(scale)), mode=era) as client:
        submitted = await client.call_tool("generate_video", {"prompt": prompt, "provider": "novita", "mode": "4k"})
        task_id = submitted.structured_content["task_id"]
        checked = await client.call_tool("check_task", {"task_id": task_id, "wait_seconds": 50})
        returned_at = time.time()
    report = checked.structured_content
    assert report["status"] == "succeeded", report
    late = (returned_at - render_end(emulator)) / scale
    assert 0 <= late <= LATE_AFTER, f"clip handed over {late:.1f} provider seconds after the render ended"


async def test_eta_zero_is_read_through_progress_when_nobody_waits(world, emulator):
    """No waiting client: the thrifty pace still lands near the end, estimated from the progress."""
    scale = 0.1
    async with Client(build_server(world(scale))) as client:
        submitted = await client.call_tool(
            "generate_video", {"prompt": "a field [[eta:zero]] [[render:40]]", "provider": "novita", "mode": "4k"}
        )
        task_id = submitted.structured_content["task_id"]
        # list_tasks reads the journal without asking for a poll, so it leaves the pace alone.
        await eventually(
            lambda: client.call_tool("list_tasks", {"status": "succeeded"}), lambda listed: task_id in {row["task_id"] for row in listed.structured_content["tasks"]},
            timeout=20, interval=0.01, what="the task listed as succeeded",
        )  # fmt: skip
        delivered_at = time.time()
    late = (delivered_at - render_end(emulator)) / scale
    # The model's usual 4K time (300 s) would put polls up to 30 s apart.
    assert 0 <= late <= 2 * LATE_AFTER, f"clip on disk {late:.1f} provider seconds after the render ended"


def test_pace_reads_progress_when_eta_is_zero():
    from datetime import timedelta

    from kling_video_mcp.models import GenerationRequest, TaskRecord, utcnow

    request = GenerationRequest(provider="novita", mode="4k", kind="t2v", prompt="x")
    record = TaskRecord(
        task_id="t", provider="novita", mode="4k", kind="t2v", endpoint="e", request=request, fingerprint="f",
        status="running", progress_percent=75.0, eta_seconds=0, running_since=utcnow() - timedelta(seconds=30),
    )  # fmt: skip
    pace = Pace(expected_seconds=300.0, min_interval=2.0, max_interval=30.0)
    assert pace.remaining(record) == pytest.approx(10.0, abs=0.5)
    record.progress_percent = None
    assert pace.remaining(record) == pytest.approx(300.0, abs=0.5)
