"""Tool results: one report model, rendered three ways for every client.

The same facts go into ``structuredContent`` (matching the tools' ``outputSchema``; some
clients show the model only that), a text block (for clients that drop other blocks), and,
for a finished clip, a ``resource_link`` to the file (``video/mp4``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from kling_video_mcp.errors import Declined, KlingError
from kling_video_mcp.models import Assembly, ClipFacts, GenerationRequest, PublicStatus, TaskRecord
from kling_video_mcp.providers import provider_class
from kling_video_mcp.tasks.cancellation import CANCELLED


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable error code, e.g. validation_error, auth_error, content_policy.")
    message: str = Field(description="What went wrong and what to do about it.")
    retryable: bool = Field(description="Whether trying again later may succeed.")


class TaskFacts(BaseModel):
    """Everything known about one task, or an error that stopped one from being made."""

    task_id: str | None = Field(None, description="Pass this to check_task.")
    status: PublicStatus | None = Field(
        None,
        description="succeeded only once the clip is safely on disk; awaiting_confirmation: nothing sent until a "
        "person confirms it in the screening room (failed with error code declined if they decline or do not answer).",
    )
    provider: str | None = None
    mode: str | None = None
    model: str | None = Field(None, description="e.g. 'Kling v3.0 4K text-to-video'.")
    duration_seconds: int | None = None
    progress_percent: float | None = None
    eta_seconds: float | None = Field(None, description="Seconds until the provider expects to finish, if it says.")
    confirm_by: datetime | None = Field(
        None, description="While awaiting_confirmation: when it ends as declined if the person has not answered."
    )
    estimated_cost_usd: float | None = None
    cost_basis: str | None = Field(None, description="Where the price estimate comes from, and whether it is confirmed.")
    file_path: str | None = Field(None, description="The finished clip on the server's disk.")
    file_uri: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    clip: ClipFacts | None = Field(None, description="Duration, frame size, fps, codec and sound, read from the clip.")
    contact_sheet_path: str | None = Field(None, description="A JPEG strip of four frames across the clip.")
    last_frame_path: str | None = Field(
        None, description="The clip's last frame (PNG); pass image='task:<task_id>' to continue from it."
    )
    sidecar_path: str | None = Field(None, description="JSON beside the clip: prompt, parameters, ids, cost, sha256.")
    warnings: list[str] = Field(default_factory=list)
    provider_video_url: str | None = Field(None, description="The provider's own link; it expires (about 1 hour).")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    assembly: Assembly | None = Field(
        None, description="For a final cut: its title, transition, sources in order (task ids, files, sha256, durations), "
        "the duration they add up to, and whether it was joined by stream copy or re-encoded."
    )
    reused_existing: bool = Field(False, description="True when an identical recent request's task was returned.")
    dry_run: bool = Field(False, description="True when the request was only checked and priced; nothing was sent.")
    sandbox: bool = Field(False, description="True for free placeholder clips from the bundled emulator.")
    next_check_seconds: float | None = Field(None, description="When calling check_task again makes sense.")
    message: str = Field(description="A one-paragraph summary with the next step.")
    notes: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None


class TaskReport(TaskFacts):
    """The one output schema of every tool.

    One task's facts, or (for ``check_task(task_ids)`` and ``list_tasks``) one row per task
    in ``tasks`` with a summary in ``message``. Error results conform too (``error`` set, task
    fields empty where there is no task), because some clients validate them.
    """

    tasks: list[TaskFacts] | None = Field(None, description="One row per task, for check_task(task_ids) and list_tasks.")


def _warnings(record: TaskRecord, status: str) -> list[str]:
    """The record's warnings, each companion that could not be made (and why), and while it is
    unfinished, the trouble the server is retrying through (a failed download attempt, a provider
    hiccup), so the cause is never only in a log."""
    found = [*record.warnings, *record.companion_problems.values()]
    if status in ("queued", "running") and record.error_message:
        return [*found, record.error_message]
    return found


ASSEMBLY_COST_BASIS = "Made on this machine from clips already paid for: no provider is called, nothing is billed."


def _model(record: TaskRecord) -> str:
    """``Kling v3.0 4K text-to-video``, or for an assembly ``Final cut 'title' of 3 shots``."""
    if record.assembly is not None:
        title = f" '{record.assembly.title}'" if record.assembly.title else ""
        return f"Final cut{title} of {len(record.assembly.sources)} shots"
    assert record.request is not None
    return record.request.model_label


def _cost_basis(record: TaskRecord) -> str:
    if record.provider is None or record.mode is None or record.request is None:
        return ASSEMBLY_COST_BASIS
    return provider_class(record.provider).price(record.mode, record.request.sound).basis


def _next_check(record: TaskRecord, status: str) -> float | None:
    if status in ("succeeded", "failed"):
        return None
    if record.assembly is not None:
        return 2.0
    if record.eta_seconds:
        return round(min(max(record.eta_seconds / 2, 5.0), 60.0))
    return 5.0 if provider_class(record.provider).makes_placeholders else 30.0


def _message(record: TaskRecord, status: str, reused: bool) -> str:
    if record.assembly is not None:
        return _assembly_message(record, status)
    who = f"{_model(record)} on {provider_class(record.provider).label}"
    if status == "succeeded":
        return f"Done: {who}. The clip is at {record.file_path}."
    if status == "failed":
        lead = {Declined.code: "Declined", CANCELLED: "Cancelled"}.get(record.error_code or "", "Failed")
        return f"{lead}: {who}. {record.error_message or ''}".strip()
    if status == "awaiting_confirmation":
        return (
            f"Awaiting confirmation: {who}, about ${record.estimated_cost_usd or 0:.2f}. Nothing was sent: a person "
            "must confirm it in the screening room (the view shows Confirm and Decline); you cannot confirm it for "
            f"them. Call check_task with task_id {record.task_id} later to see their answer."
        )
    lead = "An identical request was made recently; this is that task (pass force_new=true to pay for a new one). " if reused else ""
    progress = f" {record.progress_percent:.0f}% done." if record.progress_percent else ""
    if record.status == "succeeded":
        progress = " The render is finished; the clip is downloading."
        if record.companions_pending:
            progress = " The render is finished and the clip is saved; its contact sheet and last frame are being made."
        elif record.error_message:
            progress = " The render is finished; downloading the clip ran into trouble (see warnings), and the server keeps trying."
    eta = f" About {record.eta_seconds:.0f} s left." if record.eta_seconds else ""
    return (
        f"{lead}{status.capitalize()}: {who}.{progress}{eta} Renders take minutes; the server finishes and downloads "
        f"the clip by itself. Call check_task with task_id {record.task_id} in about {_next_check(record, status):.0f} s."
    )


def _assembly_message(record: TaskRecord, status: str) -> str:
    assembly = record.assembly
    assert assembly is not None
    fade = f" {assembly.crossfade_seconds} s" if assembly.transition == "crossfade" else ""
    who = f"{_model(record)} ({assembly.transition}{fade})"
    if status == "failed":
        return f"Failed: {who}. {record.error_message or ''}".strip()
    if status == "succeeded" and record.clip_facts is not None:
        how = "joined by stream copy, without re-encoding" if assembly.method == "stream_copy" else "re-encoded"
        return (
            f"Done: {who}, {record.clip_facts.duration_seconds:.2f} s long (its shots add up to "
            f"{assembly.expected_duration_seconds:.2f} s), {how}, $0. The film is at {record.file_path}."
        )
    progress = f" {record.progress_percent:.0f}% done." if record.progress_percent else ""
    return (
        f"Running: {who}, {assembly.expected_duration_seconds:.2f} s of film.{progress} It costs nothing and is made on "
        f"this machine; call check_task with task_id {record.task_id} in about {_next_check(record, status):.0f} s."
    )


def clip_uri(file_path: str, clip_base_url: str | None) -> str:
    """Where a client can get the clip: ``file://`` on stdio, ``<base>/clips/<name>`` over HTTP."""
    if clip_base_url is None:
        return Path(file_path).as_uri()
    return f"{clip_base_url.rstrip('/')}/clips/{quote(Path(file_path).name)}"


