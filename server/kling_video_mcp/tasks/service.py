"""The task service: the one entry point of the task domain for every surface.

A façade over three parts that do the work: :mod:`~kling_video_mcp.tasks.submission` (checks,
budgets, idempotency, consent, sending, adoption), :mod:`~kling_video_mcp.tasks.delivery`
(polls, downloads, films, companions, previews) and the :mod:`~kling_video_mcp.tasks.watcher`
that steps every unfinished task in the background. The MCP surface (tools, resources, the
view, the webhook receiver) calls only the methods here, never the journal, the watcher, the
providers or the consent desk.

Every method that acts for a caller takes their ``owner`` and sees only their tasks: another
owner's task is "not found", word for word like one that does not exist. Once a task is found
for its owner, everything after uses that record's own ``task_id``, never the id the caller gave
(which may be a provider's id that another record also carries).

For surfaces that run tasks without waiting in a tool call (MCP tasks): :meth:`TaskService.submit`
returns as soon as the request is journaled and sent; :meth:`TaskService.read` gives the owner's
record as it stands; :meth:`TaskService.next_change` and :meth:`TaskService.wait_for_change` wait
for any task's next save; :meth:`TaskService.waiting` makes the watcher poll tasks at their
provider's fastest pace while someone waits on them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.journal import Journal, open_journal
from kling_video_mcp.models import AudioChoice, GenerationRequest, PublicStatus, TaskRecord, Transition
from kling_video_mcp.providers import Providers
from kling_video_mcp.errors import KlingError
from kling_video_mcp.tasks import cancellation, consent
from kling_video_mcp.tasks.adoption import Adoption
from kling_video_mcp.tasks.consent import ConsentAnswer
from kling_video_mcp.tasks.delivery import Delivery
from kling_video_mcp.tasks.recovery import recover, resume_given_up
from kling_video_mcp.tasks.submission import TASK_REFERENCE, SubmitOptions, SubmitResult, Submission, WebhookVerdict
from kling_video_mcp.tasks.watcher import Pace, Watcher

__all__ = ["TASK_REFERENCE", "SubmitOptions", "TaskService", "WebhookVerdict"]

FRESH_NEWS_SECONDS = 5.0
"""How long ``check`` waits for the watcher's next poll when asked for fresh news."""
LIST_SCAN_LIMIT = 10_000
"""Newest journal rows :meth:`TaskService.list` looks through when filtering by status."""


