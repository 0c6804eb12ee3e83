"""App-only tools (``_meta.ui.visibility: ["app"]``): callable by the screening room, never by the model.

The MCP Apps extension puts this filtering on the host: a host lists every tool, offers
its model only the tools visible to the model, and lets a view call only the tools visible
to the app (ext-apps spec, ``McpUiToolMeta.visibility``). The server cannot tell a view's
call from the model's: both reach it as ``tools/call`` from the host, so for a client that
negotiated Apps the host is trusted with it.

A client that did not negotiate Apps has no view, so every call it makes comes from its
model or its user's code: :class:`HideAppOnlyTools` leaves app-only tools out of its
``tools/list``, and each app-only tool refuses its calls (:func:`called_from_a_view`).
"""

from __future__ import annotations

from typing import Any

from mcp.server.apps import client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.types import ListToolsResult

APP_ONLY_META: dict[str, Any] = {"ui": {"visibility": ["app"]}}
"""The ``_meta`` of a tool only a view may call."""


def is_app_only(meta: dict[str, Any] | None) -> bool:
    """Whether a tool's ``_meta`` keeps it from the model (``ui.visibility`` set, without ``model``)."""
    visibility = ((meta or {}).get("ui") or {}).get("visibility")
    return isinstance(visibility, list) and "model" not in visibility


def called_from_a_view(ctx: Context) -> bool:
    """Whether the caller can have a view at all: it negotiated MCP Apps."""
    return client_supports_apps(ctx)


class HideAppOnlyTools:
    """Server middleware: ``tools/list`` for a client without MCP Apps omits app-only tools."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or client_supports_apps(ctx):
            return result
        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [tool for tool in result.tools if not is_app_only(tool.meta)]})
        if isinstance(result, dict):
            return {**result, "tools": [tool for tool in result.get("tools", []) if not is_app_only(tool.get("_meta"))]}
        return result
