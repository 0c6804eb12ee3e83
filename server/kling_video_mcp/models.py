"""The internal model: one request shape and one task record, shared by every layer.

Field names follow the providers' own (``prompt``, ``negative_prompt``, ``aspect_ratio``,
``cfg_scale``, ``multi_prompt``, ...); the ranges are those of the Kling v3.0 API pages
(docs/providers.md#common-fields).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

Mode = Literal["std", "pro", "4k"]
"""Kling v3.0's tiers: Standard, Pro, 4K."""
Kind = Literal["t2v", "i2v"]
"""``t2v`` text to video, ``i2v`` image to video."""
TaskKind = Literal["t2v", "i2v", "assemble"]
"""A render (``t2v``, ``i2v``) at a provider, or ``assemble``: finished clips joined into one film here."""
Transition = Literal["cut", "crossfade"]
AudioChoice = Literal["keep", "mute"]
AspectRatio = Literal["16:9", "9:16", "1:1"]
ShotType = Literal["customize", "intelligent"]
TaskStatus = Literal["awaiting_confirmation", "queued", "running", "succeeded", "failed"]
"""``awaiting_confirmation``: journaled, nothing sent, until a person confirms it (``tasks/consent.py``)."""
TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset({"succeeded", "failed"})
PublicStatus = TaskStatus
"""A task's status as callers see it (:attr:`TaskRecord.public_status`): the same five words,
``succeeded`` only once the task is delivered."""
Companion = Literal["facts", "contact_sheet", "last_frame", "sidecar"]
"""What is made beside a finished clip (``media/companions.py``): its probed facts and three files."""

LOCAL_OWNER = "local"
"""The owner of every task on a server without sign-in (stdio, or HTTP with one shared token)."""

MODE_LABELS: dict[Mode, str] = {"std": "Standard", "pro": "Pro", "4k": "4K"}
KIND_LABELS: dict[Kind, str] = {"t2v": "text-to-video", "i2v": "image-to-video"}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Shot(BaseModel):
    """One shot of a multi-shot video (Kling ``multi_prompt`` item, docs/providers.md#multi-shot-prompts)."""

    prompt: str = Field(min_length=1, max_length=512, description="What happens in this shot (at most 512 characters).")
    duration: int = Field(ge=1, le=15, description="Length of this shot in seconds; the shots' durations add up to `duration`.")


class GenerationRequest(BaseModel):
    """A render request as the tools received it, before any provider's wire format."""

    provider: str
    """A registered provider's name (``kling_video_mcp.providers.PROVIDERS``, which imports this
    module, so the name is checked where it enters: the tools' ``provider`` parameter)."""
    mode: Mode
    kind: Kind
    prompt: str | None = None
    negative_prompt: str | None = None
    duration: int = 5
    aspect_ratio: AspectRatio | None = None
    cfg_scale: float | None = None
    sound: bool = False
    multi_prompt: list[Shot] | None = None
    shot_type: ShotType | None = None
    element_list: list[str] | None = None
    image: str | None = None
    end_image: str | None = None

    @property
    def model_label(self) -> str:
        """Human name of the model, e.g. ``Kling v3.0 4K text-to-video``."""
        return f"Kling v3.0 {MODE_LABELS[self.mode]} {KIND_LABELS[self.kind]}"

    def fingerprint(self) -> str:
        """sha256 of the canonical request: equal requests (same provider, endpoint, parameters) match."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ImageSource(BaseModel):
    """An input image after it was found and checked: either bytes we hold or a URL we pass on."""

    label: str
    """What the user gave, shortened for messages (a path, a URL, or ``data:`` URI head)."""
    url: str | None = None
    data: bytes | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None


class ProviderUpdate(BaseModel):
    """What one poll of a provider says about a task, in our terms."""

    status: TaskStatus
    progress_percent: float | None = None
    eta_seconds: float | None = None
    video_url: str | None = None
    url_expires_at: datetime | None = None
    error: str | None = None
    error_code: str | None = None
    """Our error code for a failed task (``content_policy`` or ``provider_error``)."""


class ClipFacts(BaseModel):
    """What PyAV reads from a downloaded clip."""

    duration_seconds: float
    width: int
    height: int
    fps: float | None = None
    video_codec: str
    has_audio: bool


class AssemblySource(BaseModel):
    """One shot of an assembly: a finished clip as it was when the assembly was asked for."""

    task_id: str
    file_path: str
    sha256: str | None = None
    facts: ClipFacts
    """Duration (seconds), frame size, rate, codec and sound, as probed when the clip was delivered."""


class Assembly(BaseModel):
    """What ``assemble_video`` was asked for, with its shots resolved to files, in playing order."""

    title: str | None = None
    transition: Transition = "cut"
    crossfade_seconds: float | None = None
    """Length of each crossfade in seconds; ``None`` for cuts."""
    audio: AudioChoice = "keep"
    sources: list[AssemblySource]
    expected_duration_seconds: float
    """The sources' durations added up, minus one crossfade per join when crossfading: from their
    probe facts when asked for, then from their pictures' own lengths once made (sound may run longer)."""
    method: Literal["stream_copy", "re_encode"] | None = None
    """How the film was joined: packets copied as they are, or frames re-encoded (set when done)."""


