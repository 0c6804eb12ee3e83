"""Tool results: one report model, rendered three ways for every client.

The same facts go into ``structuredContent`` (matching the tools' ``outputSchema``; some
clients show the model only that), a text block (for clients that drop other blocks), and,
for a finished clip, a ``resource_link`` to the file (``video/mp4``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from mcp.types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel, Field

from kling_video_mcp import pricing
from kling_video_mcp.errors import KlingError
from kling_video_mcp.models import TaskRecord
from kling_video_mcp.providers import LABELS
from kling_video_mcp.providers.sandbox import PLACEHOLDER_NOTE


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable error code, e.g. validation_error, auth_error, content_policy.")
    message: str = Field(description="What went wrong and what to do about it.")
    retryable: bool = Field(description="Whether trying again later may succeed.")


class TaskReport(BaseModel):
    """Everything known about one task, or an error that stopped one from being made.

    The one output schema of every tool: error results conform to it too (``error`` set,
    task fields empty where there is no task), because some clients validate them.
    """

    task_id: str | None = Field(None, description="Pass this to check_task.")
    status: Literal["queued", "running", "succeeded", "failed"] | None = Field(
        None, description="succeeded only once the clip is safely on disk."
    )
    provider: str | None = None
    mode: str | None = None
    model: str | None = Field(None, description="e.g. 'Kling v3.0 4K text-to-video'.")
    duration_seconds: int | None = None
    progress_percent: float | None = None
    eta_seconds: float | None = Field(None, description="Seconds until the provider expects to finish, if it says.")
    estimated_cost_usd: float | None = None
    cost_basis: str | None = Field(None, description="Where the price estimate comes from, and whether it is confirmed.")
    file_path: str | None = Field(None, description="The finished clip on the server's disk.")
    file_uri: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    provider_video_url: str | None = Field(None, description="The provider's own link; it expires (about 1 hour).")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    reused_existing: bool = Field(False, description="True when an identical recent request's task was returned.")
    sandbox: bool = Field(False, description="True for free placeholder clips from the bundled emulator.")
    next_check_seconds: float | None = Field(None, description="When calling check_task again makes sense.")
    message: str = Field(description="A one-paragraph summary with the next step.")
    notes: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None


def public_status(record: TaskRecord) -> Literal["queued", "running", "succeeded", "failed"]:
    """A render that finished but whose clip is still downloading is reported as running."""
    if record.status == "succeeded" and not record.delivered:
        return "running"
    return record.status


def _next_check(record: TaskRecord, status: str) -> float | None:
    if status in ("succeeded", "failed"):
        return None
    if record.eta_seconds:
        return round(min(max(record.eta_seconds / 2, 5.0), 60.0))
    return 5.0 if record.provider == "sandbox" else 30.0


def _message(record: TaskRecord, status: str, reused: bool) -> str:
    who = f"{record.request.model_label} on {LABELS[record.provider]}"
    if status == "succeeded":
        return f"Done: {who}. The clip is at {record.file_path}."
    if status == "failed":
        return f"Failed: {who}. {record.error_message or ''}".strip()
    lead = "An identical request was made recently; this is that task (pass force_new=true to pay for a new one). " if reused else ""
    progress = f" {record.progress_percent:.0f}% done." if record.progress_percent else ""
    if record.status == "succeeded":
        progress = " The render is finished; the clip is downloading."
    eta = f" About {record.eta_seconds:.0f} s left." if record.eta_seconds else ""
    return (
        f"{lead}{status.capitalize()}: {who}.{progress}{eta} Renders take minutes; the server finishes and downloads "
        f"the clip by itself. Call check_task with task_id {record.task_id} in about {_next_check(record, status):.0f} s."
    )


def clip_uri(file_path: str, clip_base_url: str | None) -> str:
    """Where a client can get the clip: ``file://`` on stdio, ``<base>/clips/<name>`` over HTTP."""
    if clip_base_url is None:
        return Path(file_path).as_uri()
    return f"{clip_base_url.rstrip('/')}/clips/{quote(Path(file_path).name)}"


def report(record: TaskRecord, *, reused: bool = False, clip_base_url: str | None = None) -> TaskReport:
    """The :class:`TaskReport` of a journaled task (``clip_base_url``: see :func:`clip_uri`)."""
    status = public_status(record)
    cost_basis = pricing.price(record.provider, record.mode, record.request.sound)
    notes = list(record.notes)
    if record.provider == "sandbox":
        notes.append(PLACEHOLDER_NOTE)
    return TaskReport(
        task_id=record.task_id,
        status=status,
        provider=record.provider,
        mode=record.mode,
        model=record.request.model_label,
        duration_seconds=record.request.duration if record.request.prompt or record.request.multi_prompt else None,
        progress_percent=record.progress_percent,
        eta_seconds=record.eta_seconds,
        estimated_cost_usd=record.estimated_cost_usd,
        cost_basis=f"{cost_basis.source} ({'confirmed' if cost_basis.confirmed else 'estimate'})",
        file_path=record.file_path,
        file_uri=clip_uri(record.file_path, clip_base_url) if record.file_path else None,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        provider_video_url=record.video_url,
        created_at=record.created_at,
        finished_at=record.finished_at,
        reused_existing=reused,
        sandbox=record.provider == "sandbox",
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
    if task.file_path:
        lines += [f"file: {task.file_path}", f"resource link: {task.file_uri}", f"size: {task.size_bytes} bytes, sha256 {task.sha256}"]
    if task.error:
        lines.append(f"error: {task.error.code}: {task.error.message}")
    lines += [f"note: {note}" for note in task.notes]
    return "\n".join(lines)


def task_result(task: TaskReport) -> CallToolResult:
    """A tool result for a task: text, a resource link when the clip is on disk, structured content."""
    content: list[TextContent | ResourceLink] = [TextContent(type="text", text=_text(task))]
    if task.file_uri and task.file_path:
        content.append(
            ResourceLink(
                type="resource_link",
                uri=task.file_uri,
                name=Path(task.file_path).name,
                title=f"{task.model} clip",
                description=f"{task.model} clip from {task.provider}, task {task.task_id}",
                mime_type="video/mp4",
                size=task.size_bytes,
            )
        )
    return CallToolResult(
        content=content, structured_content=task.model_dump(mode="json"), is_error=task.status == "failed"
    )


def error_result(error: KlingError) -> CallToolResult:
    """An ``isError`` result for an error, with the same facts in text and structured content."""
    info = ErrorInfo(code=error.code, message=error.message, retryable=error.retryable)
    body = TaskReport(error=info, task_id=error.task_id, message=error.message)
    text = f"Error ({error.code}): {error.message}" + (f"\ntask_id: {error.task_id}" if error.task_id else "")
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=body.model_dump(mode="json"), is_error=True
    )
