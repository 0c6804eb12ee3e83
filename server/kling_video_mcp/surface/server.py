"""Assemble the MCP server: tools, lifespan (HTTP client + task service), error shaping.

Data flows one way: a tool builds a :class:`GenerationRequest`, the task service checks,
journals and submits it through a provider adapter, and the tool renders the journaled
record with :mod:`kling_video_mcp.surface.results`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import ValidationError

from kling_video_mcp import __version__
from kling_video_mcp.config import Settings
from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.models import GenerationRequest
from kling_video_mcp.providers.http import make_client
from kling_video_mcp.surface import params as p
from kling_video_mcp.surface.results import TaskReport, error_result, report, task_result
from kling_video_mcp.tasks.service import TaskService

INSTRUCTIONS = """\
Makes videos with Kling v3.0 (Standard, Pro, 4K) through Novita AI, HighwayAPI or WaveSpeedAI.
Rendering takes minutes, so generate_video and animate_image return a task_id at once; the
server then finishes the task and downloads the clip by itself. Call check_task with the
task_id to get the status, and once it succeeded, the clip as a file on disk (resource link).
Every result states the estimated cost in USD. The sandbox provider makes free placeholder clips."""

_ASYNC_NOTE = (
    " Returns within seconds with a task_id and an estimated cost in USD; rendering takes minutes. "
    "The server watches the task and downloads the clip itself; call check_task(task_id) to get it. "
    "An identical request repeated within 10 minutes returns the existing task instead of paying twice."
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
    "path on disk and a resource link to it (video/mp4). When it failed: the provider's reason. Tasks are kept "
    "in a journal on disk, so this works after a server restart. To recover a task submitted elsewhere, pass its "
    "provider task id with provider and mode."
)

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


async def _submit(ctx: Context, request: GenerationRequest, force_new: bool) -> CallToolResult:
    state = _state(ctx)
    try:
        images = state.service.prepare(request, image_dirs=state.image_dirs)
        if not force_new and (existing := state.service.find_duplicate(request)) is not None:
            return task_result(report(existing, reused=True, clip_base_url=state.clip_base_url))
        record = await state.service.submit(request, images)
    except KlingError as exc:
        return error_result(exc)
    return task_result(report(record, clip_base_url=state.clip_base_url))


def register_tools(mcp: MCPServer[AppState], settings: Settings) -> None:
    """Add the three tools; ``mode`` and ``provider`` default to the configured ones."""
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
    ) -> ToolResult:
        request = GenerationRequest(
            provider=provider, mode=mode, kind="t2v", prompt=prompt, negative_prompt=negative_prompt,
            duration=duration, aspect_ratio=aspect_ratio, cfg_scale=cfg_scale, sound=sound,
            multi_prompt=multi_prompt, shot_type=shot_type, element_list=element_list,
        )  # fmt: skip
        return await _submit(ctx, request, force_new)

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
    ) -> ToolResult:
        request = GenerationRequest(
            provider=provider, mode=mode, kind="i2v", prompt=prompt, negative_prompt=negative_prompt,
            duration=duration, cfg_scale=cfg_scale, sound=sound, multi_prompt=multi_prompt,
            shot_type=shot_type, element_list=element_list, image=image, end_image=end_image,
        )  # fmt: skip
        return await _submit(ctx, request, force_new)

    @mcp.tool(title="Check video task", description=CHECK_DESCRIPTION, annotations=CHECK_ANNOTATIONS)
    async def check_task(
        ctx: Context,
        task_id: p.TaskId,
        provider: p.RecoverProvider = None,
        mode: p.RecoverMode = None,
    ) -> ToolResult:
        state = _state(ctx)
        try:
            if provider is not None and state.service.journal.get(task_id) is None:
                record = await state.service.recover(task_id, provider, mode or default_mode)
            else:
                record = await state.service.check(task_id)
        except KlingError as exc:
            return error_result(exc)
        return task_result(report(record, clip_base_url=state.clip_base_url))


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
    return mcp
