"""Long renders as MCP tasks, in both protocol eras, on top of the task journal.

A render already is a durable task here: journaled before its submit, watched until its clip is
on disk, kept across restarts and shared by every worker. This package shows it to the clients
that poll MCP tasks, beside (never instead of) ``check_task``, ``wait_seconds`` and the
screening room:

- :mod:`.modern`: 2026-07-28, the ``io.modelcontextprotocol/tasks`` extension (SEP-2663), for
  clients that list it in their request's capabilities;
- :mod:`.legacy`: 2025-11-25, the experimental core tasks (SEP-1686), for calls with the ``task``
  param;
- :mod:`.states`: the mapping both share (a record's status, message, TTL, poll interval, result);
- :mod:`.asking`: a spend awaiting a person's yes, asked through the task;
- :mod:`kling_video_mcp.surface.mcp_task_mode`: whether the call being served runs as a task (the
  tools read it; kept outside this package, which imports the tools).

Built on the ``mcp`` SDK's public :class:`~mcp.server.extension.Extension` API (the SDK has no
tasks runtime): :class:`McpTasks` is advertised under ``capabilities.extensions``, serves the
``tasks/*`` methods of both eras and intercepts ``tools/call``; its :attr:`McpTasks.legacy`
middleware does the 2025-11-25 parts the SDK has no hook for. Owners: every ``tasks/*`` request
sees only the caller's tasks (another user's task id is "not found", in ``check_task``'s words).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, RequestHandler
from mcp.types import (
    CallToolRequestParams,
    CancelTaskRequestParams,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
)

from kling_video_mcp.surface.mcp_task_mode import as_task
from kling_video_mcp.surface.mcp_tasks import legacy, modern
from kling_video_mcp.surface.mcp_tasks.states import TASK_TOOLS, tool_context, without_waiting

__all__ = ["McpTasks"]

BOTH_ERAS = legacy.VERSIONS | modern.VERSIONS


def _by_era(modern_handler: RequestHandler, legacy_handler: RequestHandler) -> RequestHandler:
    """One handler for a method both eras have, in each era's shape."""

    async def handle(ctx: ServerRequestContext[Any, Any], params: Any) -> HandlerResult:
        era_handler = modern_handler if ctx.protocol_version in modern.VERSIONS else legacy_handler
        return await era_handler(ctx, params)

    return handle


class McpTasks(Extension):
    """The tasks extension: pass it in ``MCPServer(extensions=...)`` and :attr:`legacy` in ``middleware``."""

    identifier = modern.EXTENSION_ID

    def __init__(self) -> None:
        self.legacy = legacy.LegacyTasks()
        """The 2025-11-25 middleware (capability, ``execution``, task-augmented calls)."""

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", GetTaskRequestParams, _by_era(modern.get, legacy.get), BOTH_ERAS),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, _by_era(modern.cancel, legacy.cancel), BOTH_ERAS),
            MethodBinding("tasks/update", modern.UpdateTaskParams, modern.update, modern.VERSIONS),
            MethodBinding("tasks/result", GetTaskPayloadRequestParams, legacy.result, legacy.VERSIONS),
            MethodBinding("tasks/list", PaginatedRequestParams, legacy.list_tasks, legacy.VERSIONS),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """A 2026-07-28 client that opted in gets a task for a render or an assembly; any other call passes."""
        if params.name not in TASK_TOOLS or not modern.opted_in(ctx):
            return await call_next(ctx)
        # The handler is invoked with this very params object (Extension.intercept_tool_call's contract).
        params.arguments = without_waiting(params.arguments)
        with as_task():
            result = await call_next(ctx)
        return await modern.created(tool_context(ctx), result)  # type: ignore[return-value]