def report(record: TaskRecord, *, reused: bool = False, clip_base_url: str | None = None) -> TaskReport:
    """The :class:`TaskReport` of a journaled task (``clip_base_url``: see :func:`clip_uri`).

    The clip and its companions are shown once the task is ``succeeded``, all together: a clip
    still waiting for its companions is not shown yet.
    """
    status = record.public_status
    done = status == "succeeded"
    notes = list(record.notes)
    if record.provider is not None and (note := provider_class(record.provider).result_note()):
        notes.append(note)
    return TaskReport(
        task_id=record.task_id,
        status=status,
        provider=record.provider,
        mode=record.mode,
        model=_model(record),
        duration_seconds=record.request.duration if record.request and (record.request.prompt or record.request.multi_prompt) else None,
        progress_percent=record.progress_percent,
        eta_seconds=record.eta_seconds,
        confirm_by=record.confirm_by,
        estimated_cost_usd=record.estimated_cost_usd,
        cost_basis=_cost_basis(record),
        file_path=record.file_path if done else None,
        file_uri=clip_uri(record.file_path, clip_base_url) if done and record.file_path else None,
        size_bytes=record.size_bytes if done else None,
        sha256=record.sha256 if done else None,
        clip=record.clip_facts if done else None,
        contact_sheet_path=record.contact_sheet_path if done else None,
        last_frame_path=record.last_frame_path if done else None,
        sidecar_path=record.sidecar_path if done else None,
        warnings=_warnings(record, status),
        provider_video_url=record.video_url,
        assembly=record.assembly,
        created_at=record.created_at,
        finished_at=record.finished_at,
        reused_existing=reused,
        sandbox=record.provider is not None and provider_class(record.provider).makes_placeholders,
        next_check_seconds=_next_check(record, status),
        message=_message(record, status, reused),
        notes=notes,
        error=ErrorInfo(code=record.error_code or "provider_error", message=record.error_message or "", retryable=record.gave_up)
        if status == "failed"
        else None,
    )


