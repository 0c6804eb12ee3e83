"""The MCP tools: generate_video, animate_image, assemble_video, check_task, list_tasks, and the app-only confirm_spend.

Each tool builds a request from its parameters, hands it to the task service (the façade in
:mod:`kling_video_mcp.tasks.service`, which runs the whole submit protocol) and renders the
journaled record with :mod:`kling_video_mcp.surface.results`. A request above
``KLING_MCP_CONFIRM_ABOVE_USD`` needs a person's yes first (:mod:`kling_video_mcp.tasks.consent`):
asked through elicitation by a resolver, or given in the screening room through ``confirm_spend``.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.apps import client_supports_apps
from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, ToolAnnotations

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import Declined, InvalidRequest, KlingError
from kling_video_mcp.models import GenerationRequest, Kind
from kling_video_mcp.surface import params as p
from kling_video_mcp.surface.auth import caller_owner
from kling_video_mcp.surface.icons import icons
from kling_video_mcp.surface.mcp_task_mode import running_as_task
from kling_video_mcp.surface.results import (
    TaskReport,
    dry_run_result,
    error_result,
    summary,
    table_result,
    task_result,
)
from kling_video_mcp.surface.state import AppState, app_state, task_report
from kling_video_mcp.surface.view import VIEW_BINDING, with_media
from kling_video_mcp.surface.visibility import APP_ONLY_META, called_from_a_view
from kling_video_mcp.surface.waiting import wait_reporting
from kling_video_mcp.tasks import consent
from kling_video_mcp.tasks.consent import ConsentAnswer
from kling_video_mcp.tasks.service import SubmitOptions

_ASYNC_NOTE = (
    " Returns within seconds with a task_id and an estimated cost in USD (wait_seconds, up to 50, waits for the "
    "clip first); rendering takes minutes. The server watches the task and downloads the clip itself; call "
    "check_task(task_id) to get it. An identical request repeated within 10 minutes returns the existing task "
    "instead of paying twice. dry_run=true only prices the request; max_cost_usd refuses it above a price. "
    "If the person running the server set a spend that needs their confirmation, a request above it is sent "
    "only once they say yes; you cannot answer for them."
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
    "Get a task's status (queued, running, succeeded, failed; awaiting_confirmation while a person has not yet "
    "said yes to its cost), progress and ETA. When it succeeded: the clip's "
    "path on disk, a resource link to it (video/mp4), a contact sheet image, its duration, size and fps, and its "
    "last frame (chain the next shot with animate_image(image='task:<task_id>')). When it failed: the provider's "
    "reason. Pass task_ids to check several tasks (a whole storyboard) at once, and wait_seconds to wait for them. "
    "Tasks are kept in a journal on disk, so this works after a server restart. To recover a task submitted "
    "elsewhere, pass its provider task id with provider and mode."
)
ASSEMBLE_DESCRIPTION = (
    "Join finished clips of this server (generated, animated, or earlier assemblies) into one film, in the order "
    "given: the final cut of a storyboard. transition='cut' joins matching clips without re-encoding (seconds, even "
    "for 4K); 'crossfade' blends each join over crossfade_seconds. Clips of another frame size or rate are fitted "
    "to the first clip's (black bars, never stretched). Sound is kept, with silence under silent clips, unless "
    "audio='mute'. Costs nothing: no provider is called. Returns a task_id at once (wait_seconds waits up to 50 s); "
    "check_task then gives the film's path, a resource link, its duration checked against the shots', a contact "
    "sheet with one frame per shot, and its last frame (continue with animate_image(image='task:<task_id>'))."
)
LIST_DESCRIPTION = "List your tasks in this server's journal, newest first, optionally only those in one status."
CONFIRM_DESCRIPTION = (
    "For the screening room view only: the person's answer to a request awaiting confirmation (its estimate is "
    "above the spend they set in KLING_MCP_CONFIRM_ABOVE_USD). confirm sends it and returns the task; decline "
    "ends it as declined. A model must never call this: the answer has to come from the person."
)
NOT_FROM_A_VIEW = (
    "confirm_spend carries a person's answer from the screening room view, and this client shows no view "
    "(it did not negotiate MCP Apps), so nothing was confirmed or sent. The request keeps waiting for the person."
)
DECLINED_IN_VIEW = "The person declined this request in the screening room; nothing was sent."

SUBMIT_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
ASSEMBLE_ANNOTATIONS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
CHECK_ANNOTATIONS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
CONFIRM_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
"""confirm_spend: answering twice changes nothing (a confirmed request is sent once, a declined one stays declined)."""

ToolResult = Annotated[CallToolResult, TaskReport]


def _can_elicit(ctx: Context) -> bool:
    """Whether the client declared form elicitation (a bare ``elicitation: {}`` means form)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def _ask(ctx: Context, kind: Kind, arguments: dict[str, Any]) -> Elicit[consent.SpendConsent] | None:
    """Ask the person before a request above the threshold is sent; ``None`` when not asking.

    Only a client that declared elicitation is asked, never for a dry run; the SDK sends the
    question in either protocol era and injects the answer as the tool's ``consent``. Images
    are not read here: the tool body checks them, after the answer.
    """
    if arguments["dry_run"] or not _can_elicit(ctx) or running_as_task():  # a task asks through itself (surface/mcp_tasks)
        return None
    request = _request(kind, arguments)
    options = SubmitOptions(max_cost_usd=arguments["max_cost_usd"], force_new=arguments["force_new"])
    text = await app_state(ctx).service.spend_question(request, options, owner=caller_owner(ctx))
    return None if text is None else Elicit(text, consent.SpendConsent)


