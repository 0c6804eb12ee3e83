"""Delivery: from a provider's "done" to a task that callers see as ``succeeded``.

The watcher steps every unfinished task here (:meth:`Delivery.step`): one poll of its provider
and, once the render is done, the clip's download (resumed, verified, with fresh links when
one fails) and its companions. A task is delivered in two journal writes:

1. the clip, the moment it is in place (``file_path``, sha256, size, probed facts), with
   ``companions_pending``: a paid clip is never lost, whatever happens next;
2. its companions (contact sheet, last frame, sidecar; :mod:`kling_video_mcp.media.companions`),
   or why each one could not be made, and with them the task becomes delivered. Only from
   this write on does anyone see ``succeeded``, so a result that says ``succeeded`` always
   carries its companions, and ``task:<id>`` chaining can start from it at once.

A film (assembly) takes the same two steps: the assembler makes it (step 1), then the same
companions are made (step 2). A server stopped between the two finds the task unfinished at
start-up and makes its companions from the clip on disk, asking no provider. A delivered
task whose companion files went missing gets them made again when it is read or chained
(:meth:`Delivery.repair`), and at start-up. The preview proxy follows step 2; it is only for
the screening room and is made again on demand.

Test hook: ``KLING_MCP_TEST_PAUSE_BEFORE_COMPANIONS`` (seconds, unset in normal use) pauses
between the two writes, so a test can stop the server exactly there (``tests/test_restart.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import httpx2
from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from kling_video_mcp.config import ProviderName, Settings
from kling_video_mcp.errors import DownloadFailed, KlingError, NotFound, ProviderError
from kling_video_mcp.journal import Journal
from kling_video_mcp.media.companions import COMPANIONS, make_companions
from kling_video_mcp.media.previews import ensure_preview
from kling_video_mcp.models import Companion, ProviderUpdate, TaskRecord, utcnow
from kling_video_mcp.providers import Provider, Providers, provider_class
from kling_video_mcp.tasks.addresses import AddressPolicy, Reach, provider_reach
from kling_video_mcp.tasks.assembly import Assembler
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
from kling_video_mcp.tasks.files import clip_filename, sidecar_body
from kling_video_mcp.tasks.owners import owner_folder
from kling_video_mcp.tasks.watcher import MAX_POLL_INTERVAL, Pace

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 5
RETRIED_DOWNLOAD_ERRORS = (IncompleteDownload, UrlExpired, NotAVideo)
"""Download failures worth another attempt (resuming, or with a fresh link); any other ends it."""
COMPANION_DECODERS = 2
"""Clips probed and previewed at once: each decode holds frames in memory (benchmark figure 4)."""
PAUSE_BEFORE_COMPANIONS_VARIABLE = "KLING_MCP_TEST_PAUSE_BEFORE_COMPANIONS"
"""Test hook (see the module docstring): seconds to wait between journaling a clip and making its companions."""


def _clip_on_disk(record: TaskRecord) -> bool:
    return record.file_path is not None and Path(record.file_path).is_file()


def missing_companions(record: TaskRecord) -> set[Companion]:
    """The companions of ``record``'s clip that are neither journaled nor on disk."""
    missing: set[Companion] = set() if record.clip_facts is not None else {"facts"}
    paths = {"contact_sheet": record.contact_sheet_path, "last_frame": record.last_frame_path, "sidecar": record.sidecar_path}
    missing.update(kind for kind, path in paths.items() if path is None or not Path(path).is_file())
    return missing


