"""The 2026-07-28 wire: the ``io.modelcontextprotocol/tasks`` extension (SEP-2663).

Task creation is the server's choice, and only for a client that listed the extension in its
request's capabilities: such a client's ``generate_video``, ``animate_image`` and
``assemble_video`` calls are answered with a ``CreateTaskResult`` (``resultType: "task"``) whose
``taskId`` is the journal's task id, journaled before the answer leaves. Any other client gets
exactly the plain results. A call that makes no task (a dry run, a request refused before
anything was journaled) is answered with its plain result to every client, as the extension
allows.

- ``tasks/get``: the ``DetailedTask``; ``completed`` inlines the full ``CallToolResult`` (the one
  ``check_task`` builds), including a failed render's ``isError`` result, since ``failed`` is for
  JSON-RPC errors only; ``input_required`` carries the spend question as an input request.
- ``tasks/update``: answers to input requests; an empty ack, for any id (the spec's rule).
- ``tasks/cancel``: an empty ack, for any id; the caller's unfinished task is cancelled
  (``tasks/cancellation.py``), anything else is left alone.

Sources: SEP-2663 (``seps/2663-tasks-extension.md`` in modelcontextprotocol/modelcontextprotocol),
and ``ttlMs``/``pollIntervalMs`` as the final extension spells them (the draft said ``ttlSeconds``).
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, CancelTaskRequestParams, ElicitResult, GetTaskRequestParams, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from kling_video_mcp.errors import KlingError
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.mcp_tasks import asking
from kling_video_mcp.surface.mcp_tasks.states import (
    TaskState,
    journaled_task,
    mine,
    owned,
    task_fields,
    task_state,
    tool_context,
    tool_result,
    well_formed,
)
from kling_video_mcp.surface.state import AppState, app_state
from kling_video_mcp.tasks.consent import AWAITING

log = logging.getLogger(__name__)

EXTENSION_ID = "io.modelcontextprotocol/tasks"
VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)


class UpdateTaskParams(RequestParams):
    """``tasks/update`` params: the task and the caller's answers, keyed as its input requests were
    (the id unchecked here: any id gets its ack)."""

    task_id: str
    input_responses: dict[str, Any] = {}


def opted_in(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client listed the tasks extension (only such a client may get a task)."""
    if ctx.protocol_version not in VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and EXTENSION_ID in capabilities.extensions)


def _fields(view: TaskState) -> dict[str, Any]:
    return task_fields(view, ttl="ttlMs", poll_interval="pollIntervalMs")


async def created(ctx: Context, result: object) -> object:
    """The answer to a tool call run as a task: its ``CreateTaskResult``, or ``result`` itself when
    the call made no task."""
    if not isinstance(result, CallToolResult):
        return result  # an input-required result: nothing to make a task of
    record = await journaled_task(ctx, result)
    if record is None:
        return result
    view = await task_state(app_state(ctx), record)
    log.info("task %s (user %s): answered as an MCP task (2026-07-28)", record.task_id, record.owner)
    return {"resultType": "task", **_fields(view)}


async def get(ctx: ServerRequestContext[AppState, Any], params: GetTaskRequestParams) -> dict[str, Any]:
    """``tasks/get``: the caller's task as a ``DetailedTask``; ``-32602`` for any other id."""
    tool_ctx = tool_context(ctx)
    record = await owned(tool_ctx, params.task_id)
    view = await task_state(app_state(tool_ctx), record)
    body = {"resultType": "complete", **_fields(view)}
    if view.status in ("completed", "failed"):
        body["status"] = "completed"  # a failed render is a tool result with isError, not a JSON-RPC error
        body["result"] = tool_result(tool_ctx, record).model_dump(by_alias=True, mode="json", exclude_none=True)
    elif view.status == "input_required":
        body["inputRequests"] = asking.input_requests(record)
    return body


async def update(ctx: ServerRequestContext[AppState, Any], params: UpdateTaskParams) -> dict[str, Any]:
    """``tasks/update``: apply the answer to the spend question, if it is outstanding; always an empty ack."""
    tool_ctx = tool_context(ctx)
    known = well_formed(params.task_id)
    record = await mine(tool_ctx, params.task_id) if known else None
    response = params.input_responses.get(asking.SPEND_CONSENT)
    if record is None or record.status != AWAITING or response is None:
        return {}  # unknown, another user's, not waiting, or not our key: ignored, as the spec asks
    try:
        answer = ElicitResult.model_validate(response)
    except ValidationError:
        log.info("task %s: an input response that is no elicitation result was ignored", record.task_id)
        return {}
    await asking.answer(tool_ctx, record, answer)
    return {}


async def cancel(ctx: ServerRequestContext[AppState, Any], params: CancelTaskRequestParams) -> dict[str, Any]:
    """``tasks/cancel``: cancel the caller's unfinished task; an empty ack for any id (the spec's rule)."""
    tool_ctx = tool_context(ctx)
    if not well_formed(params.task_id):
        return {}
    try:
        await app_state(tool_ctx).service.cancel(params.task_id, owner=caller_owner(tool_ctx))
    except KlingError as exc:  # not found, another user's, or finished: nothing to do
        log.info("tasks/cancel of %s left it as it was: %s", params.task_id, exc.message)
    return {}