# Resolvers take the tool's arguments by name (the SDK's rule), so each names its tool's parameters.
async def _ask_before_generating(
    ctx: Context, prompt, negative_prompt, duration, aspect_ratio, cfg_scale, sound, mode, multi_prompt, shot_type,
    element_list, provider, force_new, max_cost_usd, dry_run,
) -> Elicit[consent.SpendConsent] | None:
    return await _ask(ctx, "t2v", locals())


async def _ask_before_animating(
    ctx: Context, image, end_image, prompt, negative_prompt, duration, cfg_scale, sound, mode, multi_prompt, shot_type,
    element_list, provider, force_new, max_cost_usd, dry_run,
) -> Elicit[consent.SpendConsent] | None:
    return await _ask(ctx, "i2v", locals())


AskT2V = Annotated[ElicitationResult[consent.SpendConsent], Resolve(_ask_before_generating)]
AskI2V = Annotated[ElicitationResult[consent.SpendConsent], Resolve(_ask_before_animating)]


def _consent_answer(answer: ElicitationResult[Any]) -> ConsentAnswer:
    """The person's answer as the service takes it. A resolver that did not ask yields an
    accepted result without a form; an accepted form with the box unticked is a no."""
    if isinstance(answer, AcceptedElicitation):
        if isinstance(answer.data, consent.SpendConsent):
            return "confirmed" if answer.data.confirm else "declined"
        return "not_asked"
    return "dismissed" if isinstance(answer, CancelledElicitation) else "declined"


def _request(kind: Kind, parameters: dict[str, Any]) -> GenerationRequest:
    """The request a generation tool's parameters describe (they are named after its fields)."""
    return GenerationRequest(kind=kind, **{k: v for k, v in parameters.items() if k in GenerationRequest.model_fields})


async def _submit(ctx: Context, kind: Kind, parameters: dict[str, Any]) -> CallToolResult:
    """Check, price and submit a generation tool's call; ``parameters`` are the tool's own.

    Tool parameters are named after :class:`GenerationRequest` fields, except ``ctx`` and
    the submit options, which are taken out here. ``consent`` is the person's answer when the
    resolver asked them (an accepted :class:`~kling_video_mcp.tasks.consent.SpendConsent`);
    it never comes from the caller's arguments.
    """
    state = app_state(ctx)
    service = state.service
    owner = caller_owner(ctx)
    request = _request(kind, parameters)
    try:
        if parameters["dry_run"]:
            estimate, asks = await service.dry_run(
                request, max_cost_usd=parameters["max_cost_usd"], owner=owner, image_dirs=state.image_dirs
            )
            return dry_run_result(request, estimate, asks_first=asks)
        record, reused = await service.submit(
            request,
            SubmitOptions(max_cost_usd=parameters["max_cost_usd"], force_new=parameters["force_new"]),
            owner=owner,
            consent_answer=_consent_answer(parameters["consent"]),
            # Parked for the screening room if the client shows one; run as an MCP task, parked
            # to be asked through the task where the client answers forms.
            can_show_view=client_supports_apps(ctx) or (running_as_task() and _can_elicit(ctx)),
            image_dirs=state.image_dirs,
        )
    except KlingError as exc:
        return error_result(exc)
    if parameters["wait_seconds"] and not reused:
        await wait_reporting(ctx, service, [record.task_id], parameters["wait_seconds"])
        record = await service.read(record.task_id, owner=record.owner)
    return with_media(ctx, task_result(task_report(state, record, reused=reused)), [record])


