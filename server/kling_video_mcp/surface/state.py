"""What every tool, resource and view call shares: the lifespan's state and how to read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anyio.abc import TaskGroup

from mcp.server.mcpserver import Context

from kling_video_mcp.config import Settings
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.results import TaskReport, report
from kling_video_mcp.surface.signed_urls import UrlSigner
from kling_video_mcp.tasks.service import TaskService


@dataclass
class AppState:
    """What the lifespan yields to every tool call."""

    settings: Settings
    service: TaskService
    clip_base_url: str | None = None
    """Set when serving over HTTP: resource links point at ``<clip_base_url>/clips/<file>``."""
    image_dirs: list[Path] | None = None
    """Folders local input images may come from; ``None`` means any (stdio)."""
    url_signer: UrlSigner | None = None
    """Set when serving over HTTP: signs the expiring media links the screening room plays."""
    task_followers: TaskGroup | None = None
    """Where MCP tasks' status notifications are sent from (surface/mcp_tasks/legacy.py)."""


def app_state(ctx: Context) -> AppState:
    """The state the lifespan yielded, for the request ``ctx`` belongs to."""
    return ctx.request_context.lifespan_context


def task_report(state: AppState, record: TaskRecord, *, reused: bool = False) -> TaskReport:
    """``record`` as the surface shows it, with clip links on this server's base URL."""
    return report(record, reused=reused, clip_base_url=state.clip_base_url)
