"""Assemble the MCP server: tools, lifespan (HTTP client + task service), error shaping.

Data flows one way: a tool builds a :class:`GenerationRequest`, the task service checks,
journals and submits it through a provider adapter, and the tool renders the journaled
record with :mod:`kling_video_mcp.surface.results`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import ValidationError

from kling_video_mcp import __version__
from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.models import GenerationRequest, Kind, TaskRecord
from kling_video_mcp.providers.http import make_client
from kling_video_mcp.surface import params as p
from kling_video_mcp.surface.results import (
    TaskReport,
    dry_run_result,
    error_result,
    public_status,
    report,
    summary,
    table_result,
    task_result,
)
from kling_video_mcp.surface.waiting import wait_reporting
from kling_video_mcp.tasks.service import TaskService

INSTRUCTIONS = """\
Makes videos with Kling v3.0 (Standard, Pro, 4K) through Novita AI, HighwayAPI or WaveSpeedAI.
Rendering takes minutes, so generate_video and animate_image return a task_id at once; the
server then finishes the task and downloads the clip by itself. Call check_task with the
task_id to get the status, and once it succeeded, the clip as a file on disk (resource link).
Every result states the estimated cost in USD. The sandbox provider makes free placeholder clips."""

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
LIST_DESCRIPTION = "List the tasks in this server's journal, newest first, optionally only those in one status."
STORYBOARD_DESCRIPTION = "Plan a multi-shot story, render the shots with visual continuity, and report the clips in order."

LIST_SCAN_LIMIT = 10_000
"""Newest journal rows ``list_tasks`` looks through when filtering by status."""

TASK_RESOURCE = "kling-video://tasks/{task_id}"
CLIP_RESOURCE = "kling-video://clips/{task_id}"

STORYBOARD_PROMPT = """\
Make a short video story from this idea: {idea}

1. Plan {shots} shots that tell it, each 3 to 15 seconds: for each, a prompt describing the scene, the motion,
   the camera and the sound. Keep characters, places and light consistent from shot to shot.
2. Price the plan first: call generate_video with dry_run=true for shot 1 (aspect_ratio="{aspect_ratio}",
   mode="{mode}") and tell me the estimated total before spending anything.
3. Render shot 1 with generate_video (aspect_ratio="{aspect_ratio}", mode="{mode}"). Wait for it with
   check_task(task_id=..., wait_seconds=45), calling again while it is still running.
4. For each following shot, call animate_image with image="task:<previous task_id>" so it starts from the last
   frame of the shot before (the same mode), then wait for it the same way.
5. When all shots are done, call check_task(task_ids=[...]) once and report the clips in story order: the shot
   prompt, the file path and the duration of each, and the total estimated cost.
If a shot fails, say why (the error message says what to do) and ask me before retrying."""

SUBMIT_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
CHECK_ANNOTATIONS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

ToolResult = Annotated[CallToolResult, TaskReport]


@dataclass
class AppState:
    """What the lifespan yields to every tool call."""

    settings: Settings
    service: TaskService
    clip_base_url: str | None = None
    """Set when serving over HTTP: resource links point at ``<clip_base_url>/clips/<file>``."""
    image_dirs: list[Path] | None = None
    """Folders local input images may come from; ``None`` means any (stdio)."""


def describe_validation_error(error: ValidationError) -> str:
    """One line per broken rule, naming the field: ``duration: Input should be ... (got 20)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        got = f" (got {item['input']!r})" if "input" in item and not isinstance(item["input"], dict) else ""
        lines.append(f"{field}: {item['msg']}{got[:120]}.")
    return "Invalid request, nothing was sent: " + " ".join(lines)


