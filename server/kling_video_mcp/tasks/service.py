"""The task service: the one entry point of the task domain for the MCP surface.

It checks a request, journals it, submits it through the provider adapter, and hands it
to the watcher, which polls until the clip is downloaded. ``check`` reads the journal
(after nudging the watcher for fresh news), so a task survives restarts and is finished
whether or not anyone asks.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
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
from kling_video_mcp.models import GenerationRequest, ImageSource, ProviderUpdate, TaskRecord, utcnow
from kling_video_mcp.providers import LABELS, ProviderAdapter, Providers
from kling_video_mcp.tasks import validation
from kling_video_mcp.tasks.addresses import AddressPolicy, Reach, provider_reach
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
from kling_video_mcp.tasks.images import frame_image, resolve_image
from kling_video_mcp.tasks.journal import Journal
from kling_video_mcp.tasks.files import clip_filename, write_sidecar
from kling_video_mcp.tasks.media import make_companions
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
COMPANION_DECODERS = 2
"""Clips probed and previewed at once: each decode holds frames in memory (benchmark figure 4)."""
FRESH_NEWS_SECONDS = 5.0
"""How long ``check`` waits for the watcher's next poll when asked for fresh news."""


class TaskService:
    """Submit, watch and check tasks. Use :meth:`running` to get one with its watcher."""

    def __init__(self, settings: Settings, journal: Journal, providers: Providers, client: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.journal = journal
        self.providers = providers
        self._client = client
        self._watcher: Watcher | None = None
        self._decoders = anyio.CapacityLimiter(COMPANION_DECODERS)
        self._reach: dict[ProviderName, Reach] = {}
        self._submitting: dict[str, FileLock] = {}

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings, client: httpx2.AsyncClient) -> AsyncIterator[TaskService]:
        """A service whose watcher runs for the life of the context; resumes unfinished tasks."""
        journal = Journal(settings.journal_path)
        providers = Providers(settings, client)
        service = cls(settings, journal, providers, client)
        try:
            async with anyio.create_task_group() as task_group:
                service._watcher = Watcher(task_group, service, ceiling=settings.task_ceiling_seconds)
                for record in journal.orphaned_submits(utcnow()):
                    service._settle_if_orphaned(record)
                for record in journal.unfinished():
                    record.watched_since = utcnow()  # the ceiling counts from now, not from a past run
                    journal.save(record)
                    service._watcher.watch(record.task_id)
                yield service
                task_group.cancel_scope.cancel()
        finally:
            await providers.aclose()
            journal.close()

    @property
    def watcher(self) -> Watcher:
        assert self._watcher is not None, "use TaskService.running()"
        return self._watcher

    # -- submitting -------------------------------------------------------------------

    def prepare(self, request: GenerationRequest, *, image_dirs: Sequence[Path] | None = None) -> dict[str, ImageSource]:
        """Check everything that can be checked without sending anything; returns the images.

        ``image_dirs`` limits local image files to those folders (see :func:`resolve_image`).

        Raises:
            InvalidRequest: a rule is broken (field and rule named).
            AuthError: the provider has no key configured.
        """
        validation.check(request)
        self.providers.require_key(request.provider)
        references = {"image": request.image, "end_image": request.end_image}
        return {field: self._image(field, ref, image_dirs) for field, ref in references.items() if ref}

    def _image(self, field: str, reference: str, image_dirs: Sequence[Path] | None) -> ImageSource:
        """Resolve an image reference; ``task:<id>`` (or ``task:<id>#last_frame``) is an earlier clip's last frame."""
        if not reference.startswith(TASK_REFERENCE):
            return resolve_image(field, reference, allowed_dirs=image_dirs)
        task_id, _, part = reference.removeprefix(TASK_REFERENCE).partition("#")
        if part not in ("", "last_frame"):
            raise InvalidRequest(f"{field}: {reference!r} names #{part}; only #last_frame is available.")
        record = self.journal.get(task_id)
        if record is not None and record.delivered and not record.last_frame_path:
            why = " ".join(record.warnings) or "it was not made"
            raise InvalidRequest(f"{field}: task {task_id!r} has its clip but no last frame ({why}); chain from another task.")
        if record is None or not record.delivered or not record.last_frame_path:
            state = "unknown" if record is None else "not finished with a clip and its last frame yet"
            raise InvalidRequest(f"{field}: task {task_id!r} is {state}; chain from a task whose clip succeeded.")
        # The last frame is the server's own file, so it is allowed whatever image_dirs says.
        return frame_image(field, Path(record.last_frame_path))

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

    def spent(self) -> float:
        """Estimated USD committed in the current budget period.

        Every task counts except those the provider itself failed (failed renders are not
        billed, or are refunded); unknown outcomes count, since they may have been billed.
        """
        return round(
            sum(
                record.estimated_cost_usd or 0.0
                for record in self.journal.created_since(self.period_start())
                if not (record.status == "failed" and record.error_code in ("content_policy", "provider_error"))
            ),
            2,
        )

    def check_cost(self, request: GenerationRequest, max_cost_usd: float | None) -> float:
        """The request's estimate, if it fits the per-request cap and the budget.

        Raises:
            BudgetExceeded: the estimate is above ``max_cost_usd`` (else ``KLING_MCP_MAX_COST_USD``)
                or above what is left of ``KLING_MCP_BUDGET_USD`` this period.
        """
        estimate = self.estimate(request)
        cap = max_cost_usd if max_cost_usd is not None else self.settings.max_cost_usd
        if cap is not None and estimate > cap:
            raise BudgetExceeded(
                f"This request is estimated at ${estimate:.2f}, above the limit of ${cap:.2f}; nothing was sent. "
                "Shorten the clip, pick a cheaper mode (std < pro < 4k), or raise max_cost_usd."
            )
        if self.settings.budget_usd is not None:
            left = round(self.settings.budget_usd - self.spent(), 2)
            if estimate > left:
                raise BudgetExceeded(
                    f"This request is estimated at ${estimate:.2f} but only ${max(left, 0):.2f} of the "
                    f"${self.settings.budget_usd:.2f} {self.settings.budget_period}ly budget (KLING_MCP_BUDGET_USD) "
                    "is left; nothing was sent."
                )
        return estimate

    def find_duplicate(self, request: GenerationRequest) -> TaskRecord | None:
        """A task from an identical request within the idempotency window that may still pay off.

        A task the provider failed is not a duplicate; one with an unknown outcome is (it may
        be running and billed).
        """
        since = utcnow() - timedelta(seconds=self.settings.idempotency_window_seconds)
        record = self.journal.same_request_since(request.fingerprint(), since)
        if record is None or (record.status == "failed" and record.error_code != UnknownOutcome.code):
            return None
        return record

    def reserve(
        self, request: GenerationRequest, adapter: ProviderAdapter, *, max_cost_usd: float | None, force_new: bool
    ) -> tuple[TaskRecord, bool]:
        """Journal a new task for ``request``, or return the identical recent one (``True``).

        Deliberately synchronous: the duplicate check, the cost check and the journal write
        happen with no await between them, so two concurrent calls can neither both pay for
        the same request nor both fit into the last of the budget.

        Raises:
            BudgetExceeded: see :meth:`check_cost`.
        """
        if not force_new and (existing := self.find_duplicate(request)) is not None:
            return existing, True
        estimate = self.check_cost(request, max_cost_usd)
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
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
        return self.journal.save(record), False

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
            # Released only once the answer (or the unknown outcome) is journaled.
            if (lock := self._submitting.pop(record.task_id, None)) is not None:
                lock.release()
                Path(lock.lock_file).unlink(missing_ok=True)

    async def _send(self, record: TaskRecord, images: dict[str, ImageSource], adapter: ProviderAdapter) -> TaskRecord:
        try:
            submitted = await adapter.submit(record.request, images)
        except UnknownOutcome as exc:
            error = UnknownOutcome(self._unknown_outcome_advice(exc.message, record), task_id=record.task_id)
            self.record_error(record.task_id, error, final=True)
            raise error from exc
        except KlingError:
            self.journal.delete(record.task_id)
            raise
        except BaseException:
            # Cancelled or crashed mid-submit: it may have been sent, and the record says so.
            advice = self._unknown_outcome_advice("The submit was interrupted before an answer came.", record)
            self.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)
            raise
        record.provider_task_id = submitted.provider_task_id
        record.provider_requests += 1
        record.notes.extend(submitted.notes)
        record.watched_since = utcnow()
        self.journal.save(record)
        self.watcher.watch(record.task_id)
        return record

    @staticmethod
    def _unknown_outcome_advice(what_happened: str, record: TaskRecord) -> str:
        label = LABELS[record.provider]
        return (
            f"{what_happened} It was not re-sent, to avoid paying twice. If it went through, it costs about "
            f"${record.estimated_cost_usd or 0:.2f}. To check: look for a new task in your {label} dashboard; if "
            f"there is one, call check_task with its task id and provider='{record.provider}', mode='{record.mode}'. "
            "Repeating this request returns this record; pass force_new=true only once you know nothing was created."
        )

    # -- checking ---------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """The journaled task (by our id or the provider's). Raises :class:`NotFound`."""
        record = self.journal.get(task_id)
        if record is None:
            raise NotFound(
                f"No task {task_id!r} in this server's journal. If it was submitted elsewhere, "
                "call check_task again with its provider and mode to recover it."
            )
        return record

    async def check(self, task_ids: list[str]) -> list[TaskRecord]:
        """The tasks' current records, after one fresh poll of each unfinished one.

        All are polled together, within :data:`FRESH_NEWS_SECONDS` in all. A task the server
        gave up on (``gave_up``) is watched again; a submit cut off by a crash is settled as an
        unknown outcome.

        Raises:
            NotFound: an id is in neither the journal nor, as a provider task id, any record.
        """
        pending = []
        resumed: dict[str, str] = {}
        for record in [self.get(task_id) for task_id in task_ids]:
            if record.provider_task_id is None:
                self._settle_if_orphaned(record)
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
                self.journal.save(record)
            if not record.finished:
                self.watcher.watch(record.task_id)
                pending.append(record.task_id)
        if pending:
            await self.watcher.wait_for_updates(pending, FRESH_NEWS_SECONDS)
        records = [self.get(task_id) for task_id in task_ids]
        for record in records:
            if record.task_id in resumed and not record.finished:
                # Said in this answer only (not journaled): the next check shows the task as it goes on.
                record.warnings.insert(0, resumed[record.task_id])
        return records

    def _settle_if_orphaned(self, record: TaskRecord) -> None:
        """Settle a journaled submit that never got an answer, if nobody is still sending it.

        Its outcome is unknown: the provider may have made (and billed) a task. No provider
        lists its tasks, so the record asks the user to look in the dashboard, and adopting the
        task found there (``check_task`` with its id, ``provider`` and ``mode``) links it back
        to this record (see :meth:`recover`).
        """
        if record.status == "failed" or record.task_id in self._submitting:
            return
        lock_path = self._submit_lock_path(record.task_id)
        try:
            with FileLock(lock_path, timeout=0):
                pass
        except FileLockTimeout:
            return  # another server process on this journal is sending it right now
        lock_path.unlink(missing_ok=True)
        advice = self._unknown_outcome_advice("The server stopped while this submit was in flight.", record)
        self.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)

    async def recover(self, provider_task_id: str, provider: ProviderName, mode: Mode) -> TaskRecord:
        """Start tracking a task submitted elsewhere, from its provider task id.

        A submit of this server whose outcome is unknown (cut off by a crash or a timeout) on
        the same provider and mode, and the only such one, is taken to be that task: the found
        task is linked to it instead of making a new record.

        Raises:
            InvalidRequest: ``provider_task_id`` is not a plain token (``[A-Za-z0-9_.-]{1,128}``).
            NotFound: the provider does not know the task.
        """
        if not PROVIDER_TASK_ID.fullmatch(provider_task_id):
            raise InvalidRequest(
                "task_id: a provider task id is a plain token of letters, digits, '_', '.' and '-' "
                "(at most 128); nothing was sent."
            )
        if existing := self.journal.find_provider_task(provider, provider_task_id):
            return (await self.check([existing.task_id]))[0]
        adapter = await self.providers.get(provider)
        update = await adapter.fetch(provider_task_id, adapter.endpoint("t2v", mode))
        if (orphan := self._lone_unknown_submit(provider, mode)) is not None:
            orphan.provider_task_id = provider_task_id
            orphan.provider_requests += 1
            orphan.gave_up = False
            orphan.finished_at = None
            orphan.notes.append("Found at the provider after its submit's outcome was unknown, and adopted.")
            self._apply(orphan, update)
            orphan.watched_since = utcnow()
            self.journal.save(orphan)
            return (await self.check([orphan.task_id]))[0]
        request = GenerationRequest(provider=provider, mode=mode, kind="t2v")
        record = TaskRecord(
            task_id=uuid.uuid4().hex,
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
        self.journal.save(record)
        return (await self.check([record.task_id]))[0]

    def _lone_unknown_submit(self, provider: ProviderName, mode: Mode) -> TaskRecord | None:
        """The one unknown-outcome submit without a provider task id for ``provider`` and ``mode``."""
        candidates = [
            record
            for record in self.journal.created_since(utcnow() - ADOPTION_LOOKBACK)
            if record.provider == provider and record.mode == mode and record.provider_task_id is None
            and record.error_code == UnknownOutcome.code
        ]  # fmt: skip
        return candidates[0] if len(candidates) == 1 else None

    # -- the watcher's side -----------------------------------------------------------

    async def pacing(self, record: TaskRecord) -> Pace:
        """How to pace polls of ``record``, every duration scaled by ``poll_time_scale``."""
        adapter = await self.providers.get(record.provider)
        scale = self.settings.poll_time_scale
        return Pace(
            expected_seconds=adapter.expected_render_seconds(record.request) * scale,
            min_interval=adapter.min_poll_interval * scale,
            max_interval=MAX_POLL_INTERVAL * scale,
            time_scale=scale,
        )

    def record_error(self, task_id: str, error: KlingError, *, final: bool) -> TaskRecord:
        """Save ``error`` on the task: as its failure if ``final``, else as a passing note.

        A final error here is always the server giving up (the provider reports its own task
        failures through polls), so checking the task again resumes watching it, if there is a
        provider task to watch.
        """
        record = self.get(task_id)
        if final:
            record.status = "failed"
            record.finished_at = utcnow()
            record.gave_up = record.provider_task_id is not None
        record.error_code = error.code
        record.error_message = error.message
        return self.journal.save(record)

    async def step(self, task_id: str) -> TaskRecord:
        """Poll the provider once and, when the render is done, download the clip.

        Only the task's own watch loop in this process calls this. Another server process on
        the same journal (``--stateless`` workers) may move the task on meanwhile, so a poll's
        news is saved only over the record it started from.
        """
        record = self.get(task_id)
        adapter = await self.providers.get(record.provider)
        if record.status != "succeeded":
            assert record.provider_task_id is not None
            update = await adapter.fetch(record.provider_task_id, record.endpoint)
            if self.get(task_id).updated_at != record.updated_at:
                return self.get(task_id)  # moved on elsewhere meanwhile: its news is newer
            record.provider_requests += 1
            self._apply(record, update)
            self.journal.save(record)
        if record.status == "succeeded" and not record.delivered:
            await self._deliver(record, adapter)
        return self.get(task_id)

    @staticmethod
    def _apply(record: TaskRecord, update: ProviderUpdate) -> None:
        record.status = update.status
        record.progress_percent = update.progress_percent
        record.eta_seconds = update.eta_seconds
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
        self.journal.save(record)

    async def _deliver(self, record: TaskRecord, adapter: ProviderAdapter) -> None:
        """Download the clip, unless another server process on this state folder is already at it."""
        if not record.video_url:
            raise ProviderError(f"{adapter.label} reported success but gave no video URL.", retryable=True)
        lock = FileLock(self.settings.state_dir / "locks" / f"{record.task_id}.lock", timeout=0)
        try:
            lock.acquire()
        except FileLockTimeout:
            log.info("task %s: another server process is downloading the clip", record.task_id)
            return
        try:
            if self.get(record.task_id).delivered:
                return  # another process finished it while we polled
            result = await self._download(record, adapter)
            # Journal the clip the moment it is in place: previews are extras, the clip is not.
            record.file_path = str(result.path)
            record.sha256 = result.sha256
            record.size_bytes = result.size_bytes
            record.error_code = record.error_message = None  # the download's passing troubles are over
            self.journal.save(record)
        finally:
            lock.release()
        log.info("task %s: clip saved to %s (%d bytes)", record.task_id, result.path, result.size_bytes)
        companions = await anyio.to_thread.run_sync(make_companions, result.path, result.facts, limiter=self._decoders)
        record.clip_facts = companions.facts
        record.contact_sheet_path = str(companions.contact_sheet) if companions.contact_sheet else None
        record.last_frame_path = str(companions.last_frame) if companions.last_frame else None
        record.warnings.extend(companions.warnings)
        try:
            record.sidecar_path = str(await anyio.to_thread.run_sync(write_sidecar, record, result.path))
        except OSError as exc:
            record.warnings.append(f"The sidecar {result.path.name}.json could not be written ({exc.strerror or exc}).")
        self.journal.save(record)

    async def _download(self, record: TaskRecord, adapter: ProviderAdapter) -> Downloaded:
        """The clip on disk, verified, after up to :data:`DOWNLOAD_ATTEMPTS` attempts.

        Each failed attempt is journaled on the task (``check_task`` shows it as a warning
        while the task runs). Whatever ends the download removes its part file.

        Raises:
            DownloadFailed: the attempts ran out, or the link cannot be used (address, size).
            StorageError: the clip could not be written here (disk, folder).
            KlingError: the provider could not give a fresh link.
        """
        destination = Path(self.settings.output_dir) / clip_filename(record)
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
                f"asking for fresh ones {DOWNLOAD_ATTEMPTS - 1} times. The clip may be gone; its last link was "
                f"{record.video_url}. Call check_task again to retry."
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
                    self.journal.save(record)
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
