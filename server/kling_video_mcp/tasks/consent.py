"""A person says yes before money is spent: ``KLING_MCP_CONFIRM_ABOVE_USD``.

When that threshold is set, a request estimated above it is sent only after a person said
yes. The MCP surface asks them through elicitation where the client can; where it cannot
but shows the screening room (MCP Apps), the request is journaled as
``awaiting_confirmation`` with nothing sent, and waits for the person's answer from the
view, or for ``confirm_timeout_seconds`` (30 minutes by default), after which it ends as
declined. This module holds those rules: whether to ask, what to ask, and the life of a
waiting request (park, claim on confirm, decline, expire).

Budget and idempotency: a waiting request is a journaled task like any other, so an
identical request returns it instead of making a second one, and its estimate counts
against ``KLING_MCP_BUDGET_USD`` while it waits (the budget was checked when it was
journaled, so a confirmed request never overdraws it). A declined one is not billed and
does not count; it is no duplicate either, so asking again asks the person again.
Confirming is a compare-and-set from ``awaiting_confirmation`` inside the journal's exclusive
section, so two Confirm clicks (or two server processes, on one machine or several) send it once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Literal

import anyio
from pydantic import BaseModel, Field

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import Declined
from kling_video_mcp.journal import Journal
from kling_video_mcp.models import MODE_LABELS, GenerationRequest, TaskRecord, utcnow
from kling_video_mcp.providers import provider_class

log = logging.getLogger(__name__)

AWAITING = "awaiting_confirmation"
THRESHOLD_VARIABLE = "KLING_MCP_CONFIRM_ABOVE_USD"
SWEEP_INTERVAL_MAX = 30.0
"""Seconds between two looks for waiting requests past their deadline, at most."""
PROMPT_PREVIEW = 200
"""Characters of the prompt quoted in the question."""


ConsentAnswer = Literal["not_asked", "confirmed", "declined", "dismissed"]
"""The person's answer to the spend question, when the client asked them: ``not_asked`` (no
question, or a client that cannot ask), ``confirmed``, ``declined`` (said no, or accepted the
form with the box unticked), ``dismissed`` (closed the question without answering)."""


class SpendConsent(BaseModel):
    """The form the person answers (MCP elicitation, form mode): accepting it with ``confirm`` is the yes."""

    confirm: bool = Field(True, title="Spend it", description="Send this render and pay for it.")


def needs_confirmation(settings: Settings, estimate_usd: float) -> bool:
    """Whether a request estimated at ``estimate_usd`` waits for a person's yes (strictly above the threshold)."""
    return settings.confirm_above_usd is not None and estimate_usd > settings.confirm_above_usd


def question(request: GenerationRequest, estimate_usd: float) -> str:
    """What the person is asked, e.g. ``Render 10 s of Kling v3.0 4K on <provider label> for about $4.20?``.

    The prompt (or the shots' prompts) follows on a second line, so they know what they pay for.
    """
    sound = " with sound" if request.sound else ""
    head = (
        f"Render {request.duration} s of Kling v3.0 {MODE_LABELS[request.mode]}{sound} "
        f"on {provider_class(request.provider).label} for about ${estimate_usd:.2f}?"
    )
    prompt = request.prompt or " / ".join(shot.prompt for shot in request.multi_prompt or [])
    if len(prompt) > PROMPT_PREVIEW:
        prompt = prompt[: PROMPT_PREVIEW - 1] + "…"
    return f"{head}\nPrompt: {prompt}" if prompt else head


def declined_by_person(estimate_usd: float, *, dismissed: bool) -> Declined:
    """The error for a person's no (``dismissed``: they closed the question without answering)."""
    how = "dismissed the question" if dismissed else "declined"
    return Declined(
        f"The person {how} when asked to spend about ${estimate_usd:.2f} on this render; nothing was sent. "
        "Ask them before trying again, or make it cheaper (shorter, or a cheaper mode: std < pro < 4k)."
    )


def cannot_ask(settings: Settings, estimate_usd: float) -> Declined:
    """The refusal for a client that can neither ask the person (elicitation) nor show the screening room (Apps)."""
    threshold = settings.confirm_above_usd or 0.0
    return Declined(
        f"This request is estimated at ${estimate_usd:.2f}, above the ${threshold:.2f} the person running this "
        f"server set for confirmation ({THRESHOLD_VARIABLE}), and this client can neither ask them (MCP "
        "elicitation) nor show the screening room (MCP Apps). Nothing was sent. To go ahead, the person can raise "
        f"{THRESHOLD_VARIABLE} to at least ${estimate_usd:.2f} (or unset it) in the server's configuration and "
        "restart it, or use a client that supports elicitation; or make the request cheaper (shorter, or a "
        "cheaper mode: std < pro < 4k)."
    )