class KlingMCPServer(MCPServer[AppState]):
    """``MCPServer`` whose argument-validation errors carry the structured error shape too."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(InvalidRequest(describe_validation_error(exc.__cause__)))
            raise


def _state(ctx: Context) -> AppState:
    return ctx.request_context.lifespan_context


def _report(state: AppState, record: TaskRecord, *, reused: bool = False) -> TaskReport:
    return report(record, reused=reused, clip_base_url=state.clip_base_url)


async def _submit(ctx: Context, kind: Kind, parameters: dict[str, Any]) -> CallToolResult:
    """Check, price and submit a generation tool's call; ``parameters`` are the tool's own.

    Tool parameters are named after :class:`GenerationRequest` fields, except ``ctx`` and
    the submit options, which are taken out here.
    """
    state = _state(ctx)
    service = state.service
    fields = {name: value for name, value in parameters.items() if name in GenerationRequest.model_fields}
    request = GenerationRequest(kind=kind, **fields)
    try:
        # Reading and decoding a local image (up to 10 MB) blocks: keep it off the event loop.
        images = await anyio.to_thread.run_sync(partial(service.prepare, request, image_dirs=state.image_dirs))
        if parameters["dry_run"]:
            return dry_run_result(request, service.check_cost(request, parameters["max_cost_usd"]))
        adapter = await service.providers.get(request.provider)
        record, reused = service.reserve(
            request, adapter, max_cost_usd=parameters["max_cost_usd"], force_new=parameters["force_new"]
        )
        if reused:
            return task_result(_report(state, record, reused=True))
        record = await service.send(record, images, adapter)
    except KlingError as exc:
        return error_result(exc)
    if parameters["wait_seconds"]:
        await wait_reporting(ctx, service, [record.task_id], parameters["wait_seconds"])
        record = service.get(record.task_id)
    return task_result(_report(state, record))


async def _check(state: AppState, task_ids: list[str], provider: ProviderName | None, mode: Mode) -> list[TaskRecord]:
    """The tasks' records after a fresh poll; one unknown id with ``provider`` is adopted."""
    if provider is not None and len(task_ids) == 1 and state.service.journal.get(task_ids[0]) is None:
        return [await state.service.recover(task_ids[0], provider, mode)]
    return await state.service.check(task_ids)


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
        state = _state(ctx)
        if (task_id is None) == (task_ids is None):
            return error_result(InvalidRequest("task_id or task_ids: give exactly one of them."))
        ids = [task_id] if task_id is not None else list(dict.fromkeys(task_ids or []))
        try:
            records = await _check(state, ids, provider, mode or default_mode)
        except KlingError as exc:
            return error_result(exc)
        if wait_seconds:
            await wait_reporting(ctx, state.service, [record.task_id for record in records], wait_seconds)
            records = [state.service.get(record.task_id) for record in records]
        rows = [_report(state, record) for record in records]
        return task_result(rows[0]) if task_id is not None else table_result(rows, summary(rows))

    @mcp.tool(title="List video tasks", description=LIST_DESCRIPTION, annotations=CHECK_ANNOTATIONS)
    async def list_tasks(ctx: Context, status: p.StatusFilter = None, limit: p.Limit = 20) -> ToolResult:
        state = _state(ctx)
        # Filter on the status people see: a finished render still downloading shows as running.
        records = state.service.journal.recent(None, limit if status is None else LIST_SCAN_LIMIT)
        rows = [_report(state, record) for record in records if status in (None, public_status(record))][:limit]
        return table_result(rows, summary(rows) + (f" (only {status})" if status else ""))


def register_resources(mcp: MCPServer[AppState]) -> None:
    """The task record and the clip itself, as resource templates."""

    def delivered(ctx: Context, task_id: str) -> TaskRecord:
        record = _state(ctx).service.journal.get(task_id)
        if record is None:
            raise ResourceNotFoundError(f"No task {task_id!r} in the journal.")
        return record

    @mcp.resource(TASK_RESOURCE, name="task", title="Video task record", mime_type="application/json",
                  description="The task's record as JSON: status, parameters, cost, file paths, clip facts.")  # fmt: skip
    async def task_record(task_id: str, ctx: Context) -> str:
        return _report(_state(ctx), delivered(ctx, task_id)).model_dump_json(indent=2)

    @mcp.resource(CLIP_RESOURCE, name="clip", title="Finished clip", mime_type="video/mp4",
                  description="The finished clip's bytes (video/mp4), for clips under the size cap.")  # fmt: skip
    async def clip(task_id: str, ctx: Context) -> bytes:
        state = _state(ctx)
        record = delivered(ctx, task_id)
        if not record.delivered or record.file_path is None:
            raise ResourceNotFoundError(f"Task {task_id!r} has no finished clip (status {public_status(record)}).")
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


def register_prompts(mcp: MCPServer[AppState]) -> None:
    @mcp.prompt(name="storyboard", title="Storyboard", description=STORYBOARD_DESCRIPTION)
    def storyboard(idea: str, shots: int = 4, aspect_ratio: str = "16:9", mode: str = "std") -> str:
        return STORYBOARD_PROMPT.format(idea=idea, shots=shots, aspect_ratio=aspect_ratio, mode=mode)


def build_server(
    settings: Settings | None = None, *, clip_base_url: str | None = None, image_dirs: list[Path] | None = None
) -> KlingMCPServer:
    """The MCP server, reading the environment unless ``settings`` is given.

    For stdio leave ``clip_base_url`` and ``image_dirs`` unset (``file://`` links, any local
    image). An HTTP deployment passes the public base URL its ``/clips/`` route is served
    under, and the folders remote callers may name local images in (``[]`` for none).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with make_client(settings) as client, TaskService.running(settings, client) as service:
            yield AppState(settings=settings, service=service, clip_base_url=clip_base_url, image_dirs=image_dirs)

    mcp = KlingMCPServer("kling-video-mcp", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)
    register_tools(mcp, settings)
    register_resources(mcp)
    register_prompts(mcp)
    return mcp


def settle_heap() -> None:
    """Collect once, then exempt everything built so far from future collections.

    Start-up leaves a large heap of long-lived objects (the SDK, pydantic schemas); full
    collections re-scanning it stalled the event loop for 40-90 ms under load (benchmark
    figure 4). Call it when the server is built, before serving.
    """
    gc.collect()
    gc.freeze()