def register_tools(mcp: MCPServer[AppState], settings: Settings) -> None:
    """Add the tools; ``mode`` and ``provider`` default to the configured ones."""
    default_mode = settings.mode
    default_provider = settings.default_provider

    @mcp.tool(
        title="Generate video (Kling v3.0)",
        description=GENERATE_DESCRIPTION,
        annotations=SUBMIT_ANNOTATIONS,
        meta=VIEW_BINDING,
        icons=icons("generate_video"),
    )
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
        consent: AskT2V = None,
    ) -> ToolResult:
        return await _submit(ctx, "t2v", locals())

    @mcp.tool(
        title="Animate image (Kling v3.0)",
        description=ANIMATE_DESCRIPTION,
        annotations=SUBMIT_ANNOTATIONS,
        meta=VIEW_BINDING,
        icons=icons("animate_image"),
    )
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
        consent: AskI2V = None,
    ) -> ToolResult:
        return await _submit(ctx, "i2v", locals())

    @mcp.tool(
        title="Assemble the final cut",
        description=ASSEMBLE_DESCRIPTION,
        annotations=ASSEMBLE_ANNOTATIONS,
        icons=icons("assemble_video"),
        meta=VIEW_BINDING,
    )
    async def assemble_video(
        ctx: Context,
        task_ids: p.AssemblyTaskIds,
        transition: p.TransitionParam = "cut",
        crossfade_seconds: p.CrossfadeSeconds = 0.5,
        audio: p.AudioParam = "keep",
        title: p.Title = None,
        wait_seconds: p.WaitSeconds = 0,
    ) -> ToolResult:
        state = app_state(ctx)
        service = state.service
        try:
            record = await service.assemble(
                task_ids, owner=caller_owner(ctx), transition=transition, crossfade_seconds=crossfade_seconds,
                audio=audio, title=title,
            )  # fmt: skip
        except KlingError as exc:
            return error_result(exc)
        if wait_seconds:
            await wait_reporting(ctx, service, [record.task_id], wait_seconds)
            record = await service.read(record.task_id, owner=record.owner)
        return with_media(ctx, task_result(task_report(state, record)), [record])

    @mcp.tool(
        title="Check video task",
        description=CHECK_DESCRIPTION,
        annotations=CHECK_ANNOTATIONS,
        icons=icons("check_task"),
        meta=VIEW_BINDING,
    )
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
            records = await state.service.check(ids, owner=caller_owner(ctx), provider=provider, mode=mode or default_mode)
        except KlingError as exc:
            return error_result(exc)
        if wait_seconds:
            await wait_reporting(ctx, state.service, [record.task_id for record in records], wait_seconds)
            records = [await state.service.read(record.task_id, owner=record.owner) for record in records]
        rows = [task_report(state, record) for record in records]
        result = task_result(rows[0]) if task_id is not None else table_result(rows, summary(rows))
        return with_media(ctx, result, records)

    @mcp.tool(
        title="List video tasks",
        description=LIST_DESCRIPTION,
        annotations=CHECK_ANNOTATIONS,
        icons=icons("list_tasks"),
    )
    async def list_tasks(ctx: Context, status: p.StatusFilter = None, limit: p.Limit = 20) -> ToolResult:
        state = app_state(ctx)
        # Filtered on the status people see: a finished render still downloading shows as running.
        records = await state.service.list(owner=caller_owner(ctx), status=status, limit=limit)
        rows = [task_report(state, record) for record in records]
        return table_result(rows, summary(rows) + (f" (only {status})" if status else ""))

    @mcp.tool(
        title="Confirm or decline a spend",
        description=CONFIRM_DESCRIPTION,
        annotations=CONFIRM_ANNOTATIONS,
        icons=icons("confirm_spend"),
        meta=APP_ONLY_META,
    )
    async def confirm_spend(ctx: Context, task_id: p.AwaitingTaskId, decision: p.Decision) -> ToolResult:
        state = app_state(ctx)
        if not called_from_a_view(ctx):
            return error_result(Declined(NOT_FROM_A_VIEW, task_id=task_id))
        owner = caller_owner(ctx)  # another user's task is "not found"
        try:
            if decision == "decline":
                record = await state.service.decline(task_id, owner=owner, message=DECLINED_IN_VIEW)
            else:
                record = await state.service.confirm(task_id, owner=owner, image_dirs=state.image_dirs)
        except KlingError as exc:
            return error_result(exc)
        return with_media(ctx, task_result(task_report(state, record)), [record])