class TaskService:
    """Submit, watch, check and deliver tasks. Use :meth:`running` to get one with its watcher."""

    def __init__(self, settings: Settings, journal: Journal, delivery: Delivery, watcher: Watcher, submission: Submission):
        self.settings = settings
        self._journal = journal
        self._delivery = delivery
        self._watcher = watcher
        self._submission = submission
        self._adoption = Adoption(journal, submission.providers, delivery)
        self._answering = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings, client: httpx2.AsyncClient) -> AsyncIterator[TaskService]:
        """A service whose watcher runs for the life of the context. Unfinished work left by an
        earlier server (see :func:`~kling_video_mcp.tasks.recovery.recover`) is taken up in the background once it is ready."""
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This worker's name on the leases it holds (host, process id, and a nonce for this run)."""
        async with open_journal(settings) as journal:
            providers = Providers(settings, client, shared_gate=journal.rate_gate)
            delivery = Delivery(settings, journal, providers, client, worker=worker)
            try:
                async with anyio.create_task_group() as task_group:
                    watcher = Watcher(
                        task_group, delivery, journal,
                        ceiling=settings.task_ceiling_seconds, owner=worker, lease_seconds=settings.lease_seconds,
                    )  # fmt: skip
                    submission = Submission(settings, journal, providers, delivery, watcher)
                    service = cls(settings, journal, delivery, watcher, submission)
                    if journal.shared:
                        # Workers share the tasks: each takes those nobody holds, now and as leases lapse.
                        task_group.start_soon(watcher.keep_leases, name="leases")
                    task_group.start_soon(
                        recover, journal, submission, delivery, watcher, service._answering, name="start-up recovery"
                    )
                    task_group.start_soon(submission.consent.sweep, name="expire unanswered spend confirmations")
                    task_group.start_soon(submission.held.run, name="submits held for a free provider slot")
                    yield service
                    task_group.cancel_scope.cancel()
            finally:
                await providers.aclose()

    def answering(self) -> None:
        """The surface is answering a client's first request after the handshake: start-up
        recovery may begin (:func:`~kling_video_mcp.tasks.recovery.recover`)."""
        self._answering.set()

    # -- submitting -------------------------------------------------------------------

    async def dry_run(
        self, request: GenerationRequest, *, max_cost_usd: float | None, owner: str, image_dirs: Sequence[Path] | None
    ) -> tuple[float, bool]:
        """Check and price ``owner``'s request, sending nothing: its estimate in USD, and whether
        sending it would ask a person first (``KLING_MCP_CONFIRM_ABOVE_USD``).

        Raises:
            InvalidRequest, AuthError, BudgetExceeded: as :meth:`submit` would.
        """
        await self._submission.prepare(request, owner=owner, image_dirs=image_dirs)
        estimate = await self._submission.budgets.check_cost(request, max_cost_usd, owner=owner)
        return estimate, consent.needs_confirmation(self.settings, estimate)

    async def spend_question(self, request: GenerationRequest, options: SubmitOptions, *, owner: str) -> str | None:
        """What to ask the person before :meth:`submit` sends ``request``; ``None``: nothing to ask."""
        return await self._submission.question(request, options, owner=owner)

    async def submit(
        self, request: GenerationRequest, options: SubmitOptions, *, owner: str,
        consent_answer: ConsentAnswer = "not_asked", can_show_view: bool = False, image_dirs: Sequence[Path] | None = None,
    ) -> SubmitResult:
        """Submit ``owner``'s request without waiting for the render (see :meth:`Submission.submit`)."""
        return await self._submission.submit(
            request, options, owner=owner, consent_answer=consent_answer, can_show_view=can_show_view,
            image_dirs=image_dirs,
        )  # fmt: skip

    async def confirm(
        self, task_id: str, *, owner: str, image_dirs: Sequence[Path] | None = None, keep_refused: bool = False
    ) -> TaskRecord:
        """The person said yes to ``owner``'s request awaiting confirmation: send it and return it
        (a task no longer waiting is returned as it is; nothing is ever sent twice).

        ``keep_refused``: a refusal is returned as the task it left (an MCP task must not vanish under
        its client): a request the provider refuses outright stays journaled as failed with that error
        instead of being withdrawn.

        Raises:
            NotFound: no such task of ``owner``'s. Declined, KlingError: see :meth:`Submission.send_confirmed`
                (never with ``keep_refused``).
        """
        found = await self._delivery.get(task_id, owner)
        return await self._submission.send_confirmed(found, image_dirs=image_dirs, keep_refused=keep_refused)

    async def decline(self, task_id: str, *, owner: str, message: str) -> TaskRecord:
        """The person said no to ``owner``'s request awaiting confirmation: it ends as declined with
        ``message``, nothing sent (a task no longer waiting is left as it is). Returns it.

        Raises:
            NotFound: no such task of ``owner``'s.
        """
        found = await self._delivery.get(task_id, owner)
        await self._submission.consent.decline(found.task_id, message)
        return await self._delivery.get(found.task_id)

    async def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        """Stop ``owner``'s task (see :mod:`kling_video_mcp.tasks.cancellation`); returns it, cancelled.

        Raises:
            NotFound: no such task of ``owner``'s. TaskFinished: nothing is left to stop.
        """
        found = await self._delivery.get(task_id, owner)
        return await cancellation.cancel(self._journal, self._submission.providers, found)

    async def assemble(
        self, task_ids: Sequence[str], *, owner: str, transition: Transition = "cut", crossfade_seconds: float = 0.5,
        audio: AudioChoice = "keep", title: str | None = None,
    ) -> TaskRecord:
        """Journal ``owner``'s film of their finished ``task_ids`` (in playing order) and make it in
        the background; returns the running task.

        Raises:
            InvalidRequest: see :meth:`Assembler.prepare`.
        """
        assembler = self._delivery.assembler
        options = dict(transition=transition, crossfade_seconds=crossfade_seconds, audio=audio, title=title)
        record = await assembler.create(await assembler.prepare(task_ids, owner=owner, **options), owner)
        await self._watcher.watch(record.task_id)
        return record

    # -- reading ----------------------------------------------------------------------

    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord:
        """The journaled task (by our id or the provider's), of ``owner`` unless ``None`` (the
        server's own bookkeeping, or a task already found for its owner, by its own id).

        Raises:
            NotFound: no such task of ``owner``'s: the same words whether or not another has one.
        """
        return await self._delivery.get(task_id, owner)

    async def read(self, task_id: str, *, owner: str) -> TaskRecord:
        """``owner``'s task as it stands, without polling; a finished clip's missing companions are
        made again first.

        Raises:
            NotFound: see :meth:`get`.
        """
        return await self._delivery.repair(await self.get(task_id, owner))

    async def check(
        self, task_ids: list[str], *, owner: str, provider: ProviderName | None = None, mode: Mode | None = None
    ) -> list[TaskRecord]:
        """``owner``'s tasks' current records, after one fresh poll of each unfinished one.

        All are polled together, within :data:`FRESH_NEWS_SECONDS` in all, each by the worker
        that holds its lease (this one, if nobody does). A task the server gave up on
        (``gave_up``) is watched again; a submit cut off by a crash is settled as an unknown
        outcome; a finished clip's missing companions are made again. With ``provider``, one id
        that is none of ``owner``'s tasks is taken for a provider task id and adopted
        (:class:`~kling_video_mcp.tasks.adoption.Adoption`, in ``mode``, default ``KLING_MCP_MODE``).

        Raises:
            NotFound: an id is in neither the journal nor, as a provider task id, any record.
            InvalidRequest: an adopted id is not a plain token.
        """
        if provider is not None and len(task_ids) == 1 and await self._journal.get(task_ids[0], owner) is None:
            adopted = await self._adoption(task_ids[0], provider, mode or self.settings.mode, owner=owner)
            task_ids = [adopted.task_id]
        pending = []
        resumed: dict[str, str] = {}
        found = [await self.get(task_id, owner) for task_id in task_ids]
        for record in found:
            if record.kind == "assemble":
                if not record.finished:
                    await self._watcher.watch(record.task_id)  # made here: no provider to ask for news
                continue
            if record.provider_task_id is None:
                await self._submission.settle_if_orphaned(record)
                continue
            if record.gave_up:
                resumed[record.task_id] = await resume_given_up(self._journal, record)
            if not record.finished:
                await self._watcher.watch(record.task_id)
                pending.append(record.task_id)
        if pending:
            await self._watcher.wait_for_updates(pending, FRESH_NEWS_SECONDS)
        # By our own ids, the records found for owner, read again where they may have moved on (a
        # finished one has not: only repair changes it, reading it itself); missing companions made again.
        records = [
            await self._delivery.repair(record if record.finished else await self.get(record.task_id))
            for record in found
        ]
        for record in records:
            if record.task_id in resumed and not record.finished:
                # Said in this answer only (not journaled): the next check shows the task as it goes on.
                record.warnings.insert(0, resumed[record.task_id])
        return records

    async def list(self, *, owner: str, status: PublicStatus | None = None, limit: int = 20) -> list[TaskRecord]:
        """``owner``'s newest tasks, at most ``limit``, only those whose public status is ``status`` if given.

        A submit cut off by a crash shows as the unknown outcome it is at once, even before
        start-up recovery has come to it; a listed clip's missing companions are made again.
        """
        records = await self._journal.recent(None, limit if status is None else LIST_SCAN_LIMIT, owner=owner)
        for index, record in enumerate(records):
            if record.status == "queued" and record.provider_task_id is None and record.kind != "assemble":
                await self._submission.settle_if_orphaned(record)
                records[index] = await self.get(record.task_id)
        listed = [record for record in records if status in (None, record.public_status)][:limit]
        return [await self._delivery.repair(record) for record in listed]

    async def webhook(self, token: str, headers: Mapping[str, str], body: bytes) -> WebhookVerdict:
        """A provider called the webhook URL carrying ``token``: the task's watcher polls it now.

        ``headers`` and ``body`` are the call's own. A provider that signs its webhooks has the
        signature checked (:meth:`Provider.verify_webhook`); a forged or stale one is ``"refused"``
        and changes nothing. Nothing else in the call is trusted (anyone may post anything to a
        URL): the poll that follows asks the provider itself. ``"unknown"``: no task has ``token``.
        """
        return await self._submission.webhook(token, headers, body)

    def previews_folder(self, record: TaskRecord) -> Path:
        """Where the task's preview proxy lives (see :meth:`Delivery.previews_folder`)."""
        return self._delivery.previews_folder(record)

    async def preview(self, record: TaskRecord) -> Path:
        """The preview proxy of a delivered clip, made first if missing (see :meth:`Delivery.preview`)."""
        return await self._delivery.preview(record)

    # -- waiting ----------------------------------------------------------------------

    @contextmanager
    def waiting(self, task_ids: list[str]) -> Iterator[None]:
        """While inside, the tasks are polled at their provider's minimum interval: someone waits."""
        with self._watcher.waiting(task_ids):
            yield

    def next_change(self) -> anyio.Event:
        """The event set by the next save of any task, on any worker; take it *before* reading the
        records it should tell news of, then wait on it with :meth:`wait_for_change`."""
        return self._watcher.next_change()

    @staticmethod
    async def wait_for_change(change: anyio.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``change`` (from :meth:`next_change`); ``True`` if it came."""
        return await Watcher.wait_for_change(change, timeout)

    async def pacing(self, record: TaskRecord) -> Pace | None:
        """How the task is paced: its expected time and poll intervals, in seconds (for progress
        estimates and how soon to ask again, :meth:`Pace.next_poll_in`); ``None`` when its
        provider's key has been removed since, so its pace cannot be known."""
        try:
            return await self._delivery.pacing(record)
        except KlingError:
            return None
