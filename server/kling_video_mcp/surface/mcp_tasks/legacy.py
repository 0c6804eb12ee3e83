"""The 2025-11-25 wire: the experimental core tasks (SEP-1686), for the clients that speak them.

Negotiated in the ``initialize`` handshake: the server declares ``capabilities.tasks``
(``list``, ``cancel``, ``requests.tools.call``) and ``execution.taskSupport: "optional"`` on
``generate_video``, ``animate_image`` and ``assemble_video``. A call to one of them carrying the
``task`` param is answered with ``CreateTaskResult`` (``{"task": {...}}``) whose ``taskId`` is the
journal's task id, journaled before the answer leaves; without the param, with today's result.

- ``tasks/get``: the ``Task``; a failed render is ``failed`` here (SEP-1686 counts an
  ``isError`` tool result as failed), a cancelled one ``cancelled``.
- ``tasks/result``: blocks until the task ends, then returns exactly the result ``check_task``
  gives, with ``_meta["io.modelcontextprotocol/related-task"]``. While the task awaits a
  person's yes and the client can answer a form, the question is sent to it then, as an
  ``elicitation/create`` related to the task (the spec's ``input_required`` flow).
- ``tasks/list``: the caller's own tasks, newest first, 50 a page (an opaque cursor).
- ``tasks/cancel``: cancels the caller's unfinished task and returns it ``cancelled``;
  ``-32602`` for a finished one or another user's.
- ``notifications/tasks/status``: sent on the connection that made the task whenever its status
  changes, until it ends.

A task-augmented call that makes no task (a dry run, a request refused before anything was
journaled) gets a JSON-RPC error (``-32602``) carrying the tool's own words and structured
error: a ``CreateTaskResult`` needs a task, and a plain result is not what the client asked for.

The SDK validates a 2025-11-25 ``tools/call`` result as a ``CallToolResult``, and has no hook
for the ``tasks`` capability or a tool's ``execution``: those three are done by
:class:`LegacyTasks`, a server middleware, outside that check. Source: the 2025-11-25
specification, ``basic/utilities/tasks``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    CallToolResult,
    CancelTaskRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    TaskStatusNotification,
    TaskStatusNotificationParams,
    TextContent,
)
from pydantic import BaseModel

from kling_video_mcp.errors import KlingError
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.mcp_task_mode import as_task
from kling_video_mcp.surface.mcp_tasks import asking
from kling_video_mcp.surface.mcp_tasks.states import (
    TASK_TOOLS,
    TaskState,
    checked_id,
    journaled_task,
    owned,
    task_fields,
    task_state,
    tool_context,
    tool_result,
    without_waiting,
)
from kling_video_mcp.surface.state import AppState, app_state
from kling_video_mcp.surface.tools import _can_elicit as can_answer_forms  # façade: "can the client answer a form"
from kling_video_mcp.tasks.consent import AWAITING

log = logging.getLogger(__name__)

VERSION = "2025-11-25"
VERSIONS = frozenset({VERSION})
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
EXECUTION: dict[str, Any] = {"taskSupport": "optional"}
RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
LIST_PAGE = 50
"""Tasks per ``tasks/list`` page."""
RECHECK_SECONDS = 30.0
"""How long a wait for a task's next change lasts before its record is read again anyway."""


def task_object(view: TaskState) -> dict[str, Any]:
    """The 2025-11-25 ``Task``."""
    return task_fields(view, ttl="ttl", poll_interval="pollInterval")


def _dumped(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result or {})