def _text(task: TaskReport) -> str:
    lines = [task.message, f"task_id: {task.task_id}", f"status: {task.status}"]
    if task.estimated_cost_usd is not None:
        lines.append(f"estimated cost: ${task.estimated_cost_usd:.2f} ({task.cost_basis})")
    if task.confirm_by:
        lines.append(f"awaiting the person's answer until {task.confirm_by:%Y-%m-%d %H:%M} UTC (then it ends as declined)")
    if task.file_path:
        lines += [f"file: {task.file_path}", f"resource link: {task.file_uri}", f"size: {task.size_bytes} bytes, sha256 {task.sha256}"]
    if task.clip:
        clip = task.clip
        sound = "with sound" if clip.has_audio else "silent"
        lines.append(f"clip: {clip.duration_seconds:.2f} s, {clip.width}x{clip.height}, {clip.fps} fps, {clip.video_codec}, {sound}")
    if task.last_frame_path:
        lines.append(f"last frame: {task.last_frame_path} (continue from it with image='task:{task.task_id}')")
    lines += [f"warning: {warning}" for warning in task.warnings]
    if task.error:
        lines.append(f"error: {task.error.code}: {task.error.message}")
    lines += [f"note: {note}" for note in task.notes]
    return "\n".join(lines)


def _link(task: TaskReport) -> ResourceLink:
    assert task.file_uri and task.file_path
    return ResourceLink(
        type="resource_link",
        uri=task.file_uri,
        name=Path(task.file_path).name,
        title=f"{task.model} clip" if task.provider else task.model,
        description=f"{task.model} clip from {task.provider}, task {task.task_id}"
        if task.provider
        else f"{task.model}, assembly task {task.task_id}",
        mime_type="video/mp4",
        size=task.size_bytes,
    )


