"""One emulated generation task and its clock.

A task's state is never stored: it is computed from wall-clock time against the
instants frozen at creation (docs/providers.md#emulator-task-clock), so it survives a
restart when the store is persistent. Flavors translate :class:`Phase` and
:class:`Outcome` into their own vocabularies (each provider's task-result section of docs/providers.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Outcome(StrEnum):
    """How a task ends when its render time is up."""

    SUCCESS = "success"
    MODERATION = "moderation"
    INTERNAL = "internal"
    MEDIA = "media"
    """An input image could not be fetched (WaveSpeed's task code 1402)."""
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    """Stopped by the caller (fal's cancel, Replicate's cancel or ``Cancel-After`` while running)."""
    ABORTED = "aborted"
    """Replicate's ``Cancel-After`` deadline passed before the task started (not billed)."""


@dataclass(frozen=True)
class Shot:
    """A stretch of the clip and the text it shows; ``seconds`` is a share of the clip duration."""

    text: str
    seconds: float


@dataclass
class Task:
    """Everything needed to answer polls and to synthesize the clip.

    Instants are unix seconds (float). ``run_seconds`` is already scaled by
    ``time_scale``; ``slow`` tasks never reach their end on their own.
    """

    id: str
    flavor: str
    key: str
    model: str
    """Provider route name, e.g. ``kling-v3.0-4k-t2v`` or ``kwaivgi/kling-v3.0-4k/text-to-video``."""
    duration: int
    sound: bool
    width: int
    height: int
    shots: list[Shot]
    created_at: float
    starts_at: float
    run_seconds: float
    outcome: Outcome = Outcome.SUCCESS
    slow: bool = False
    url_ttl: int = 3600
    has_background: bool = False
    forced_at: float | None = None
    time_scale: float = 1.0
    """The clock scale at creation: reported durations (``eta``) are in the provider's own seconds."""
    eta_zero: bool = False
    """Report ``eta`` 0 however long is left (``[[eta:zero]]``)."""
    ok_error_polls: bool = False
    """Answer every poll with an error inside an HTTP 200 (``[[ok_error:poll]]``)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Facts one flavor keeps with the task (JSON values): e.g. Kling's endpoint and
    ``external_task_id``, Replicate's echoed input, fal's deferred validation error."""

    @property
    def finishes_at(self) -> float:
        """When the task turns terminal (``inf`` for a slow task nobody completed)."""
        if self.forced_at is not None:
            return self.forced_at
        if self.slow:
            return math.inf
        return self.starts_at + self.run_seconds

    def phase(self, now: float) -> Phase:
        if now >= self.finishes_at:
            return Phase.SUCCEEDED if self.final_outcome is Outcome.SUCCESS else Phase.FAILED
        if now >= self.starts_at:
            return Phase.RUNNING
        return Phase.QUEUED

    @property
    def final_outcome(self) -> Outcome:
        """A forced completion always succeeds (``POST …/complete``)."""
        return Outcome.SUCCESS if self.forced_at is not None else self.outcome

    def progress(self, now: float) -> int:
        """Percent done: 0 queued, 1..99 running (linear in render time), 100 succeeded, 0 failed (docs/providers.md#emulator-task-clock)."""
        phase = self.phase(now)
        if phase is Phase.SUCCEEDED:
            return 100
        if phase is not Phase.RUNNING:
            return 0
        if self.run_seconds <= 0:
            return 99
        done = (now - self.starts_at) / self.run_seconds
        return max(1, min(99, 1 + int(98 * done)))

    def eta(self, now: float) -> int:
        """Whole seconds until the nominal end of the render, never negative (Novita's ``task.eta``).

        In the emulated provider's seconds (real seconds divided by ``time_scale``), as a real
        provider at that speed would say; a client scales them back like every other duration.
        """
        if self.eta_zero:
            return 0
        end = self.finishes_at if math.isfinite(self.finishes_at) else self.starts_at + self.run_seconds
        return max(0, math.ceil((end - now) / self.time_scale))

    def cancel(self, at: float, outcome: Outcome = Outcome.CANCELED) -> None:
        """End the task at ``at`` (now, or a future deadline) as ``outcome``; a task that would
        end before then on its own is left alone."""
        if self.forced_at is not None or at >= self.finishes_at:
            return
        self.outcome, self.slow = outcome, False
        self.run_seconds = at - self.starts_at  # negative when it ends before leaving the queue

    def force_success(self, now: float) -> None:
        """Make the task succeed at ``now``, or at its own end if that has already passed."""
        self.forced_at = min(now, self.finishes_at)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        values = dict(data)
        values["outcome"] = Outcome(values["outcome"])
        values["shots"] = [Shot(**shot) for shot in values["shots"]]
        return cls(**values)
