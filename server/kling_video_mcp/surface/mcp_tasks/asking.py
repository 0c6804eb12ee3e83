"""A person's yes to a spend, asked through an MCP task (``KLING_MCP_CONFIRM_ABOVE_USD``).

A call run as a task never stops to ask: a request above the threshold is journaled as
awaiting confirmation (nothing sent) and its task shows ``input_required``. The question is the
one elicitation asks on a plain call (``tasks/consent.py``), as a form with one ``confirm`` box:

- 2026-07-28: an input request in ``tasks/get`` (key :data:`SPEND_CONSENT`), answered with
  ``tasks/update``;
- 2025-11-25: an ``elicitation/create`` sent while the client waits on ``tasks/result``.

Accepting with the box ticked sends the request (once, however often it is answered, through the
same claim as the screening room's Confirm); anything else ends it as declined. The answer must
come from the person: a host answers input requests as it answers elicitation, so the same
trust applies (a task is no higher-trust channel, SEP-2663).
"""

from __future__ import annotations

from typing import Any

from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp.types import ElicitResult
from pydantic import ValidationError

from kling_video_mcp.models import TaskRecord
from kling_video_mcp.surface.state import app_state
from kling_video_mcp.tasks import consent

SPEND_CONSENT = "spend-consent"
"""The input request's key: a task asks one question in its life, so the key is never reused."""


def question(record: TaskRecord) -> str:
    """What the person is asked about ``record`` (a task awaiting their yes)."""
    assert record.request is not None
    return consent.question(record.request, record.estimated_cost_usd or 0.0)


def requested_schema() -> dict[str, Any]:
    """The form: one ``confirm`` box (:class:`~kling_video_mcp.tasks.consent.SpendConsent`)."""
    return render_elicitation_schema(consent.SpendConsent)


def input_requests(record: TaskRecord) -> dict[str, Any]:
    """The task's outstanding input requests (SEP-2663 ``inputRequests``): the spend question."""
    params = {"mode": "form", "message": question(record), "requestedSchema": requested_schema()}
    return {SPEND_CONSENT: {"method": "elicitation/create", "params": params}}


def says_yes(answer: ElicitResult) -> bool:
    """Accepted with the box ticked (an accepted form unticked is a no, as on a plain call)."""
    if answer.action != "accept":
        return False
    try:
        return consent.SpendConsent.model_validate(answer.content or {}).confirm
    except ValidationError:
        return False


async def answer(ctx: Context, record: TaskRecord, response: ElicitResult) -> TaskRecord:
    """Apply the person's answer to ``record`` (awaiting their yes); returns the task as it now is.

    A yes sends the request; a refusal of it by the provider or a failed check is kept on the task
    (its result says why), so the task never vanishes from under its client. A no ends it as declined.
    """
    state = app_state(ctx)
    service = state.service
    if not says_yes(response):
        estimate = record.estimated_cost_usd or 0.0
        refusal = consent.declined_by_person(estimate, dismissed=response.action == "cancel")
        return await service.decline(record.task_id, owner=record.owner, message=refusal.message)
    return await service.confirm(record.task_id, owner=record.owner, image_dirs=state.image_dirs, keep_refused=True)