def _contact_sheet(task: TaskReport) -> ImageContent | None:
    if not task.contact_sheet_path or not Path(task.contact_sheet_path).is_file():
        return None
    data = base64.b64encode(Path(task.contact_sheet_path).read_bytes()).decode("ascii")
    return ImageContent(type="image", data=data, mime_type="image/jpeg")


def task_result(task: TaskReport) -> CallToolResult:
    """A tool result for a task: text; when the clip is on disk, a resource link to it and its
    contact sheet as an image; structured content."""
    content: list[TextContent | ResourceLink | ImageContent] = [TextContent(type="text", text=_text(task))]
    if task.file_uri and task.file_path:
        content.append(_link(task))
        if (sheet := _contact_sheet(task)) is not None:
            content.append(sheet)
    return CallToolResult(
        content=content, structured_content=task.model_dump(mode="json"), is_error=task.status == "failed"
    )


def table_result(rows: list[TaskReport], summary: str) -> CallToolResult:
    """A tool result for several tasks: one line each plus a summary, links to finished clips."""
    lines = [summary] + [
        f"- {row.task_id} {row.status}: {row.model}" + (f" on {row.provider}" if row.provider else "")
        + (f", {row.progress_percent:.0f}%" if row.progress_percent and row.status != "succeeded" else "")
        + (f", {row.file_path}" if row.file_path else "")
        + (f", {row.error.code}: {row.error.message}" if row.error else "")
        for row in rows
    ]
    content: list[TextContent | ResourceLink] = [TextContent(type="text", text="\n".join(lines))]
    content += [_link(row) for row in rows if row.file_uri and row.file_path]
    body = TaskReport(message=summary, tasks=rows)
    return CallToolResult(content=content, structured_content=body.model_dump(mode="json"))


def summary(rows: list[TaskReport]) -> str:
    """``3 tasks: 2 succeeded, 1 running.`` (counts by status, in a fixed order)."""
    order = ("succeeded", "running", "queued", "awaiting_confirmation", "failed")
    counts = {status: sum(row.status == status for row in rows) for status in order}
    parts = [f"{count} {status}" for status, count in counts.items() if count]
    return f"{len(rows)} task{'s' if len(rows) != 1 else ''}: {', '.join(parts) or 'none'}."


def dry_run_result(request: GenerationRequest, estimate: float, *, asks_first: bool = False) -> CallToolResult:
    """The result of ``dry_run``: the request is valid and what it would cost; nothing was sent.

    ``asks_first``: the estimate is above ``KLING_MCP_CONFIRM_ABOVE_USD``, so sending it will ask a person first.
    """
    ask = " It is above the confirmation threshold the person set, so they will be asked before it is sent."
    body = TaskReport(
        provider=request.provider,
        mode=request.mode,
        model=request.model_label,
        duration_seconds=request.duration,
        estimated_cost_usd=estimate,
        cost_basis=provider_class(request.provider).price(request.mode, request.sound).basis,
        sandbox=provider_class(request.provider).makes_placeholders,
        dry_run=True,
        message=(
            f"Dry run: the request is valid for {request.model_label} on {provider_class(request.provider).label} and would cost "
            f"about ${estimate:.2f}. Nothing was sent; call again without dry_run to submit it.{ask if asks_first else ''}"
        ),
    )
    return CallToolResult(
        content=[TextContent(type="text", text=body.message)], structured_content=body.model_dump(mode="json")
    )


def error_result(error: KlingError) -> CallToolResult:
    """An ``isError`` result for an error, with the same facts in text and structured content."""
    info = ErrorInfo(code=error.code, message=error.message, retryable=error.retryable)
    body = TaskReport(error=info, task_id=error.task_id, message=error.message)
    text = f"Error ({error.code}): {error.message}" + (f"\ntask_id: {error.task_id}" if error.task_id else "")
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=body.model_dump(mode="json"), is_error=True
    )
