"""A journaled task seen as an MCP task, the same in both protocol eras.

Every MCP task *is* a journal task: its ``taskId`` is our task id, and everything said about it
is read from the journal, so it answers on any worker and after any restart. This module maps
a record to what both eras share (status, message, times, TTL, poll interval) and gives its
result, exactly the one ``check_task`` builds; ``modern`` and ``legacy`` put them on the wire.

Status, from the record:

- ``input_required``: awaiting a person's yes to its cost (``tasks/consent.py``);
- ``working``: queued, rendering, or rendered with its clip downloading (a render is finished
  only once its clip is safe on disk, as ``check_task`` says) or its companions being made;
- ``completed``: the clip (or film) is delivered with its contact sheet and last frame;
- ``failed``: the render, download or assembly failed, or a person declined the spend: its
  result is the ``isError`` result ``check_task`` gives;
- ``cancelled``: stopped on request (``tasks/cancellation.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult
from pydantic import TypeAdapter, ValidationError

from kling_video_mcp.errors import NotFound
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.mcp_tasks import asking
from kling_video_mcp.surface.params import TASK_ID_RULE, TaskIdText
from kling_video_mcp.surface.results import task_result
from kling_video_mcp.surface.state import AppState, app_state, task_report
from kling_video_mcp.surface.view import with_media
from kling_video_mcp.surface.waiting import describe
from kling_video_mcp.tasks import consent
from kling_video_mcp.tasks.cancellation import is_cancelled

TASK_TOOLS = frozenset({"generate_video", "animate_image", "assemble_video"})
"""The tools answered with a task when the client asks for (2025-11-25) or accepts (2026-07-28) one."""
UNKNOWN_PACE_POLL_SECONDS = 30.0
"""``pollIntervalMs`` (before the poll time scale) for a task whose pace cannot be known."""
RESULT_KEPT_SECONDS = 24 * 3600.0
"""How long past a render's latest possible end its task is promised to be kept (the journal keeps
it for good): time for a client to come back for the result."""

Status = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[Status] = frozenset({"completed", "failed", "cancelled"})


_TASK_ID = TypeAdapter(TaskIdText)


def well_formed(task_id: str) -> bool:
    """Whether ``task_id`` keeps the tools' task-id rule (where a method must answer any id)."""
    try:
        _TASK_ID.validate_python(task_id)
    except ValidationError:
        return False
    return True


@dataclass(frozen=True)
class TaskState:
    """What both eras say about a task."""

    task_id: str
    status: Status
    message: str
    """Progress and ETA while working, the question while input is required, else the outcome."""
    created_at: datetime
    updated_at: datetime
    ttl_ms: int
    """Outlives the render: its usual time, plus the server's ceiling past it, plus the time a person
    may take to say yes, plus :data:`RESULT_KEPT_SECONDS`."""
    poll_interval_ms: int
    """When polling again can tell something new: the next poll the server itself makes of the
    provider (paced by the provider's ETA), never sooner than the provider's minimum interval."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def without_waiting(arguments: dict[str, Any] | None) -> dict[str, Any]:
    """A task tool's arguments with ``wait_seconds`` 0: a call run as a task returns at once."""
    return {**(arguments or {}), "wait_seconds": 0}


def tool_context(ctx: ServerRequestContext[AppState, Any]) -> Context:
    """The tools' :class:`Context` around a request context of an extension handler, so the tools'
    helpers (the caller's owner, the app state, the view's media) serve ``tasks/*`` unchanged."""
    return Context(request_context=ctx)


def checked_id(task_id: str) -> str:
    """``task_id`` if it keeps the tools' task-id rule.

    Raises:
        MCPError: ``-32602`` naming the field and the rule.
    """
    if not well_formed(task_id):
        raise MCPError(code=INVALID_PARAMS, message=f"taskId: {TASK_ID_RULE}.")
    return task_id


