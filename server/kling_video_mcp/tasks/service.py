"""The task service: the one entry point of the task domain for the MCP surface.

It checks a request, journals it, submits it through the provider adapter, and hands it
to the watcher, which polls until the clip is downloaded. ``check`` reads the journal
(after nudging the watcher for fresh news), so a task survives restarts and is finished
whether or not anyone asks. Assemblies (:mod:`kling_video_mcp.tasks.assembly`) are journaled
here too and made by the same watcher, through :meth:`TaskService.step`.

Every task has an owner (``tasks/owners.py``). The methods a caller reaches take the caller's
``owner`` and see only that owner's tasks: another owner's task is "not found", word for word
like one that does not exist. Duplicates and budgets are counted per owner as well.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import httpx2
from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from kling_video_mcp import pricing
from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import (
    BudgetExceeded,
    DownloadFailed,
    InvalidRequest,
    KlingError,
    NotFound,
    ProviderError,
    UnknownOutcome,
)
from kling_video_mcp.journal import Journal, open_journal, token_digest
from kling_video_mcp.media.clips import make_companions
from kling_video_mcp.media.previews import ensure_preview
from kling_video_mcp.models import (
    LOCAL_OWNER,
    Assembly,
    GenerationRequest,
    ImageSource,
    ProviderUpdate,
    TaskRecord,
    utcnow,
)
from kling_video_mcp.providers import LABELS, ProviderAdapter, Providers, Submitted
from kling_video_mcp.tasks import validation
from kling_video_mcp.tasks.addresses import AddressPolicy, Reach, provider_reach
from kling_video_mcp.tasks.assembly import Assembler
from kling_video_mcp.tasks.consent import ConsentDesk
from kling_video_mcp.tasks.downloads import (
    Downloaded,
    IncompleteDownload,
    NotAVideo,
    UrlExpired,
    adopt,
    discard_part,
    download,
    part_size,
    storage_error,
)
from kling_video_mcp.tasks.files import clip_filename, write_sidecar
from kling_video_mcp.tasks.images import frame_image, resolve_image
from kling_video_mcp.tasks.owners import owner_folder, owner_name
from kling_video_mcp.tasks.watcher import MAX_POLL_INTERVAL, Pace, Watcher

log = logging.getLogger(__name__)

TASK_REFERENCE = "task:"
DOWNLOAD_ATTEMPTS = 5
RETRIED_DOWNLOAD_ERRORS = (IncompleteDownload, UrlExpired, NotAVideo)
"""Download failures worth another attempt (resuming, or with a fresh link); any other ends it."""
ADOPTION_LOOKBACK = timedelta(days=2)
"""How old an unknown-outcome submit adoption may still link to (our bound: an orphan is looked
for within hours of the restart that reported it; the bound keeps the scan small)."""
PROVIDER_TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What a provider task id given for adoption must look like: a plain token, safe in a URL path."""
ORPHAN_AFTER = timedelta(minutes=10)
"""On a shared journal (several machines, whose submit lock files cannot be seen), a journaled
submit with no provider task id this old was cut off by a crash: a live submit answers within
``request_deadline`` plus its 429 retries. One machine tells by the submit's lock file at once."""
COMPANION_DECODERS = 2
"""Clips probed and previewed at once: each decode holds frames in memory (benchmark figure 4)."""
PERIOD_ADJECTIVES = {"day": "daily", "week": "weekly", "month": "monthly"}
FRESH_NEWS_SECONDS = 5.0
"""How long ``check`` waits for the watcher's next poll when asked for fresh news."""


def _cost_nothing(record: TaskRecord) -> bool:
    """A failed task no provider bills: refused by it as content or a provider error, or never
    sent to it (no provider task id, and not an unknown outcome, which may have reached it)."""
    if record.status != "failed":
        return False
    never_sent = record.provider_task_id is None and record.error_code != UnknownOutcome.code
    return never_sent or record.error_code in ("content_policy", "provider_error")