class LegacyTasks:
    """Server middleware: the 2025-11-25 tasks capability, the tools' ``execution``, and task-augmented calls."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            result = _dumped(await call_next(ctx))
            if result.get("protocolVersion") == VERSION:
                result["capabilities"] = {**result.get("capabilities", {}), "tasks": CAPABILITY}
            return result
        if ctx.protocol_version != VERSION:
            return await call_next(ctx)
        if ctx.method == "tools/list":
            result = _dumped(await call_next(ctx))
            result["tools"] = [
                {**tool, "execution": EXECUTION} if tool.get("name") in TASK_TOOLS else tool for tool in result.get("tools", [])
            ]
            return result
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping) and ctx.params.get("task") is not None:
            return await _call_as_task(ctx, call_next)
        return await call_next(ctx)


async def _call_as_task(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> dict[str, Any]:
    params = dict(ctx.params or {})
    name = params.get("name")
    if name not in TASK_TOOLS:
        # The spec's answer to a task for a tool whose taskSupport is "forbidden" (the default).
        raise MCPError(code=METHOD_NOT_FOUND, message=f"{name} does not run as a task; call it without the task param.")
    params["arguments"] = without_waiting(params.get("arguments"))
    with as_task():
        result = CallToolResult.model_validate(_dumped(await call_next(replace(ctx, params=params))))
    tool_ctx = tool_context(ctx)
    text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
    record = await journaled_task(tool_ctx, result)
    if record is None:
        raise MCPError(code=INVALID_PARAMS, message=f"No task was made: {text}", data=result.structured_content)
    state = app_state(tool_ctx)
    view = await task_state(state, record)
    if state.task_followers is not None and not view.terminal:
        state.task_followers.start_soon(_follow, ctx.session, state, view, name=f"status of MCP task {record.task_id}")
    log.info("task %s (user %s): answered as an MCP task (2025-11-25)", record.task_id, record.owner)
    return {"task": task_object(view), "_meta": {IMMEDIATE_RESPONSE: text}}


@asynccontextmanager
async def followers() -> AsyncIterator[TaskGroup]:
    """Where the status notifications of tasks are sent from: a task group that outlives the
    requests that made the tasks, cancelled when the server stops."""
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


async def _follow(session: ServerSession, state: AppState, seen: TaskState) -> None:
    """Send ``notifications/tasks/status`` on ``session`` each time the task's status changes, until it
    ends or the connection is gone."""
    service = state.service
    try:
        while not seen.terminal:
            change = service.next_change()  # taken before the read, so a save in between is not missed
            view = await task_state(state, await service.get(seen.task_id))
            if view.status != seen.status:
                params = TaskStatusNotificationParams.model_validate(task_object(view))
                await session.send_notification(TaskStatusNotification(params=params))  # type: ignore[arg-type]
            seen = view
            if not seen.terminal:
                await service.wait_for_change(change, RECHECK_SECONDS)
    except Exception as exc:  # the client went away, or the task with it: nothing left to tell
        log.debug("stopped sending the status of task %s: %r", seen.task_id, exc)


async def get(ctx: ServerRequestContext[AppState, Any], params: GetTaskRequestParams) -> dict[str, Any]:
    """``tasks/get``: the caller's task; ``-32602`` for any other id."""
    tool_ctx = tool_context(ctx)
    return task_object(await task_state(app_state(tool_ctx), await owned(tool_ctx, params.task_id)))


async def result(ctx: ServerRequestContext[AppState, Any], params: GetTaskPayloadRequestParams) -> dict[str, Any]:
    """``tasks/result``: wait for the caller's task to end (asking the person on the way, where it waits
    for them and the client can ask), then its result as ``check_task`` gives it."""
    tool_ctx = tool_context(ctx)
    record = await owned(tool_ctx, params.task_id)
    service = app_state(tool_ctx).service
    asked = False
    with service.waiting([record.task_id]):
        while True:
            change = service.next_change()
            record = await service.read(record.task_id, owner=record.owner)
            if record.finished:
                break
            if record.status == AWAITING and not asked and can_answer_forms(tool_ctx):
                asked = True
                await _ask(ctx, tool_ctx, record)
                continue
            await service.wait_for_change(change, RECHECK_SECONDS)
    body = tool_result(tool_ctx, record).model_dump(by_alias=True, mode="json", exclude_none=True)
    body["_meta"] = {**body.get("_meta", {}), RELATED_TASK: {"taskId": record.task_id}}
    return body


async def _ask(ctx: ServerRequestContext[AppState, Any], tool_ctx: Context, record: TaskRecord) -> None:
    """Ask the person the spend question over this ``tasks/result`` request, and apply their answer."""
    related = {RELATED_TASK: {"taskId": record.task_id}}
    request = ElicitRequest(
        params=ElicitRequestFormParams(
            message=asking.question(record), requested_schema=asking.requested_schema(), _meta=related
        )
    )
    try:
        response = await ctx.session.send_request(
            request, ElicitResult, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
        )
    except Exception as exc:  # the client could not ask after all: the task waits for the screening room or its deadline
        log.info("task %s: asking for the spend through tasks/result failed: %r", record.task_id, exc)
        return
    await asking.answer(tool_ctx, record, response)


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise MCPError(code=INVALID_PARAMS, message="tasks/list: the cursor is not one this server gave.")
    return int(cursor)


async def list_tasks(ctx: ServerRequestContext[AppState, Any], params: PaginatedRequestParams) -> dict[str, Any]:
    """``tasks/list``: the caller's own tasks, newest first, :data:`LIST_PAGE` at a time."""
    tool_ctx = tool_context(ctx)
    state = app_state(tool_ctx)
    offset = _offset(params.cursor)
    records = await state.service.list(owner=caller_owner(tool_ctx), limit=offset + LIST_PAGE + 1)
    body: dict[str, Any] = {
        "tasks": [task_object(await task_state(state, record)) for record in records[offset : offset + LIST_PAGE]]
    }
    if len(records) > offset + LIST_PAGE:
        body["nextCursor"] = str(offset + LIST_PAGE)
    return body


async def cancel(ctx: ServerRequestContext[AppState, Any], params: CancelTaskRequestParams) -> dict[str, Any]:
    """``tasks/cancel``: the caller's unfinished task, cancelled; ``-32602`` when it is finished or not
    theirs, or the id breaks the task-id rule."""
    tool_ctx = tool_context(ctx)
    state = app_state(tool_ctx)
    try:
        record = await state.service.cancel(checked_id(params.task_id), owner=caller_owner(tool_ctx))
    except KlingError as exc:
        raise MCPError(code=INVALID_PARAMS, message=exc.message) from exc
    return task_object(await task_state(state, record))