async def owned(ctx: Context, task_id: str) -> TaskRecord:
    """The caller's task ``task_id``, as it stands (a finished clip's missing companions made again first).

    Raises:
        MCPError: ``-32602`` (invalid params, as both eras' specs ask for an unknown task id) with
            the words ``check_task`` uses, whether the task does not exist or is another user's;
            or naming the rule a broken id breaks.
    """
    checked_id(task_id)
    try:
        return await app_state(ctx).service.read(task_id, owner=caller_owner(ctx))
    except NotFound as exc:
        raise MCPError(code=INVALID_PARAMS, message=exc.message) from exc


async def journaled_task(ctx: Context, result: CallToolResult) -> TaskRecord | None:
    """The caller's journaled task a tool's result reports, if it reports one (a dry run, or a request
    refused before anything was journaled, reports none)."""
    task_id = (result.structured_content or {}).get("task_id") if isinstance(result.structured_content, dict) else None
    if not isinstance(task_id, str):
        return None
    return await mine(ctx, task_id)


async def mine(ctx: Context, task_id: str) -> TaskRecord | None:
    """The caller's task ``task_id``, or ``None`` when they have none by that id."""
    try:
        return await app_state(ctx).service.get(task_id, caller_owner(ctx))
    except NotFound:
        return None


def tool_result(ctx: Context, record: TaskRecord) -> CallToolResult:
    """The task's result as ``check_task`` gives it: text, and for a delivered clip its resource link
    and contact sheet, structured content, the view's media for an MCP Apps client; ``isError`` when
    it failed or was cancelled."""
    return with_media(ctx, task_result(task_report(app_state(ctx), record)), [record])


def _status(record: TaskRecord) -> Status:
    if record.status == consent.AWAITING:
        return "input_required"
    if record.delivered:  # the clip with its companions: the result is whole and chainable
        return "completed"
    if record.status == "failed":
        return "cancelled" if is_cancelled(record) else "failed"
    return "working"


async def task_state(state: AppState, record: TaskRecord) -> TaskState:
    """``record`` as an MCP task (see the module's docstring for the status)."""
    status = _status(record)
    service, settings = state.service, state.settings
    pace = await service.pacing(record)
    if pace is None:  # its provider's key was removed since: say what is known without it
        expected, interval = 0.0, UNKNOWN_PACE_POLL_SECONDS * settings.poll_time_scale
    else:
        expected, interval = pace.expected_seconds, pace.next_poll_in(record)
    if status == "working":
        message = await describe(service, record)
    elif status == "input_required":
        message = ask_message(record)
    else:
        message = task_report(state, record).message
    ttl = expected + settings.task_ceiling_seconds + settings.confirm_timeout_seconds + RESULT_KEPT_SECONDS
    return TaskState(
        task_id=record.task_id,
        status=status,
        message=message,
        created_at=record.created_at,
        updated_at=record.updated_at,
        ttl_ms=round(ttl * 1000),
        poll_interval_ms=max(1, round(interval * 1000)),
    )


def ask_message(record: TaskRecord) -> str:
    """The status message of a task awaiting a person's yes: the question, and how it is answered."""
    return (
        f"Awaiting the person's yes, nothing sent yet: {asking.question(record)}\nThey answer the task's input request "
        "(or Confirm/Decline in the screening room); without an answer it ends as declined."
    )


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as the specs' examples write ``createdAt``."""
    return moment.isoformat().replace("+00:00", "Z")


def task_fields(view: TaskState, *, ttl: str, poll_interval: str) -> dict[str, Any]:
    """The ``Task`` fields both eras share; they name the TTL and poll interval (milliseconds) differently."""
    return {
        "taskId": view.task_id,
        "status": view.status,
        "statusMessage": view.message,
        "createdAt": iso(view.created_at),
        "lastUpdatedAt": iso(view.updated_at),
        ttl: view.ttl_ms,
        poll_interval: view.poll_interval_ms,
    }