class Delivery:
    """Polls, downloads, makes companions and previews; the watcher's side of the task service."""

    def __init__(
        self, settings: Settings, journal: Journal, providers: Providers, client: httpx2.AsyncClient, *, worker: str
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.providers = providers
        self.assembler = Assembler(settings, journal)
        self._client = client
        self._worker = worker
        self._decoders = anyio.CapacityLimiter(COMPANION_DECODERS)
        self._reach: dict[ProviderName, Reach] = {}
        self._pause_before_companions = float(os.environ.get(PAUSE_BEFORE_COMPANIONS_VARIABLE) or 0)

    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord:
        """The journaled task (by our id or the provider's), of ``owner`` unless ``None``
        (the server's own bookkeeping, or a task already found for its owner, by its own id).

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
        """Move the task on by one step: poll its provider once (or make the film), and once
        the clip is done, deliver it (see the module docstring).

        Only the task's own watch loop calls this, in the worker holding the task's lease.
        Another server process on an embedded journal (``--stateless`` workers on one machine)
        may move the task on meanwhile, so a poll's news is saved only over the record it
        started from.
        """
        record = await self.get(task_id)
        if record.finished:
            return record  # finished elsewhere meanwhile (cancelled through MCP tasks): nothing to poll
        if record.status != "succeeded":
            if record.kind == "assemble":
                record = await self._make_film(record)
            else:
                adapter = await self.providers.for_task(record)
                assert record.provider_task_id is not None
                update = await adapter.poll(record.provider_task_id)
                if (latest := await self.get(task_id)).updated_at != record.updated_at:
                    return latest  # moved on elsewhere meanwhile: its news is newer
                record.provider_requests += 1
                self.apply(record, update)
                await self.journal.save(record)
        if record.status == "succeeded" and not record.delivered:
            await self._deliver(record)
        return await self.get(task_id)

    @staticmethod
    def apply(record: TaskRecord, update: ProviderUpdate) -> None:
        """Copy a poll's news onto ``record`` (not saved)."""
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

    async def _make_film(self, record: TaskRecord) -> TaskRecord:
        """Make an assembly's film (step 1 of its delivery), unless another process is at it."""
        async with self._working_on(record.task_id) as mine:
            current = await self.get(record.task_id)
            if not mine or current.status == "succeeded" or current.finished:
                return current  # another server process is making it, or finished it meanwhile
            return await self.assembler.make(current)

    @asynccontextmanager
    async def _working_on(self, task_id: str, *, release: bool = False) -> AsyncIterator[bool]:
        """Whether this process may work on the task's files now (download, film, companions),
        held for the work.

        On a shared journal the task's lease is that right (only its holder steps the task);
        ``release`` gives it back afterwards, for work done outside the task's watch loop. On
        the embedded one, processes on one machine share the output folder, and a lock file
        beside the journal keeps two of them off one task's files.
        """
        if self.journal.shared:
            mine = await self.journal.take_lease(task_id, self._worker, self.settings.lease_seconds)
            try:
                yield mine
            finally:
                if mine and release:
                    with anyio.CancelScope(shield=True):
                        await self.journal.release_lease(task_id, self._worker)
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

    async def _deliver(self, record: TaskRecord) -> None:
        """Bring the clip home (unless it is on disk already) and make its companions, unless
        another server process on this state folder is already at it."""
        async with self._working_on(record.task_id) as mine:
            if not mine:
                log.info("task %s (user %s): another server process is delivering the clip", record.task_id, record.owner)
                return
            record = await self.get(record.task_id)
            if record.delivered or record.status != "succeeded":
                return  # another process finished it while we polled
            if not _clip_on_disk(record):
                if record.kind == "assemble":  # its film is gone before its companions were made: make it again
                    record.status, record.file_path, record.companions_pending = "running", None, False
                    await self.journal.save(record)
                    return
                await self._bring_home(record)
            if self._pause_before_companions:
                await anyio.sleep(self._pause_before_companions)
            await self._make_companions(record, COMPANIONS)
        await self._prepare_preview(record)

    async def _bring_home(self, record: TaskRecord) -> None:
        """Download the render's clip and journal it (step 1 of its delivery)."""
        adapter = await self.providers.for_task(record)
        if not record.video_url:
            raise ProviderError(f"{adapter.label} reported success but gave no video URL.", retryable=True)
        result = await self._download(record, adapter)
        record.file_path = str(result.path)
        record.sha256 = result.sha256
        record.size_bytes = result.size_bytes
        record.clip_facts = result.facts
        record.companions_pending = True
        record.error_code = record.error_message = None  # the download's passing troubles are over
        await self.journal.save(record)
        log.info(
            "task %s (user %s): clip saved to %s (%d bytes)", record.task_id, record.owner, result.path, result.size_bytes
        )

    async def _make_companions(self, record: TaskRecord, wanted: set[Companion] | tuple[Companion, ...]) -> None:
        """Make the ``wanted`` companions of the record's clip and journal them with the task
        delivered (step 2). Each that cannot be made is named, with why, in ``companion_problems``."""
        assert record.file_path is not None
        clip = Path(record.file_path)
        made = await anyio.to_thread.run_sync(
            partial(
                make_companions, clip, record.clip_facts, sheet_times=record.sheet_times_seconds,
                sidecar=sidecar_body(record), wanted=wanted,
            ),
            limiter=self._decoders,
        )  # fmt: skip
        record.clip_facts = made.facts or record.clip_facts
        if "contact_sheet" in wanted:
            record.contact_sheet_path = str(made.contact_sheet) if made.contact_sheet else None
        if "last_frame" in wanted:
            record.last_frame_path = str(made.last_frame) if made.last_frame else None
        if "sidecar" in wanted:
            record.sidecar_path = str(made.sidecar) if made.sidecar else None
        for companion in wanted:
            if companion in made.problems:
                record.companion_problems[companion] = made.problems[companion]
            else:
                record.companion_problems.pop(companion, None)
        record.companions_pending = False
        await self.journal.save(record)

    async def repair(self, record: TaskRecord) -> TaskRecord:
        """A delivered task with its missing companions made again from the clip on disk (no
        provider is asked); the record as it is when nothing is missing, the clip is gone, or
        another process is working on the task's files."""
        if not record.delivered or not missing_companions(record) or not _clip_on_disk(record):
            return record
        async with self._working_on(record.task_id, release=True) as mine:
            current = await self.get(record.task_id)
            if not mine or not current.delivered or not (missing := missing_companions(current)):
                return current
            log.info("task %s: making its missing companions again (%s)", record.task_id, ", ".join(sorted(missing)))
            await self._make_companions(current, missing)
        return current

    # -- previews ---------------------------------------------------------------------

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
        if not record.delivered or not _clip_on_disk(record):
            raise NotFound(f"Task {record.task_id!r} has no finished clip on disk to preview.", task_id=record.task_id)
        assert record.file_path is not None
        clip = Path(record.file_path)
        return await anyio.to_thread.run_sync(
            ensure_preview, clip, self.previews_folder(record), record.task_id, limiter=self._decoders
        )

    # -- downloads --------------------------------------------------------------------

    async def _fresh_url(self, record: TaskRecord, adapter: Provider) -> None:
        """Ask the provider again for the result URL (the old one was refused).

        The answer may be the same URL (a stable CDN link refused for a moment); only a
        missing one means the provider has no link to give.
        """
        assert record.provider_task_id is not None
        update = await adapter.poll(record.provider_task_id)
        record.provider_requests += 1
        if not update.video_url:
            raise ProviderError(
                f"The clip's download link expired and {adapter.label} gave no fresh one; "
                "the provider may have deleted the clip.",
            )
        self.apply(record, update)
        await self.journal.save(record)

    async def _download(self, record: TaskRecord, adapter: Provider) -> Downloaded:
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

    async def _download_attempts(self, record: TaskRecord, adapter: Provider, destination: Path) -> Downloaded:
        """Attempt the download until it works or :data:`DOWNLOAD_ATTEMPTS` attempts in a row got
        nowhere. Progress is a part file longer than ever before: a large clip on a poor line may
        need many resumed attempts, while a server whose declared length is wrong sends the same
        bytes again and again."""
        # A link past its expiry, or one that failed, is asked for again before the next try:
        # it may have expired, or (after a restart) point at an embedded emulator that is gone.
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
        described = provider_class(provider)
        if described.downloads_from_loopback:
            return "local"  # the server's own embedded emulator, on loopback
        if provider not in self._reach:
            base_url = described.base_url(self.settings)
            setting = self.settings.allow_private_downloads
            self._reach[provider] = await anyio.to_thread.run_sync(provider_reach, base_url, setting)
        return self._reach[provider]
