"""Taking work up again: what an earlier server left at start-up, and a task the server gave up on.

Both only read the journal and resume work (no provider is sent anything new), so a server
stopped in the middle loses nothing: the next one does it again.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from kling_video_mcp.journal import Journal, is_open
from kling_video_mcp.models import TaskRecord, utcnow
from kling_video_mcp.tasks.delivery import Delivery
from kling_video_mcp.tasks.submission import Submission
from kling_video_mcp.tasks.watcher import Watcher

STARTUP_REPAIR_SCAN = 1_000
"""Newest finished tasks whose companions start-up checks (and makes again where they went missing)."""
RECOVERY_AFTER_SECONDS = 2.0
"""Start-up recovery waits for the server's first answer after the handshake (``tools/list``,
usually), and at most this long: an HTTP worker may have no client for a while."""


async def recover(
    journal: Journal, submission: Submission, delivery: Delivery, watcher: Watcher, answering: anyio.Event
) -> None:
    """Take up what an earlier server left: settle submits cut off mid-flight, watch unfinished
    tasks again (a clip journaled without its companions gets them), and make again the
    companions of recently finished clips that went missing.

    It starts once ``answering`` is set (the surface's first answer after the handshake is on
    its way) or after :data:`RECOVERY_AFTER_SECONDS`, so a client starting the server is answered
    first; a task checked meanwhile is resumed by that check itself."""
    with anyio.move_on_after(RECOVERY_AFTER_SECONDS):
        await answering.wait()
    await anyio.sleep(0)  # yield once, so the answer's write goes ahead of the first journal read
    for record in await journal.orphaned_submits(utcnow()):
        await anyio.lowlevel.checkpoint()
        if (current := await journal.get(record.task_id)) is not None:
            await submission.settle_if_orphaned(current)
    if not journal.shared:  # on a shared journal, leases hand the unfinished tasks out
        for record in await journal.unfinished():
            await anyio.lowlevel.checkpoint()
            current = await journal.get(record.task_id)
            if current is None or not is_open(current) or watcher.watches(current.task_id):
                continue  # finished, or taken up by a check meanwhile
            current.watched_since = utcnow()  # the ceiling counts from now, not from a past run
            await journal.save(current)
            await watcher.watch(current.task_id)
    for record in await journal.recent("succeeded", STARTUP_REPAIR_SCAN):
        await anyio.lowlevel.checkpoint()
        await delivery.repair(record)


async def resume_given_up(journal: Journal, record: TaskRecord) -> str:
    """Watch again a task the server gave up on (``gave_up``: a timeout, or downloads that kept
    failing): it runs again with its error cleared, its ceiling counted from now. Returns what to
    tell the caller about the stop, for this answer only (the journal keeps the task as it goes on)."""
    stopped = (record.error_code or "an error").replace("_", " ")
    said = (
        f"This task had stopped ({stopped}): {record.error_message} "
        "Checking it resumed watching; call check_task again in a while."
    )
    record.gave_up = False
    record.status = "running" if record.status == "failed" else record.status
    record.error_code = record.error_message = None
    record.watched_since = utcnow()
    await journal.save(record)
    return said
