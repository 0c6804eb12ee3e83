"""Adopting a render submitted elsewhere, or whose submit's outcome was lost, by its provider task id.

``check_task(task_id=<provider's id>, provider=..., mode=...)`` comes here when the caller has no
task by that id. No provider lists its tasks, so a submit cut off by a crash is found by the user
in the provider's dashboard and linked back to its record here.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta

from kling_video_mcp.config import Mode, ProviderName
from kling_video_mcp.errors import InvalidRequest, NotFound, UnknownOutcome
from kling_video_mcp.journal import Journal
from kling_video_mcp.models import GenerationRequest, TaskRecord, utcnow
from kling_video_mcp.providers import Providers
from kling_video_mcp.tasks.delivery import Delivery

log = logging.getLogger(__name__)

ADOPTION_LOOKBACK = timedelta(days=2)
"""How old an unknown-outcome submit adoption may still link to (our bound: an orphan is looked
for within hours of the restart that reported it; the bound keeps the scan small)."""
ADOPTED = "recovered:"
"""Fingerprint prefix of a task made by adopting a provider task id no submit of ours claimed."""
PROVIDER_TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What a provider task id given for adoption must look like: a plain token, safe in a URL path."""


class Adoption:
    """Links provider task ids to their owner's records (see :meth:`__call__`)."""

    def __init__(self, journal: Journal, providers: Providers, delivery: Delivery) -> None:
        self._journal = journal
        self._providers = providers
        self._delivery = delivery

    async def __call__(self, provider_task_id: str, provider: ProviderName, mode: Mode, *, owner: str) -> TaskRecord:
        """Start tracking, as ``owner``'s, a task submitted elsewhere that ``owner`` has no record of
        yet; returns the record (the caller polls it).

        ``owner``'s one unknown-outcome submit on the same provider and mode, if there is exactly
        one, is taken to be that task: the provider task id is linked to it. A provider task id
        already linked to another user's record stays theirs: "not found" for ``owner``, in the
        words of an id the provider does not know, unless it was merely adopted by that user and
        ``owner``'s own orphan claims it (the orphan's owner can always adopt their task).

        Raises:
            InvalidRequest: ``provider_task_id`` is not a plain token (``[A-Za-z0-9_.-]{1,128}``).
            NotFound: the provider does not know the task, or it is another user's (same words,
                and the provider is asked all the same, so not even the time differs).
        """
        if not PROVIDER_TASK_ID.fullmatch(provider_task_id):
            raise InvalidRequest(
                "task_id: a provider task id is a plain token of letters, digits, '_', '.' and '-' "
                "(at most 128); nothing was sent."
            )
        linked = await self._journal.find_provider_task(provider, provider_task_id)
        adapter = await self._providers.get(provider)
        not_found = NotFound(
            f"No task {provider_task_id!r} among your tasks, and {adapter.label} does not know it under that "
            "id for this mode. Check the task id, provider and mode."
        )
        try:
            update = await adapter.poll(provider_task_id)
        except NotFound as exc:
            raise not_found from exc
        orphan = await self._lone_unknown_submit(provider, mode, owner)
        if linked is not None and linked.owner != owner and (orphan is None or not linked.fingerprint.startswith(ADOPTED)):
            raise not_found
        if orphan is not None:
            orphan.provider_task_id = provider_task_id
            orphan.provider_requests += 1
            orphan.gave_up = False
            orphan.finished_at = None
            orphan.notes.append("Found at the provider after its submit's outcome was unknown, and adopted.")
            self._delivery.apply(orphan, update)
            orphan.watched_since = utcnow()
            return await self._journal.save(orphan)
        request = GenerationRequest(provider=provider, mode=mode, kind="t2v")
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
            owner=owner,
            provider=provider,
            mode=mode,
            kind="t2v",
            endpoint=adapter.endpoint("t2v", mode),
            request=request,
            fingerprint=f"{ADOPTED}{provider}:{provider_task_id}",
            provider_task_id=provider_task_id,
            provider_requests=1,
            notes=["Recovered from a provider task id; its parameters are unknown to this server."],
        )
        self._delivery.apply(record, update)
        record.watched_since = utcnow()
        await self._journal.save(record)
        log.info("task %s (user %s): adopted %s task %s", record.task_id, owner, provider, provider_task_id)
        return record

    async def _lone_unknown_submit(self, provider: ProviderName, mode: Mode, owner: str) -> TaskRecord | None:
        """``owner``'s one unknown-outcome submit without a provider task id for ``provider`` and ``mode``."""
        candidates = [
            record
            for record in await self._journal.created_since(utcnow() - ADOPTION_LOOKBACK, owner)
            if record.provider == provider and record.mode == mode and record.provider_task_id is None
            and record.error_code == UnknownOutcome.code
        ]  # fmt: skip
        return candidates[0] if len(candidates) == 1 else None
