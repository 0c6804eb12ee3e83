"""Cancelling a task on its owner's request (MCP ``tasks/cancel``).

What a cancel can do depends on where the task is:

- **Awaiting a person's yes** (nothing sent): it ends at once, nothing is sent or billed.
- **Rendering at a provider**: the provider is asked to stop the render where it can
  (:meth:`Provider.cancel <kling_video_mcp.providers.base.Provider.cancel>`; ``docs/providers.md``
  says which providers document a way and which adapters call it); either way the
  server stops watching the task and never downloads its clip. A provider that cannot cancel may
  still finish the render and bill it, and the task's message says so.
- **An assembly being made here**: it ends; nothing is billed (it never was).
- **Finished** (delivered, failed, or already cancelled), or **rendered and downloading**
  (the provider has finished and billed it): nothing to stop; :class:`TaskFinished`.

A cancelled task is journaled as ``failed`` with the error code :data:`CANCELLED`, so every
path (``check_task``, the journal's budget sums, restarts) treats it as finished: it is never
watched again, and it counts against the budget unless it never reached a provider.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.models import TaskRecord, utcnow
from kling_video_mcp.providers import provider_class
from kling_video_mcp.tasks.consent import AWAITING

if TYPE_CHECKING:
    from kling_video_mcp.journal import Journal
    from kling_video_mcp.providers import Providers

log = logging.getLogger(__name__)

CANCELLED = "cancelled"
"""The error code of a task stopped on its owner's request."""


class TaskFinished(InvalidRequest):
    """The task has nothing left to stop: it finished, or its render is done and billed."""


def is_cancelled(record: TaskRecord) -> bool:
    """Whether ``record`` was stopped on its owner's request."""
    return record.status == "failed" and record.error_code == CANCELLED


async def cancel(journal: Journal, providers: Providers, record: TaskRecord) -> TaskRecord:
    """Stop the task ``record`` (already found for its owner); returns it as journaled, cancelled.

    Raises:
        TaskFinished: it finished already, or its render finished and only the download is left.
    """
    task_id = record.task_id
    if record.status == AWAITING:
        async with journal.exclusive("consent"):  # the section a confirm claims it in
            record = await journal.get(task_id) or record
            if record.status == AWAITING:
                return await _end(journal, record, "Stopped on request before anything was sent; nothing is billed.")
    if record.finished or record.status == "succeeded":
        what = "is finished" if record.finished else "has finished rendering (the provider bills it; its clip is downloading)"
        raise TaskFinished(f"Task {task_id!r} {what}, so there is nothing to cancel.", task_id=task_id)
    if record.kind == "assemble":
        return await _end(journal, record, "Stopped on request; the film is not made (assemblies cost nothing).")
    return await _end(journal, record, await _stop_at_provider(providers, record))


async def _stop_at_provider(providers: Providers, record: TaskRecord) -> str:
    """Ask the provider to stop the render where it can; the message the cancelled task carries."""
    assert record.provider is not None
    label = provider_class(record.provider).label
    stopped = False
    if record.provider_task_id is not None:
        try:
            provider = await providers.for_task(record)
            stopped = await provider.cancel(record.provider_task_id)
        except KlingError as exc:  # no key any more, or the provider refused: cancelled here all the same
            log.warning("task %s: %s did not take the cancel (%s)", record.task_id, label, exc.message)
    if stopped:
        return (
            f"Stopped on request: {label} agreed to stop the render; it may still bill the time already "
            "rendered. The server stopped watching it and will not download a clip."
        )
    return (
        f"Stopped on request here, but this server cannot stop a render at {label}, so it may still finish it and bill it "
        f"(about ${record.estimated_cost_usd or 0:.2f}). The server stopped watching it and will not download "
        "the clip; if you want it after all, find the task in the provider's dashboard."
    )


async def _end(journal: Journal, record: TaskRecord, message: str) -> TaskRecord:
    record.status = "failed"
    record.error_code = CANCELLED
    record.error_message = message
    record.finished_at = utcnow()
    record.confirm_by = None
    record.gave_up = False  # checking it again must not resume watching it
    log.info("task %s (user %s): cancelled on request", record.task_id, record.owner)
    return await journal.save(record)