class TaskRecord(BaseModel):
    """One task as the journal keeps it: everything needed to finish it after a restart.

    A render has a provider, mode, endpoint and request; an assembly (``kind="assemble"``)
    has none of them (nothing is sent anywhere) and carries its :class:`Assembly` instead.
    """

    task_id: str
    owner: str = LOCAL_OWNER
    """Who made it (``tasks/owners.py``); only they see it. Tasks from before owners are local."""
    provider: str | None = None
    """A registered provider's name (see :attr:`GenerationRequest.provider`)."""
    mode: Mode | None = None
    kind: TaskKind
    endpoint: str | None = None
    """The provider's model route, e.g. ``kling-v3.0-4k-t2v`` or ``kwaivgi/kling-v3.0-4k/text-to-video``."""
    request: GenerationRequest | None = None
    assembly: Assembly | None = None
    fingerprint: str
    provider_task_id: str | None = None
    provider_urls: dict[str, str] = Field(default_factory=dict)
    """Where the provider's submit answer said to follow the task (status, result, cancel), for a
    provider whose answers name them (:attr:`~kling_video_mcp.providers.base.Submitted.follow_urls`)."""
    status: TaskStatus = "queued"
    progress_percent: float | None = None
    eta_seconds: float | None = None
    running_since: datetime | None = None
    """When a poll first saw the task running (for estimating the time left from its progress)."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    estimated_cost_usd: float | None = None
    video_url: str | None = None
    url_expires_at: datetime | None = None
    file_path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    clip_facts: ClipFacts | None = None
    contact_sheet_path: str | None = None
    last_frame_path: str | None = None
    sidecar_path: str | None = None
    companions_pending: bool = False
    """The clip is on disk and journaled (``file_path``) but its companions are not made yet:
    the task is not delivered until they are, so no caller sees ``succeeded`` without them, and a
    server stopped in between finds the task unfinished and makes them from the clip."""
    companion_problems: dict[Companion, str] = Field(default_factory=dict)
    """Each companion that could not be made, and why (shown in the results' ``warnings``)."""
    sheet_times_seconds: list[float] | None = None
    """Where the contact sheet takes its frames, in seconds: a film's shot middles; ``None``
    spreads them across the clip."""
    warnings: list[str] = Field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    provider_requests: int = 0
    """Requests made to the provider for this task (submit and polls)."""
    watched_since: datetime | None = None
    """When watching (re)started, if after creation: the ceiling counts from here."""
    gave_up: bool = False
    """``True`` when *we* stopped watching (ceiling, lost key, unreachable provider) rather than
    the provider failing the task: checking it again resumes watching."""
    notes: list[str] = Field(default_factory=list)
    waiting_for_slot: str | None = None
    """While ``queued`` and unsent: why the provider could not take it yet (its account runs as many
    tasks as it may); sent again when one of them ends (``tasks/slots.py``)."""
    confirm_by: datetime | None = None
    """While ``awaiting_confirmation``: when it ends as declined if no one has answered."""
    webhook_token_sha256: str | None = None
    """Digest of the token in the webhook URL the provider was given (the token itself is
    kept nowhere); ``None`` when no webhook was asked for."""

    @property
    def webhook_expected(self) -> bool:
        """The provider was asked to call us when the task ends."""
        return self.webhook_token_sha256 is not None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def delivered(self) -> bool:
        """Succeeded, the verified clip on disk, and its companions made (or named in
        ``companion_problems``), all journaled together."""
        return self.status == "succeeded" and self.file_path is not None and not self.companions_pending

    @property
    def public_status(self) -> PublicStatus:
        """The status callers see: a render that finished at the provider but whose clip is still
        downloading, or whose companions are still being made, is ``running``."""
        if self.status == "succeeded" and not self.delivered:
            return "running"
        return self.status

    @property
    def finished(self) -> bool:
        """Delivered, or failed: nothing more happens to it unless someone checks it again."""
        return self.delivered or self.status == "failed"
