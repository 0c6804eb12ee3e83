"""``wait_seconds``: wait for tasks inside a tool call, with MCP progress notifications.

The wait is capped at 50 s, under Claude Desktop's 60 s tool-call limit (https://github.com/anthropics/claude-code/issues/22542);
while it lasts, a progress notification goes out at least every :data:`PROGRESS_INTERVAL`
seconds (``ctx.report_progress`` is a no-op when the client sent no progress token), with the
provider's percent where it gives one and an estimate from the model's usual render time
where it does not. Meanwhile the watcher polls the tasks at their provider's minimum interval
(``TaskService.waiting``), so a clip lands within one interval of the render's end.
"""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import Context

from kling_video_mcp.models import TaskRecord, utcnow
from kling_video_mcp.tasks.consent import AWAITING
from kling_video_mcp.tasks.service import TaskService

MAX_WAIT_SECONDS = 50
PROGRESS_INTERVAL = 5.0
"""Seconds between progress notifications, at most (a waiting client hears from the server at least every 10 s)."""


async def _percent_and_left(service: TaskService, record: TaskRecord) -> tuple[float, float | None]:
    """Percent done (0-100) and seconds left, from the provider where it says, else estimated."""
    if record.finished:
        return 100.0, 0.0
    if record.status == AWAITING:
        return 0.0, None
    if record.status == "succeeded":
        return 99.0, None  # rendered; the clip is downloading
    pace = await service.pacing(record)
    if pace is None:  # its provider's key was removed since: only what the provider last said
        return record.progress_percent or 0.0, None
    left = max(pace.remaining(record), 0.0) or None
    if record.progress_percent:
        return record.progress_percent, left
    elapsed = (utcnow() - record.created_at).total_seconds()
    return min(95.0, 100.0 * elapsed / pace.expected_seconds) if pace.expected_seconds > 0 else 0.0, left


def _phrase(record: TaskRecord, percent: float, left: float | None) -> str:
    if record.status == AWAITING:
        words = "awaiting the person's confirmation"
    elif record.status == "queued":
        words = "queued at the provider"
    elif record.status == "succeeded":
        words = "render finished, downloading the clip"
    else:
        words = f"rendering, {percent:.0f}% done"
    return words + (f", about {left:.0f} s left" if left else "")


async def describe(service: TaskService, record: TaskRecord) -> str:
    """One task's progress in words, as its progress notifications put it (``rendering, 40% done, about 30 s left``)."""
    return _phrase(record, *await _percent_and_left(service, record))


async def wait_reporting(ctx: Context, service: TaskService, task_ids: list[str], seconds: float) -> None:
    """Return when every task is finished or ``seconds`` have passed, reporting progress meanwhile.

    A task awaiting a person's confirmation counts as settled: nothing moves it but their answer.
    """
    with service.waiting(task_ids):
        await _wait_reporting(ctx, service, task_ids, anyio.current_time() + min(seconds, MAX_WAIT_SECONDS))


async def _wait_reporting(ctx: Context, service: TaskService, task_ids: list[str], deadline: float) -> None:
    reported = 0.0
    while (left := deadline - anyio.current_time()) > 0:
        change = service.next_change()
        records = [await service.get(task_id) for task_id in task_ids]
        if all(record.finished or record.status == AWAITING for record in records):
            return
        await service.wait_for_change(change, min(PROGRESS_INTERVAL, left))
        records = [await service.get(task_id) for task_id in task_ids]
        estimates = [await _percent_and_left(service, record) for record in records]
        percent = sum(share for share, _ in estimates) / len(estimates)
        if len(records) == 1:
            message = _phrase(records[0], *estimates[0])
        else:
            message = f"{sum(record.finished for record in records)} of {len(records)} tasks done"
        # Progress must rise with every notification (MCP progress rules).
        reported = max(percent, reported + 0.1)
        await ctx.report_progress(round(reported, 1), 100.0, message)