class ConsentDesk:
    """The requests waiting for a person's answer, kept in the journal so they survive restarts."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal

    async def park(self, record: TaskRecord) -> TaskRecord:
        """Turn a just-reserved task (nothing sent) into one awaiting the person's answer."""
        record.status = AWAITING
        record.confirm_by = utcnow() + timedelta(seconds=self.settings.confirm_timeout_seconds)
        record.notes.append(
            f"Nothing was sent yet: the estimate (${record.estimated_cost_usd or 0:.2f}) is above the "
            f"${self.settings.confirm_above_usd or 0:.2f} the person set for confirmation ({THRESHOLD_VARIABLE}). "
            "The person confirms or declines it in the screening room; without an answer it ends as declined "
            f"at {record.confirm_by:%H:%M} UTC."
        )
        return await self.journal.save(record)

    async def hold(self, record: TaskRecord, *, can_show_view: bool) -> TaskRecord:
        """A just-reserved task (nothing sent) that needs a yes nobody could give yet.

        Parked for the screening room when the client shows it; otherwise withdrawn from the
        journal and refused.

        Raises:
            Declined: the client can neither ask the person nor show the view (see :func:`cannot_ask`).
        """
        if can_show_view:
            return await self.park(record)
        await self.journal.delete(record.task_id)
        raise cannot_ask(self.settings, record.estimated_cost_usd or 0.0)

    async def claim(self, task_id: str) -> TaskRecord | None:
        """Move a waiting task to ``queued`` for sending and return it; ``None`` if it is not waiting.

        The task's ``created_at`` becomes now: the provider task is made now, which is what
        the budget period and the orphaned-submit rule count from.

        Raises:
            Declined: the task already ended as declined, or its deadline passed just now.
        """
        async with self.journal.exclusive("consent"):
            record = await self.journal.get(task_id)
            if record is None or record.status != AWAITING:
                if record is not None and record.error_code == Declined.code:
                    message = record.error_message or "This request was declined; nothing was sent."
                    raise Declined(message, task_id=task_id)
                return None
            if record.confirm_by is not None and record.confirm_by <= utcnow():
                await self._end(record, self._expired_message())
                raise Declined(self._expired_message(), task_id=task_id)
            record.status = "queued"
            record.created_at = utcnow()
            record.confirm_by = None
            record.notes.append("The person confirmed the spend in the screening room.")
            return await self.journal.save(record)

    async def decline(self, task_id: str, message: str) -> TaskRecord | None:
        """End a waiting task as declined with ``message``; returns it as it now is (``None`` if unknown).

        A task no longer waiting (confirmed and sent, or already declined) is left as it is.
        """
        async with self.journal.exclusive("consent"):
            record = await self.journal.get(task_id)
            if record is not None and record.status == AWAITING:
                await self._end(record, message)
            return record

    async def _end(self, record: TaskRecord, message: str) -> None:
        record.status = "failed"
        record.error_code = Declined.code
        record.error_message = message
        record.finished_at = utcnow()
        record.confirm_by = None
        await self.journal.save(record)

    def _expired_message(self) -> str:
        seconds = self.settings.confirm_timeout_seconds
        span = f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
        return (
            f"No one confirmed this request within {span}, so it ended as declined; nothing was sent. "
            "Make the request again to ask again."
        )

    async def expire_overdue(self) -> list[TaskRecord]:
        """End every waiting task past its deadline as declined; returns them."""
        now = utcnow()
        ended = []
        for waiting in await self.journal.recent(AWAITING, limit=10_000):
            if waiting.confirm_by is None or waiting.confirm_by <= now:
                record = await self.decline(waiting.task_id, self._expired_message())
                if record is not None and record.error_code == Declined.code:
                    ended.append(record)
        return ended

    async def sweep(self) -> None:
        """Expire overdue waiting tasks for ever, looking every tenth of the timeout (at most every 30 s).

        Run it for the life of the service: waiting tasks are journaled, so one parked
        before a restart still ends on time (or at the first sweep after it).
        """
        interval = min(SWEEP_INTERVAL_MAX, self.settings.confirm_timeout_seconds / 10)
        while True:
            try:
                for record in await self.expire_overdue():
                    log.info("task %s: no answer to the spend confirmation in time; declined", record.task_id)
            except Exception:
                log.exception("checking for unanswered spend confirmations failed; trying again")
            await anyio.sleep(interval)