class TaskService:
    """Submit, watch and check tasks. Use :meth:`running` to get one with its watcher."""

    def __init__(self, settings: Settings, journal: Journal, providers: Providers, client: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This worker's name on the leases it holds (host, process id, and a nonce for this run)."""
        self.journal = journal
        self.providers = providers
        self._client = client
        self._watcher: Watcher | None = None
        self._decoders = anyio.CapacityLimiter(COMPANION_DECODERS)
        self._reach: dict[ProviderName, Reach] = {}
        self._submitting: dict[str, FileLock] = {}
        self.assembler = Assembler(settings, journal)
        self.consent = ConsentDesk(settings, journal)

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings, client: httpx2.AsyncClient) -> AsyncIterator[TaskService]:
        """A service whose watcher runs for the life of the context; resumes unfinished tasks."""
        async with open_journal(settings) as journal:
            providers = Providers(settings, client, shared_gate=journal.rate_gate)
            service = cls(settings, journal, providers, client)
            try:
                async with anyio.create_task_group() as task_group:
                    watcher = Watcher(
                        task_group, service, journal,
                        ceiling=settings.task_ceiling_seconds, owner=service.owner, lease_seconds=settings.lease_seconds,
                    )  # fmt: skip
                    service._watcher = watcher
                    for record in await journal.orphaned_submits(utcnow()):
                        await service._settle_if_orphaned(record)
                    if journal.shared:
                        # Workers share the tasks: each takes those nobody holds, now and as leases lapse.
                        task_group.start_soon(watcher.keep_leases, name="leases")
                    else:
                        for record in await journal.unfinished():
                            record.watched_since = utcnow()  # the ceiling counts from now, not from a past run
                            await journal.save(record)
                            await watcher.watch(record.task_id)
                    task_group.start_soon(service.consent.sweep, name="expire unanswered spend confirmations")
                    yield service
                    task_group.cancel_scope.cancel()
            finally:
                await providers.aclose()

    @property
    def watcher(self) -> Watcher:
        assert self._watcher is not None, "use TaskService.running()"
        return self._watcher

    # -- submitting -------------------------------------------------------------------

    async def prepare(
        self, request: GenerationRequest, *, owner: str, image_dirs: Sequence[Path] | None = None
    ) -> dict[str, ImageSource]:
        """Check everything that can be checked without sending anything; returns the images.

        ``image_dirs`` limits local image files to those folders (see :func:`resolve_image`);
        ``task:<id>`` references name ``owner``'s tasks only.
        Images are read and decoded in a worker thread (up to 10 MB each), off the event loop.

        Raises:
            InvalidRequest: a rule is broken (field and rule named).
            AuthError: the provider has no key configured.
        """
        validation.check(request)
        self.providers.require_key(request.provider)
        references = {"image": request.image, "end_image": request.end_image}
        return {field: await self._image(field, ref, image_dirs, owner) for field, ref in references.items() if ref}

    async def _image(self, field: str, reference: str, image_dirs: Sequence[Path] | None, owner: str) -> ImageSource:
        """Resolve an image reference; ``task:<id>`` (or ``task:<id>#last_frame``) is an earlier clip's last frame."""
        if not reference.startswith(TASK_REFERENCE):
            return await anyio.to_thread.run_sync(partial(resolve_image, field, reference, allowed_dirs=image_dirs))
        task_id, _, part = reference.removeprefix(TASK_REFERENCE).partition("#")
        if part not in ("", "last_frame"):
            raise InvalidRequest(f"{field}: {reference!r} names #{part}; only #last_frame is available.")
        record = await self.journal.get(task_id, owner)
        if record is not None and record.delivered and not record.last_frame_path:
            why = " ".join(record.warnings) or "it was not made"
            raise InvalidRequest(f"{field}: task {task_id!r} has its clip but no last frame ({why}); chain from another task.")
        if record is None or not record.delivered or not record.last_frame_path:
            state = "unknown" if record is None else "not finished with a clip and its last frame yet"
            raise InvalidRequest(f"{field}: task {task_id!r} is {state}; chain from a task whose clip succeeded.")
        # The last frame is the server's own file, so it is allowed whatever image_dirs says.
        return await anyio.to_thread.run_sync(frame_image, field, Path(record.last_frame_path))

    def estimate(self, request: GenerationRequest) -> float:
        """Estimated cost in USD (see :mod:`kling_video_mcp.pricing`)."""
        return pricing.estimate_usd(request.provider, request.mode, request.sound, request.duration)

    def period_start(self, now: datetime | None = None) -> datetime:
        """Start of the current budget period (calendar day, ISO week or month, in UTC)."""
        now = now or utcnow()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.settings.budget_period == "week":
            return day - timedelta(days=day.weekday())
        if self.settings.budget_period == "month":
            return day.replace(day=1)
        return day

    async def spent(self, owner: str | None) -> float:
        """Estimated USD committed in the current budget period by ``owner`` (``None``: everyone).

        Every task counts except failed ones that cost nothing: those the provider itself failed
        (failed renders are not billed, or are refunded) and those it never got (a person
        declined, or a confirmed request failed its checks before sending). Unknown outcomes
        count, since they may have been billed, and so do requests awaiting confirmation (the
        budget is held for them until they are confirmed or declined).
        """
        records = await self.journal.created_since(self.period_start(), owner)
        return round(sum(record.estimated_cost_usd or 0.0 for record in records if not _cost_nothing(record)), 2)

    async def check_cost(self, request: GenerationRequest, max_cost_usd: float | None, *, owner: str) -> float:
        """The request's estimate, if it fits the per-request cap and the budgets.

        Raises:
            BudgetExceeded: the estimate is above ``max_cost_usd`` (else ``KLING_MCP_MAX_COST_USD``),
                above what is left of ``owner``'s ``KLING_MCP_BUDGET_USD`` this period, or above
                what is left of the server's ``KLING_MCP_TOTAL_BUDGET_USD``.
        """
        estimate = self.estimate(request)
        cap = max_cost_usd if max_cost_usd is not None else self.settings.max_cost_usd
        if cap is not None and estimate > cap:
            raise BudgetExceeded(
                f"This request is estimated at ${estimate:.2f}, above the limit of ${cap:.2f}; nothing was sent. "
                "Shorten the clip, pick a cheaper mode (std < pro < 4k), or raise max_cost_usd."
            )
        whose = "the" if owner == LOCAL_OWNER else f"{owner_name(owner)}'s"
        budgets = [
            (self.settings.budget_usd, owner, f"{whose} {{}} budget (KLING_MCP_BUDGET_USD)"),
            (self.settings.total_budget_usd, None, "the server's {} budget for all users (KLING_MCP_TOTAL_BUDGET_USD)"),
        ]
        for budget, spender, name in budgets:
            if budget is None:
                continue
            left = round(budget - await self.spent(spender), 2)
            if estimate > left:
                period = f"${budget:.2f} {PERIOD_ADJECTIVES[self.settings.budget_period]}"
                raise BudgetExceeded(
                    f"This request is estimated at ${estimate:.2f} but only ${max(left, 0):.2f} of "
                    f"{name.format(period)} is left; nothing was sent."
                )
        return estimate

    async def find_duplicate(self, request: GenerationRequest, owner: str) -> TaskRecord | None:
        """``owner``'s task from an identical request within the idempotency window that may still pay off.

        A task the provider failed is not a duplicate; one with an unknown outcome is (it may
        be running and billed).
        """
        since = utcnow() - timedelta(seconds=self.settings.idempotency_window_seconds)
        record = await self.journal.same_request_since(request.fingerprint(), since, owner)
        if record is None or (record.status == "failed" and record.error_code != UnknownOutcome.code):
            return None
        return record

    async def reserve(
        self, request: GenerationRequest, adapter: ProviderAdapter, *, max_cost_usd: float | None, force_new: bool,
        owner: str,
    ) -> tuple[TaskRecord, bool]:
        """Journal a new task of ``owner``'s for ``request``, or return their identical recent one (``True``).

        The duplicate check, the cost check and the journal write happen inside one
        critical section of the journal, held by one submit at a time on every worker, so
        two concurrent calls (on one worker or several) can neither both pay for the same
        request nor both fit into the last of the budget.

        Raises:
            BudgetExceeded: see :meth:`check_cost`.
        """
        async with self.journal.exclusive("submit"):
            return await self._reserve(request, adapter, max_cost_usd=max_cost_usd, force_new=force_new, owner=owner)

    async def _reserve(
        self, request: GenerationRequest, adapter: ProviderAdapter, *, max_cost_usd: float | None, force_new: bool,
        owner: str,
    ) -> tuple[TaskRecord, bool]:
        if not force_new and (existing := await self.find_duplicate(request, owner)) is not None:
            return existing, True
        estimate = await self.check_cost(request, max_cost_usd, owner=owner)
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
            owner=owner,
            provider=request.provider,
            mode=request.mode,
            kind=request.kind,
            endpoint=adapter.endpoint(request.kind, request.mode),
            request=request,
            fingerprint=request.fingerprint(),
            estimated_cost_usd=estimate,
        )
        # Held until the submit is answered: a record without a provider task id whose lock is
        # free was cut off (the process died mid-submit; the OS released its lock).
        lock = FileLock(self._submit_lock_path(record.task_id), timeout=0)
        lock.acquire()
        self._submitting[record.task_id] = lock
        try:
            return await self.journal.save(record), False
        except BaseException:
            self.release_submit(record.task_id)  # not journaled: nothing to settle
            raise

    def _submit_lock_path(self, task_id: str) -> Path:
        folder = self.settings.state_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"submit-{task_id}.lock"

    async def send(self, record: TaskRecord, images: dict[str, ImageSource], adapter: ProviderAdapter) -> TaskRecord:
        """Submit a reserved task to its provider and start watching it.

        Raises:
            UnknownOutcome: the provider may have created a task; the record keeps the error.
            KlingError: the provider refused (nothing was created; the record is removed).
        """
        try:
            return await self._send(record, images, adapter)
        finally:
            self.release_submit(record.task_id)  # only once the answer (or the unknown outcome) is journaled

    def release_submit(self, task_id: str) -> None:
        """Drop the submit lock :meth:`reserve` took: the task is answered, or will not be sent now."""
        if (lock := self._submitting.pop(task_id, None)) is not None:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

    async def hold_for_consent(self, record: TaskRecord, *, can_show_view: bool) -> TaskRecord:
        """Park a just-reserved task for a person's yes (nothing sent), or refuse it.

        Its submit lock is released first: a parked task is not in flight, and the orphan rule
        leaves it alone (only ``queued`` records can be orphans).

        Raises:
            Declined: the client can neither ask the person nor show the view.
        """
        self.release_submit(record.task_id)
        return await self.consent.hold(record, can_show_view=can_show_view)

    async def claim_confirmed(self, task_id: str) -> TaskRecord | None:
        """Take a task the person confirmed for sending, under its submit lock (see :meth:`reserve`);
        ``None`` when it is not waiting (already sent, or being sent by another server process).

        Raises:
            Declined: it had already ended as declined.
        """
        lock = FileLock(self._submit_lock_path(task_id), timeout=0)
        try:
            lock.acquire()
        except FileLockTimeout:
            return None
        self._submitting[task_id] = lock
        record = None
        try:
            record = await self.consent.claim(task_id)
        finally:
            if record is None:  # not waiting, or declined: nothing will be sent
                self.release_submit(task_id)
        return record

    async def _send(self, record: TaskRecord, images: dict[str, ImageSource], adapter: ProviderAdapter) -> TaskRecord:
        try:
            submitted = await self._submit(record, images, adapter)
        except UnknownOutcome as exc:
            error = UnknownOutcome(self._unknown_outcome_advice(exc.message, record), task_id=record.task_id)
            await self.record_error(record.task_id, error, final=True)
            raise error from exc
        except KlingError:
            await self.journal.delete(record.task_id)
            raise
        except BaseException:
            # Cancelled or crashed mid-submit: it may have been sent, and the record says so.
            advice = self._unknown_outcome_advice("The submit was interrupted before an answer came.", record)
            with anyio.CancelScope(shield=True):
                await self.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)
            raise
        record.provider_task_id = submitted.provider_task_id
        record.provider_requests += 1
        record.notes.extend(submitted.notes)
        record.watched_since = utcnow()
        await self.journal.save(record)
        await self.watcher.watch(record.task_id)
        log.info("task %s (user %s): submitted to %s", record.task_id, record.owner, record.provider)
        return record

    async def _submit(self, record: TaskRecord, images: dict[str, ImageSource], adapter: ProviderAdapter) -> Submitted:
        """The submit, with a webhook URL when webhooks are on.

        A provider may refuse our webhook URL (WaveSpeed documents a public HTTPS one, providers.md
        §3.8; whether it checks is unknown). A refusal creates nothing, so the request is sent
        once more without it, and the task is polled as usual.
        """
        webhook_url = await self._webhook_url(record)
        if webhook_url is None:
            return await adapter.submit(record.request, images)
        try:
            return await adapter.submit(record.request, images, webhook_url=webhook_url)
        except InvalidRequest:
            # Not the provider's words in the log: they may quote the URL, whose token is a credential.
            log.warning("task %s: %s refused the submit with a webhook; sending it without", record.task_id, adapter.label)
            record.webhook_token_sha256 = None
            record.notes.append(f"{adapter.label} refused the webhook URL, so this task is polled instead.")
            await self.journal.save(record)
            return await adapter.submit(record.request, images)

    async def _webhook_url(self, record: TaskRecord) -> str | None:
        """A fresh webhook URL for ``record`` when webhooks are on, its token's digest journaled first.

        The token (256 random bits) is the URL's only credential: the journal keeps its sha256,
        so the receiver can find the task, and nothing keeps or logs the token itself.
        """
        if (base := self.settings.webhook_base_url) is None:
            return None
        token = secrets.token_urlsafe(32)
        record.webhook_token_sha256 = token_digest(token)
        await self.journal.save(record)  # before the submit: the provider may call back at once
        return f"{base}/{token}"

    @staticmethod
    def _unknown_outcome_advice(what_happened: str, record: TaskRecord) -> str:
        label = LABELS[record.provider]
        return (
            f"{what_happened} It was not re-sent, to avoid paying twice. If it went through, it costs about "
            f"${record.estimated_cost_usd or 0:.2f}. To check: look for a new task in your {label} dashboard; if "
            f"there is one, call check_task with its task id and provider='{record.provider}', mode='{record.mode}'. "
            "Repeating this request returns this record; pass force_new=true only once you know nothing was created."
        )

    async def start_assembly(self, assembly: Assembly, *, owner: str) -> TaskRecord:
        """Journal ``owner``'s assembly checked by ``assembler.prepare`` and make it in the background."""
        record = await self.assembler.create(assembly, owner)
        await self.watcher.watch(record.task_id)
        return record

    # -- checking ---------------------------------------------------------------------

    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord:
        """The journaled task (by our id or the provider's), of ``owner`` unless ``None``
        (the server's own bookkeeping, or a task already found for its owner).

        Raises:
            NotFound: no such task of ``owner``'s: the same words whether or not another has one.
        """
        record = await self.journal.get(task_id, owner)
        if record is None:
            raise NotFound(
                f"No task {task_id!r} in this server's journal. If it was submitted elsewhere, "
                "call check_task again with its provider and mode to recover it."
            )
        return record

    async def check(self, task_ids: list[str], *, owner: str) -> list[TaskRecord]:
        """``owner``'s tasks' current records, after one fresh poll of each unfinished one.

        All are polled together, within :data:`FRESH_NEWS_SECONDS` in all, each by the worker
        that holds its lease (this one, if nobody does). A task the server gave up on
        (``gave_up``) is watched again; a submit cut off by a crash is settled as an unknown outcome.

        Raises:
            NotFound: an id is in neither the journal nor, as a provider task id, any record.
        """
        pending = []
        resumed: dict[str, str] = {}
        found = [await self.get(task_id, owner) for task_id in task_ids]
        for record in found:
            if record.kind == "assemble":
                if not record.finished:
                    await self.watcher.watch(record.task_id)  # made here: no provider to ask for news
                continue
            if record.provider_task_id is None:
                await self._settle_if_orphaned(record)
                continue
            if record.gave_up:
                stopped = (record.error_code or "an error").replace("_", " ")
                resumed[record.task_id] = (
                    f"This task had stopped ({stopped}): {record.error_message} "
                    "Checking it resumed watching; call check_task again in a while."
                )
                record.gave_up = False
                record.status = "running" if record.status == "failed" else record.status
                record.error_code = record.error_message = None
                record.watched_since = utcnow()
                await self.journal.save(record)
            if not record.finished:
                await self.watcher.watch(record.task_id)
                pending.append(record.task_id)
        if pending:
            await self.watcher.wait_for_updates(pending, FRESH_NEWS_SECONDS)
        records = [await self.get(record.task_id) for record in found]  # by our ids: the ones found for owner
        for record in records:
            if record.task_id in resumed and not record.finished:
                # Said in this answer only (not journaled): the next check shows the task as it goes on.
                record.warnings.insert(0, resumed[record.task_id])
        return records

    async def webhook(self, token: str) -> bool:
        """A provider called the webhook URL carrying ``token``: the task's watcher polls it now.

        Nothing in the call is trusted (anyone may post anything to a URL): the poll that
        follows asks the provider itself. Returns ``False`` for a token no task has.
        """
        record = await self.journal.find_webhook(token)
        if record is None:
            return False
        if not record.finished:
            await self.watcher.nudge(record.task_id)
        return True

    async def _settle_if_orphaned(self, record: TaskRecord) -> None:
        """Settle a journaled submit that never got an answer, if nobody is still sending it.

        Its outcome is unknown: the provider may have made (and billed) a task. No provider
        lists its tasks, so the record asks the user to look in the dashboard, and adopting the
        task found there (``check_task`` with its id, ``provider`` and ``mode``) links it back
        to this record (see :meth:`recover`).
        """
        if record.status != "queued" or record.task_id in self._submitting:
            return  # settled already, or a request parked for a person's confirmation (nothing sent)
        if self.journal.shared:
            # Another worker, perhaps on another machine, may be sending it: its lock file is not
            # here to see. A live submit is answered well within ORPHAN_AFTER.
            if record.created_at > utcnow() - ORPHAN_AFTER:
                return
        else:
            lock_path = self._submit_lock_path(record.task_id)
            try:
                with FileLock(lock_path, timeout=0):
                    pass
            except FileLockTimeout:
                return  # another server process on this journal is sending it right now
            lock_path.unlink(missing_ok=True)
        advice = self._unknown_outcome_advice("The server stopped while this submit was in flight.", record)
        await self.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)

    async def recover(self, provider_task_id: str, provider: ProviderName, mode: Mode, *, owner: str) -> TaskRecord:
        """Start tracking a task submitted elsewhere, from its provider task id, as ``owner``'s.

        A submit of this server whose outcome is unknown (cut off by a crash or a timeout) on
        the same provider and mode, and the only such one, is taken to be that task: the found
        task is linked to it instead of making a new record.

        Raises:
            InvalidRequest: ``provider_task_id`` is not a plain token (``[A-Za-z0-9_.-]{1,128}``).
            NotFound: the provider does not know the task, or it is another owner's task here
                (same words, and the provider is asked all the same, so not even the time differs).
        """
        if not PROVIDER_TASK_ID.fullmatch(provider_task_id):
            raise InvalidRequest(
                "task_id: a provider task id is a plain token of letters, digits, '_', '.' and '-' "
                "(at most 128); nothing was sent."
            )
        existing = await self.journal.find_provider_task(provider, provider_task_id)
        if existing is not None and existing.owner == owner:
            return (await self.check([existing.task_id], owner=owner))[0]
        adapter = await self.providers.get(provider)
        not_found = NotFound(
            f"No task {provider_task_id!r} among your tasks, and {adapter.label} does not know it under that "
            "id for this mode. Check the task id, provider and mode."
        )
        try:
            update = await adapter.fetch(provider_task_id, adapter.endpoint("t2v", mode))
        except NotFound as exc:
            raise not_found from exc
        if existing is not None:
            raise not_found
        if (orphan := await self._lone_unknown_submit(provider, mode, owner)) is not None:
            orphan.provider_task_id = provider_task_id
            orphan.provider_requests += 1
            orphan.gave_up = False
            orphan.finished_at = None
            orphan.notes.append("Found at the provider after its submit's outcome was unknown, and adopted.")
            self._apply(orphan, update)
            orphan.watched_since = utcnow()
            await self.journal.save(orphan)
            return (await self.check([orphan.task_id], owner=owner))[0]
        request = GenerationRequest(provider=provider, mode=mode, kind="t2v")
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
            owner=owner,
            provider=provider,
            mode=mode,
            kind="t2v",
            endpoint=adapter.endpoint("t2v", mode),
            request=request,
            fingerprint=f"recovered:{provider}:{provider_task_id}",
            provider_task_id=provider_task_id,
            provider_requests=1,
            notes=["Recovered from a provider task id; its parameters are unknown to this server."],
        )
        self._apply(record, update)
        record.watched_since = utcnow()
        await self.journal.save(record)
        log.info("task %s (user %s): adopted %s task %s", record.task_id, owner, provider, provider_task_id)
        return (await self.check([record.task_id], owner=owner))[0]

    async def _lone_unknown_submit(self, provider: ProviderName, mode: Mode, owner: str) -> TaskRecord | None:
        """``owner``'s one unknown-outcome submit without a provider task id for ``provider`` and ``mode``."""
        candidates = [
            record
            for record in await self.journal.created_since(utcnow() - ADOPTION_LOOKBACK, owner)
            if record.provider == provider and record.mode == mode and record.provider_task_id is None
            and record.error_code == UnknownOutcome.code
        ]  # fmt: skip
        return candidates[0] if len(candidates) == 1 else None

    # -- the watcher's side -----------------------------------------------------------

    async def pacing(self, record: TaskRecord) -> Pace:
        """How to pace polls of ``record``, every duration scaled by ``poll_time_scale``."""
        if record.kind == "assemble":
            return self.assembler.pace(record)
        adapter = await self.providers.get(record.provider)
        scale = self.settings.poll_time_scale
        return Pace(
            expected_seconds=adapter.expected_render_seconds(record.request) * scale,
            min_interval=adapter.min_poll_interval * scale,
            max_interval=MAX_POLL_INTERVAL * scale,
            time_scale=scale,
            webhook=record.webhook_expected,
        )

    async def record_error(self, task_id: str, error: KlingError, *, final: bool) -> TaskRecord:
        """Save ``error`` on the task: as its failure if ``final``, else as a passing note.

        A final error here is always the server giving up (the provider reports its own task
        failures through polls), so checking the task again resumes watching it, if there is a
        provider task to watch.
        """
        record = await self.get(task_id)
        if final:
            record.status = "failed"
            record.finished_at = utcnow()
            record.gave_up = record.provider_task_id is not None
        record.error_code = error.code
        record.error_message = error.message
        return await self.journal.save(record)

    async def step(self, task_id: str) -> TaskRecord:
        """Poll the provider once and, when the render is done, download the clip.

        Only the task's own watch loop calls this, in the worker holding the task's lease.
        Another server process on an embedded journal (``--stateless`` workers on one machine)
        may move the task on meanwhile, so a poll's news is saved only over the record it
        started from.
        """
        record = await self.get(task_id)
        if record.finished:
            return record  # finished elsewhere meanwhile (cancelled through MCP tasks): nothing to poll
        if record.kind == "assemble":
            made = await self.assembler.make(record)  # made in one step, here
            if made.delivered:
                await self._prepare_preview(made)
            return made
        adapter = await self.providers.get(record.provider)
        if record.status != "succeeded":
            assert record.provider_task_id is not None
            update = await adapter.fetch(record.provider_task_id, record.endpoint)
            if (latest := await self.get(task_id)).updated_at != record.updated_at:
                return latest  # moved on elsewhere meanwhile: its news is newer
            record.provider_requests += 1
            self._apply(record, update)
            await self.journal.save(record)
        if record.status == "succeeded" and not record.delivered:
            await self._deliver(record, adapter)
        return await self.get(task_id)

    @staticmethod
    def _apply(record: TaskRecord, update: ProviderUpdate) -> None:
        record.status = update.status
        record.progress_percent = update.progress_percent
        record.eta_seconds = update.eta_seconds
        if update.status == "running" and record.running_since is None:
            record.running_since = utcnow()
        record.error_code, record.error_message = update.error_code, update.error
        if update.video_url:
            record.video_url = update.video_url
            record.url_expires_at = update.url_expires_at
        if record.is_terminal and record.finished_at is None:
            record.finished_at = utcnow()

    async def _fresh_url(self, record: TaskRecord, adapter: ProviderAdapter) -> None:
        """Ask the provider again for the result URL (the old one was refused).

        The answer may be the same URL (a stable CDN link refused for a moment); only a
        missing one means the provider has no link to give.
        """
        assert record.provider_task_id is not None
        update = await adapter.fetch(record.provider_task_id, record.endpoint)
        record.provider_requests += 1
        if not update.video_url:
            raise ProviderError(
                f"The clip's download link expired and {adapter.label} gave no fresh one; "
                "the provider may have deleted the clip.",
            )
        self._apply(record, update)
        await self.journal.save(record)

    @asynccontextmanager
    async def _downloading(self, task_id: str) -> AsyncIterator[bool]:
        """Whether this process may download the task's clip now, held for the download.

        On a shared journal the task's lease is the right to download (only its holder
        steps the task). On the embedded one, processes on one machine share the output
        folder, and a lock file beside the journal keeps two of them off one clip.
        """
        if self.journal.shared:
            yield await self.journal.take_lease(task_id, self.owner, self.settings.lease_seconds)
            return
        lock = FileLock(self.settings.state_dir / "locks" / f"{task_id}.lock", timeout=0)
        try:
            lock.acquire()
        except FileLockTimeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    async def _deliver(self, record: TaskRecord, adapter: ProviderAdapter) -> None:
        """Download the clip, unless another server process on this state folder is already at it."""
        if not record.video_url:
            raise ProviderError(f"{adapter.label} reported success but gave no video URL.", retryable=True)
        async with self._downloading(record.task_id) as mine:
            if not mine:
                log.info("task %s (user %s): another server process is downloading the clip", record.task_id, record.owner)
                return
            if (await self.get(record.task_id)).delivered:
                return  # another process finished it while we polled
            result = await self._download(record, adapter)
            # Journal the clip the moment it is in place: previews are extras, the clip is not.
            record.file_path = str(result.path)
            record.sha256 = result.sha256
            record.size_bytes = result.size_bytes
            record.error_code = record.error_message = None  # the download's passing troubles are over
            await self.journal.save(record)
        log.info(
            "task %s (user %s): clip saved to %s (%d bytes)", record.task_id, record.owner, result.path, result.size_bytes
        )
        companions = await anyio.to_thread.run_sync(make_companions, result.path, result.facts, limiter=self._decoders)
        record.clip_facts = companions.facts
        record.contact_sheet_path = str(companions.contact_sheet) if companions.contact_sheet else None
        record.last_frame_path = str(companions.last_frame) if companions.last_frame else None
        record.warnings.extend(companions.warnings)
        try:
            record.sidecar_path = str(await anyio.to_thread.run_sync(write_sidecar, record, result.path))
        except OSError as exc:
            record.warnings.append(f"The sidecar {result.path.name}.json could not be written ({exc.strerror or exc}).")
        await self.journal.save(record)
        await self._prepare_preview(record)

    async def _prepare_preview(self, record: TaskRecord) -> None:
        """Make the preview now, so it is ready before anyone opens the screening room."""
        try:
            await self.preview(record)
        except Exception as exc:  # PyAV raises many types; the view makes it again on demand
            log.warning("task %s: no preview proxy (%s: %s)", record.task_id, type(exc).__name__, exc)

    def previews_folder(self, record: TaskRecord) -> Path:
        """Where the task's preview proxy lives: its owner's subfolder of ``previews_dir``."""
        return self.settings.previews_dir / owner_folder(record.owner)

    async def preview(self, record: TaskRecord) -> Path:
        """The preview proxy of a delivered clip (at most 480p; :mod:`kling_video_mcp.media.previews`),
        made first if it is missing. Blocks a worker thread, at most :data:`COMPANION_DECODERS` at once.

        Raises:
            NotFound: the task has no clip on disk. av.error.FFmpegError: the clip cannot be read.
        """
        if not record.delivered or record.file_path is None or not Path(record.file_path).is_file():
            raise NotFound(f"Task {record.task_id!r} has no finished clip on disk to preview.", task_id=record.task_id)
        clip = Path(record.file_path)
        return await anyio.to_thread.run_sync(
            ensure_preview, clip, self.previews_folder(record), record.task_id, limiter=self._decoders
        )

    async def _download(self, record: TaskRecord, adapter: ProviderAdapter) -> Downloaded:
        """The clip on disk, verified, after up to :data:`DOWNLOAD_ATTEMPTS` attempts.

        Each failed attempt is journaled on the task (``check_task`` shows it as a warning
        while the task runs). Whatever ends the download removes its part file.

        Raises:
            DownloadFailed: the attempts ran out, or the link cannot be used (address, size).
            StorageError: the clip could not be written here (disk, folder).
            KlingError: the provider could not give a fresh link.
        """
        # Each owner's clips in their own folder, so no file name there carries another's prompt.
        destination = Path(self.settings.output_dir) / owner_folder(record.owner) / clip_filename(record)
        try:
            if destination.is_file() and not destination.with_name(destination.name + ".part").exists():
                # Renamed into place (so complete and verified) before a crash kept it off the journal.
                return await anyio.to_thread.run_sync(adopt, destination)
            return await self._download_attempts(record, adapter, destination)
        except OSError as exc:
            error = storage_error(exc, destination.parent)
        except IncompleteDownload as exc:
            error = DownloadFailed(
                f"The render finished, but the clip's transfer kept failing, {DOWNLOAD_ATTEMPTS} times without "
                f"progress (last: {exc.message}): the storage server is unreachable, or declares a wrong "
                "Content-Length. Call check_task again to retry; if it keeps failing, download the clip from "
                f"{adapter.label}'s dashboard."
            )
        except (UrlExpired, NotAVideo) as exc:
            error = DownloadFailed(
                f"The render finished, but {adapter.label}'s download links kept failing ({exc.message}) even after "
                f"asking for fresh ones {DOWNLOAD_ATTEMPTS - 1} times. The clip may be gone; its last link is the "
                "task's provider_video_url (kept out of this message: such links carry signatures that logs must "
                "not). Call check_task again to retry."
            )
        except KlingError as exc:
            error = exc
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(discard_part, destination)
        raise error

    async def _download_attempts(self, record: TaskRecord, adapter: ProviderAdapter, destination: Path) -> Downloaded:
        """Attempt the download until it works or :data:`DOWNLOAD_ATTEMPTS` attempts in a row got
        nowhere. Progress is a part file longer than ever before: a large clip on a poor line may
        need many resumed attempts, while a server whose declared length is wrong sends the same
        bytes again and again."""
        # A link past its expiry, or one that failed, is asked for again before the next try:
        # it may have expired, or (after a restart) point at a sandbox server that is gone.
        stale = record.url_expires_at is not None and record.url_expires_at <= utcnow()
        policy = AddressPolicy(await self._download_reach(record.provider))
        fruitless = 0
        furthest = part_size(destination)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RETRIED_DOWNLOAD_ERRORS),
            stop=lambda _state: fruitless >= DOWNLOAD_ATTEMPTS,
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
            reraise=True,
        ):
            with attempt:
                if stale:
                    await self._fresh_url(record, adapter)
                assert record.video_url is not None
                try:
                    return await download(
                        self._client,
                        record.video_url,
                        destination,
                        deadline=self.settings.download_deadline,
                        policy=policy,
                        max_bytes=self.settings.max_clip_bytes,
                    )
                except RETRIED_DOWNLOAD_ERRORS as exc:
                    resumable = isinstance(exc, IncompleteDownload)
                    reached = part_size(destination)
                    fruitless = 0 if resumable and reached > furthest else fruitless + 1
                    furthest = max(furthest, reached)
                    stale = True  # a fresh link resumes the part file just as well, and the old one may be gone
                    # Shown by check_task while the task runs: the cause, not only "downloading".
                    record.error_code = exc.code
                    record.error_message = f"A download attempt failed; the server tries again by itself. {exc.message}"
                    await self.journal.save(record)
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _download_reach(self, provider: ProviderName) -> Reach:
        """Which addresses this provider's clip links may reach (its base URL is resolved once)."""
        if provider == "sandbox":
            return "local"  # the server's own embedded emulator, on loopback
        if provider not in self._reach:
            base_url = self.settings.base_url(provider)
            setting = self.settings.allow_private_downloads
            self._reach[provider] = await anyio.to_thread.run_sync(provider_reach, base_url, setting)
        return self._reach[provider]
