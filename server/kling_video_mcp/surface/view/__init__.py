"""The screening room: one MCP Apps view (``ui://kling-video/screening-room.html``).

Hosts that render MCP Apps (https://github.com/modelcontextprotocol/ext-apps) show it beside the results of the tools bound to it:
a player for one task (the clip, its facts, cost and prompt; live progress while it renders),
a storyboard grid for several (one card per shot, refreshed through ``check_task`` until all
are done, and a "make the final cut" button calling ``assemble_video``), and Confirm/Decline
for a request awaiting the person's yes (``confirm_spend``).

The HTML is built from ``ui/`` (``npm run build``) with the official client library
``@modelcontextprotocol/ext-apps`` into one self-contained file shipped in this package, so
users need no Node. The view adds to the tools' results, never replaces them: clients without
Apps get exactly the same text, contact sheet and resource link as before.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from kling_video_mcp.media.previews import preview_path
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.auth import caller_may_read
from kling_video_mcp.surface.state import AppState, app_state
from kling_video_mcp.tasks.owners import owner_folder

VIEW_URI = "ui://kling-video/screening-room.html"
VIEW_FILE = "screening-room.html"
BOUND_TOOLS = ("check_task", "generate_video", "animate_image", "assemble_video")
"""The tools whose results the view shows (``_meta.ui.resourceUri``)."""
VIEW_BINDING: dict[str, Any] = {"ui": {"resourceUri": VIEW_URI}}
"""The tool ``_meta`` that binds a tool to the view, as ``Apps.tool`` stamps it. The tools are
registered with ``MCPServer.tool(meta=VIEW_BINDING)`` because ``Apps`` applies its own tools only
when the server is constructed, before ``register_tools`` runs."""
MEDIA_META_KEY = "kling-video-mcp/media"
"""Result ``_meta`` key under which Apps clients get each task's prompt and media links."""


def view_html() -> str:
    """The built view (one self-contained HTML file)."""
    return files(__package__).joinpath(VIEW_FILE).read_text(encoding="utf-8")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a CSP source list names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def screening_room(public_base_url: str | None) -> Apps:
    """The Apps extension carrying the view; over HTTP its CSP lets it play media from
    ``public_base_url`` (the signed ``/previews/`` and ``/clips/`` links)."""
    apps = Apps()
    domains = [origin(public_base_url)] if public_base_url else None
    apps.add_html_resource(
        VIEW_URI,
        view_html(),
        name="screening-room",
        title="Screening room",
        description="Watch finished clips, follow renders, and make the final cut of a storyboard.",
        csp=ResourceCsp(resource_domains=domains) if domains else None,
        prefers_border=True,
    )
    return apps


def _prompt(record: TaskRecord) -> str | None:
    """A render's prompt (its shots' prompts, for a multi-shot one), or an assembly's title."""
    if record.assembly is not None:
        return record.assembly.title
    request = record.request
    if request is None:
        return None
    if request.multi_prompt:
        return " / ".join(shot.prompt for shot in request.multi_prompt)
    return request.prompt


def view_facts(state: AppState, record: TaskRecord, *, media_links: bool = True) -> dict[str, str]:
    """What the view shows beyond the task report: the prompt, and over HTTP signed links to a
    delivered task's preview (once made) and clip, when ``media_links`` (a caller who may read media)."""
    found: dict[str, str] = {}
    if prompt := _prompt(record):
        found["prompt"] = prompt
    signer = state.url_signer
    if media_links and signer is not None and record.delivered and record.file_path is not None:
        folder = owner_folder(record.owner)  # the owner's subfolder, named in the signed link
        found["clip_url"] = signer.url("clips", Path(record.file_path).name, folder=folder)
        preview = preview_path(state.service.previews_folder(record), record.task_id)
        if preview.is_file():
            found["preview_url"] = signer.url("previews", preview.name, folder=folder)
    return found


def with_media(ctx: Context, result: CallToolResult, records: list[TaskRecord]) -> CallToolResult:
    """``result`` plus, for a client that negotiated Apps, the view's facts in ``_meta``
    (under :data:`MEDIA_META_KEY`, by task id: see :func:`view_facts`).

    Any other client gets ``result`` unchanged: the view adds, never replaces.
    """
    if not client_supports_apps(ctx):
        return result
    state, media_links = app_state(ctx), caller_may_read(ctx)  # a link must not open what the token cannot
    facts = {record.task_id: found for record in records if (found := view_facts(state, record, media_links=media_links))}
    if not facts:
        return result
    return result.model_copy(update={"meta": {**(result.meta or {}), MEDIA_META_KEY: facts}})
