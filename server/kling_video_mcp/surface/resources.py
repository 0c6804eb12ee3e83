"""The ``kling-video://`` resource templates: a task's record, its clip and the clip's preview."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from kling_video_mcp.errors import NotFound
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.state import AppState, app_state, task_report

TASK_RESOURCE = "kling-video://tasks/{task_id}"
CLIP_RESOURCE = "kling-video://clips/{task_id}"
PREVIEW_RESOURCE = "kling-video://previews/{task_id}"


def register_resources(mcp: MCPServer[AppState]) -> None:
    """The task record, the clip itself and its preview proxy, as resource templates (the caller's own tasks only)."""

    async def delivered(ctx: Context, task_id: str) -> TaskRecord:
        try:
            return await app_state(ctx).service.read(task_id, owner=caller_owner(ctx))
        except NotFound as exc:
            raise ResourceNotFoundError(f"No task {task_id!r} in the journal.") from exc

    @mcp.resource(TASK_RESOURCE, name="task", title="Video task record", mime_type="application/json",
                  description="The task's record as JSON: status, parameters, cost, file paths, clip facts.")  # fmt: skip
    async def task_record(task_id: str, ctx: Context) -> str:
        return task_report(app_state(ctx), await delivered(ctx, task_id)).model_dump_json(indent=2)

    @mcp.resource(CLIP_RESOURCE, name="clip", title="Finished clip", mime_type="video/mp4",
                  description="The finished clip's bytes (video/mp4), for clips under the size cap.")  # fmt: skip
    async def clip(task_id: str, ctx: Context) -> bytes:
        state = app_state(ctx)
        record = await delivered(ctx, task_id)
        if not record.delivered or record.file_path is None:
            raise ResourceNotFoundError(f"Task {task_id!r} has no finished clip (status {record.public_status}).")
        path = anyio.Path(record.file_path)
        output = await anyio.Path(state.settings.output_dir).resolve()
        if not (await path.resolve()).is_relative_to(output) or not await path.is_file():
            raise ResourceNotFoundError(f"The clip of task {task_id!r} is no longer in the output folder.")
        size = (await path.stat()).st_size
        if size > state.settings.clip_resource_max_bytes:
            raise ResourceError(
                f"The clip is {size / 1e6:.0f} MB, above the {state.settings.clip_resource_max_bytes / 1e6:.0f} MB cap "
                f"for reading it through MCP; open {record.file_path} or its resource link instead."
            )
        return await path.read_bytes()

    @mcp.resource(PREVIEW_RESOURCE, name="preview", title="Clip preview", mime_type="video/mp4",
                  description="A small copy of the finished clip (H.264, at most 480p, a few MB) for "
                  "playing in a view; made on first read if it is not there yet. The clip stays the original.")  # fmt: skip
    async def preview(task_id: str, ctx: Context) -> bytes:
        record = await delivered(ctx, task_id)
        try:
            path = await app_state(ctx).service.preview(record)
        except NotFound as exc:
            raise ResourceNotFoundError(f"{exc.message} (status {record.public_status}).") from exc
        except Exception as exc:  # PyAV raises many types; any of them means the clip is unreadable
            raise ResourceError(f"No preview could be made of task {task_id!r}'s clip ({type(exc).__name__}).") from exc
        return await anyio.Path(path).read_bytes()
