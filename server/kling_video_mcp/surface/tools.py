"""The MCP tools: generate_video, animate_image, check_task and list_tasks.

Each tool builds a request from its parameters, hands it to the task service and renders
the journaled record with :mod:`kling_video_mcp.surface.results`.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.models import GenerationRequest, Kind, TaskRecord
from kling_video_mcp.surface import params as p
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.results import (
    TaskReport,
    dry_run_result,
    error_result,
    public_status,
    summary,
    table_result,
    task_result,
)
from kling_video_mcp.surface.state import AppState, app_state, task_report
from kling_video_mcp.surface.waiting import wait_reporting

_ASYNC_NOTE = (
    " Returns within seconds with a task_id and an estimated cost in USD (wait_seconds, up to 50, waits for the "
    "clip first); rendering takes minutes. The server watches the task and downloads the clip itself; call "
    "check_task(task_id) to get it. An identical request repeated within 10 minutes returns the existing task "
    "instead of paying twice. dry_run=true only prices the request; max_cost_usd refuses it above a price."
)

GENERATE_DESCRIPTION = (
    "Make a video from a text prompt with Kling v3.0 (text to video), 3 to 15 seconds, optionally with sound "
    "and several shots (multi_prompt)." + _ASYNC_NOTE
)
ANIMATE_DESCRIPTION = (
    "Make a video from an image with Kling v3.0 (image to video): the image is the first frame, end_image "
    "optionally the last; the frame shape comes from the image." + _ASYNC_NOTE
)
CHECK_DESCRIPTION = (
    "Get a task's status (queued, running, succeeded, failed), progress and ETA. When it succeeded: the clip's "
    "path on disk, a resource link to it (video/mp4), a contact sheet image, its duration, size and fps, and its "
    "last frame (chain the next shot with animate_image(image='task:<task_id>')). When it failed: the provider's "
    "reason. Pass task_ids to check several tasks (a whole storyboard) at once, and wait_seconds to wait for them. "
    "Tasks are kept in a journal on disk, so this works after a server restart. To recover a task submitted "
    "elsewhere, pass its provider task id with provider and mode."
)
LIST_DESCRIPTION = "List your tasks in this server's journal, newest first, optionally only those in one status."
LIST_SCAN_LIMIT = 10_000
"""Newest journal rows ``list_tasks`` looks through when filtering by status."""

SUBMIT_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
CHECK_ANNOTATIONS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

ToolResult = Annotated[CallToolResult, TaskReport]



async def _submit(ctx: Context, kind: Kind, parameters: dict[str, Any]) -> CallToolResult:
    """Check, price and submit a generation tool's call; ``parameters`` are the tool's own.

    Tool parameters are named after :class:`GenerationRequest` fields, except ``ctx`` and
    the submit options, which are taken out here.
    """
    state = app_state(ctx)
    service = state.service
    owner = caller_owner(ctx)
    fields = {name: value for name, value in parameters.items() if name in GenerationRequest.model_fields}
    request = GenerationRequest(kind=kind, **fields)
    try:
        images = await service.prepare(request, owner=owner, image_dirs=state.image_dirs)
        if parameters["dry_run"]:
            return dry_run_result(request, await service.check_cost(request, parameters["max_cost_usd"], owner=owner))
        adapter = await service.providers.get(request.provider)
        record, reused = await service.reserve(
            request, adapter, max_cost_usd=parameters["max_cost_usd"], force_new=parameters["force_new"], owner=owner
        )
        if reused:
            return task_result(task_report(state, record, reused=True))
        record = await service.send(record, images, adapter)
    except KlingError as exc:
        return error_result(exc)
    if parameters["wait_seconds"]:
        await wait_reporting(ctx, service, [record.task_id], parameters["wait_seconds"])
        record = await service.get(record.task_id)
    return task_result(task_report(state, record))


async def _check(
    state: AppState, task_ids: list[str], provider: ProviderName | None, mode: Mode, owner: str
) -> list[TaskRecord]:
    """``owner``'s tasks' records after a fresh poll; one unknown id with ``provider`` is adopted."""
    if provider is not None and len(task_ids) == 1 and await state.service.journal.get(task_ids[0], owner) is None:
        return [await state.service.recover(task_ids[0], provider, mode, owner=owner)]
    return await state.service.check(task_ids, owner=owner)


def register_tools(mcp: MCPServer[AppState], settings: Settings) -> None:
    """Add the tools; ``mode`` and ``provider`` default to the configured ones."""
    default_mode = settings.mode
    default_provider = settings.default_provider

    @mcp.tool(title="Generate video (Kling v3.0)", description=GENERATE_DESCRIPTION, annotations=SUBMIT_ANNOTATIONS)
    async def generate_video(
        ctx: Context,
        prompt: p.Prompt = None,
        negative_prompt: p.NegativePrompt = None,
        duration: p.Duration = 5,
        aspect_ratio: p.AspectRatioParam = "16:9",
        cfg_scale: p.CfgScale = None,
        sound: p.Sound = False,
        mode: p.ModeParam = default_mode,
        multi_prompt: p.MultiPrompt = None,
        shot_type: p.ShotTypeParam = None,
        element_list: p.ElementList = None,
        provider: p.ProviderParam = default_provider,
        force_new: p.ForceNew = False,
        wait_seconds: p.WaitSeconds = 0,
        max_cost_usd: p.MaxCost = None,
        dry_run: p.DryRun = False,
    ) -> ToolResult:
        return await _submit(ctx, "t2v", locals())

    @mcp.tool(title="Animate image (Kling v3.0)", description=ANIMATE_DESCRIPTION, annotations=SUBMIT_ANNOTATIONS)
    async def animate_image(
        ctx: Context,
        image: p.ImageRef,
        end_image: p.EndImageRef = None,
        prompt: p.Prompt = None,
        negative_prompt: p.NegativePrompt = None,
        duration: p.Duration = 5,
        cfg_scale: p.CfgScale = None,
        sound: p.Sound = False,
        mode: p.ModeParam = default_mode,
        multi_prompt: p.MultiPrompt = None,
        shot_type: p.ShotTypeParam = None,
        element_list: p.ElementList = None,
        provider: p.ProviderParam = default_provider,
        force_new: p.ForceNew = False,
        wait_seconds: p.WaitSeconds = 0,
        max_cost_usd: p.MaxCost = None,
        dry_run: p.DryRun = False,
    ) -> ToolResult:
        return await _submit(ctx, "i2v", locals())

    @mcp.tool(title="Check video task", description=CHECK_DESCRIPTION, annotations=CHECK_ANNOTATIONS)
    async def check_task(
        ctx: Context,
        task_id: p.TaskId = None,
        task_ids: p.TaskIds = None,
        wait_seconds: p.WaitSeconds = 0,
        provider: p.RecoverProvider = None,
        mode: p.RecoverMode = None,
    ) -> ToolResult:
        state = app_state(ctx)
        if (task_id is None) == (task_ids is None):
            return error_result(InvalidRequest("task_id or task_ids: give exactly one of them."))
        ids = [task_id] if task_id is not None else list(dict.fromkeys(task_ids or []))
        try:
            records = await _check(state, ids, provider, mode or default_mode, caller_owner(ctx))
        except KlingError as exc:
            return error_result(exc)
        if wait_seconds:
            await wait_reporting(ctx, state.service, [record.task_id for record in records], wait_seconds)
            records = [await state.service.get(record.task_id) for record in records]
        rows = [task_report(state, record) for record in records]
        return task_result(rows[0]) if task_id is not None else table_result(rows, summary(rows))

    @mcp.tool(title="List video tasks", description=LIST_DESCRIPTION, annotations=CHECK_ANNOTATIONS)
    async def list_tasks(ctx: Context, status: p.StatusFilter = None, limit: p.Limit = 20) -> ToolResult:
        state = app_state(ctx)
        # Filter on the status people see: a finished render still downloading shows as running.
        records = await state.service.journal.recent(
            None, limit if status is None else LIST_SCAN_LIMIT, owner=caller_owner(ctx)
        )
        rows = [task_report(state, record) for record in records if status in (None, public_status(record))][:limit]
        return table_result(rows, summary(rows) + (f" (only {status})" if status else ""))
