"""Submits held for a free slot, at a provider that limits how many tasks an account runs at once.

Some providers count an account's running tasks and refuse a submit over the account's limit
(which provider, and how it says so: docs/providers.md#kling-held-submits). Nothing was created,
and waiting a few seconds does not help: a slot frees only when one of the account's tasks ends.
So the provider raises :class:`~kling_video_mcp.errors.ConcurrencyLimited`, and instead of failing
the task the domain parks it here:

1. :meth:`HeldSubmits.hold` keeps the journaled record ``queued``, without a provider task id,
   with the provider's reason in :attr:`~kling_video_mcp.models.TaskRecord.waiting_for_slot` and
   in its ``warnings`` (what ``check_task`` shows). Nothing is sent.
2. :meth:`HeldSubmits.run` (one per server, in its task group) sends the provider's held submits
   again, oldest first, whenever one of that provider's tasks reaches ``succeeded`` or
   ``failed`` (it listens to the journal's ``changed`` events, on every worker where the journal
   is shared), every :data:`RETRY_SECONDS` besides (tasks started elsewhere on the same account
   end unseen), and once at start-up. It stops at the first refusal: the account is full again.
3. Each resend is claimed first, inside the journal's ``exclusive`` section, by clearing
   ``waiting_for_slot``: two workers never send the same held submit. A resend refused for the
   same reason is held again and keeps its place by ``created_at``.

Wiring: :class:`~kling_video_mcp.tasks.submission.Submission` holds a submit refused with
``ConcurrencyLimited`` instead of withdrawing it and gives :class:`HeldSubmits` its ``resend``;
the orphan rule skips held records (:func:`is_held`); the service runs :meth:`HeldSubmits.run`
beside its watcher.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from kling_video_mcp.errors import ConcurrencyLimited
from kling_video_mcp.journal import EventKind, Journal
from kling_video_mcp.models import TaskRecord, utcnow

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
"""How often held submits are tried again without a task ending here (slots freed elsewhere on
the account). Public clients wait about 90 s after a 1303; a minute keeps a free slot idle little."""

Resend = Callable[[TaskRecord], Awaitable[None]]
"""Submits a claimed held record (``waiting_for_slot`` cleared): under its submit lock, as a first
submit is, saving the provider task id and watching it. Raises :class:`ConcurrencyLimited` when
the account is still full; records any other outcome on the task itself (a refusal fails it)."""


def is_held(record: TaskRecord) -> bool:
    """Whether ``record`` is a submit parked for a free slot (nothing sent; not an orphan)."""
    return record.waiting_for_slot is not None and record.provider_task_id is None and record.status == "queued"


class HeldSubmits:
    """Submits waiting for a provider slot, and the loop that sends them when one frees.

    ``journal`` keeps them; ``resend`` sends one (see :data:`Resend`); ``retry_seconds`` paces
    the fallback retries (scaled down in tests).
    """

    def __init__(self, journal: Journal, resend: Resend, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self._journal = journal
        self._resend = resend
        self._retry_seconds = retry_seconds
        self._releasing: dict[str, anyio.Lock] = {}
        """One release per provider at a time, so held submits go in their order."""

    async def hold(self, record: TaskRecord, error: ConcurrencyLimited) -> TaskRecord:
        """Park ``record`` (reserved, refused with ``error``): ``queued`` with the reason, nothing sent."""
        reason = f"Waiting for a free slot: {error.message}"
        record.status = "queued"
        record.waiting_for_slot = reason
        if reason not in record.warnings:
            record.warnings.append(reason)
        log.info("task %s: %s runs as many tasks as the account allows; held until one ends", record.task_id, record.provider)
        return await self._journal.save(record)

    async def held(self, provider: str | None = None) -> list[TaskRecord]:
        """The held submits (of ``provider``, or all), oldest first."""
        records = await self._journal.orphaned_submits(utcnow())  # every queued record without a provider task id
        return sorted(
            (record for record in records if is_held(record) and provider in (None, record.provider)),
            key=lambda record: record.created_at,
        )

    async def release(self, provider: str) -> int:
        """Send ``provider``'s held submits, oldest first, until one is refused again; returns how many went."""
        sent = 0
        async with self._releasing.setdefault(provider, anyio.Lock()):
            for record in await self.held(provider):
                claimed = await self._claim(record.task_id)
                if claimed is None:
                    continue  # sent meanwhile by another worker
                try:
                    await self._resend(claimed)
                except ConcurrencyLimited as exc:
                    await self.hold(claimed, exc)
                    break
                sent += 1
        return sent

    async def _claim(self, task_id: str) -> TaskRecord | None:
        async with self._journal.exclusive("held-submits"):
            record = await self._journal.get(task_id)
            if record is None or not is_held(record):
                return None
            reason = record.waiting_for_slot
            record.waiting_for_slot = None
            record.warnings = [warning for warning in record.warnings if warning != reason]
            return await self._journal.save(record)

    async def run(self) -> None:
        """Send held submits when a task of their provider ends, every ``retry_seconds``, and now."""
        send, receive = anyio.create_memory_object_stream[str](math.inf)

        def on_event(kind: EventKind, task_id: str) -> None:
            if kind == "changed":
                send.send_nowait(task_id)

        unsubscribe = self._journal.subscribe(on_event)
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._follow_endings, receive)
                while True:
                    for provider in {record.provider for record in await self.held()}:
                        await self._release_logged(provider)
                    await anyio.sleep(self._retry_seconds)
        finally:
            unsubscribe()

    async def _follow_endings(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async for task_id in receive:
            record = await self._journal.get(task_id)
            if record is not None and record.is_terminal and record.provider_task_id is not None and await self.held(record.provider):
                await self._release_logged(record.provider)

    async def _release_logged(self, provider: str | None) -> None:
        if provider is None:
            return
        try:
            sent = await self.release(provider)
        except Exception:
            log.exception("held submits of %s could not be sent; trying again later", provider)
            return
        if sent:
            log.info("%d held submit(s) sent to %s", sent, provider)
