"""Assemblies: finished clips joined into one film, as a journaled task of kind ``assemble``.

:meth:`Assembler.prepare` checks everything before any work (each task known, finished, its
clip still on disk; crossfades no longer than the clips) and :meth:`Assembler.create`
journals the task as running. The watcher then makes the film where a render's clip would be
downloaded (:meth:`Assembler.make`, called by :meth:`~kling_video_mcp.tasks.delivery.Delivery.step`),
and delivery makes its companions as for any clip, so ``check_task``, ``list_tasks``, the
resources and restart recovery treat it as any other task. Nothing is sent anywhere and it
costs nothing. A task may appear more than once: a repeated shot is a legitimate edit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import AssemblyFailed, InvalidRequest, KlingError
from kling_video_mcp.journal import Journal
from kling_video_mcp.media.assembly import JoinError, Progress, join
from kling_video_mcp.media.probe import UnreadableClip, probe, read_clip
from kling_video_mcp.models import Assembly, AssemblySource, AudioChoice, TaskRecord, Transition, utcnow
from kling_video_mcp.tasks.downloads import adopt, storage_error
from kling_video_mcp.tasks.files import clip_filename
from kling_video_mcp.tasks.owners import owner_folder
from kling_video_mcp.tasks.watcher import Pace

log = logging.getLogger(__name__)

MIN_SHOTS, MAX_SHOTS = 2, 20
"""How many tasks one assembly joins."""
MAX_NESTING = 3
"""How deep films may nest: 1 is a film of clips, 2 a film of such films (scenes into a story), 3
one more. Each level can multiply the length by :data:`MAX_SHOTS` at no cost, so it is bounded,
as is the length itself (``KLING_MCP_MAX_FILM_SECONDS``)."""
ASSEMBLIES_AT_ONCE = 1
"""Films made at once: a re-encode keeps both cores busy (libx264 threads), so more would only queue."""
PROGRESS_SAVE_SECONDS = 0.5
"""Least time between two journal writes of an assembly's progress."""
SECONDS_PER_FILM_SECOND = 1.0
"""Expected making time per second of film: a 1080p re-encode's pace (benchmark figure 6); a
stream copy is far faster. Only paces ``wait_seconds`` progress estimates."""
SHORT_BY_FRAMES = 2
"""A film may end this many frames short of its sources' sum (timestamp rounding), no more."""


class Assembler:
    """Checks, journals and makes assemblies; the task service routes ``assemble`` tasks here."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self._limiter = anyio.CapacityLimiter(ASSEMBLIES_AT_ONCE)

    async def prepare(
        self,
        task_ids: Sequence[str],
        *,
        transition: Transition = "cut",
        crossfade_seconds: float = 0.5,
        audio: AudioChoice = "keep",
        title: str | None = None,
        owner: str,
    ) -> Assembly:
        """The assembly of ``owner``'s ``task_ids`` in playing order, checked; nothing is made or journaled.
        Another owner's task is unknown here, word for word like a missing one.

        A clip whose facts are not journaled yet is probed on a worker thread.

        Raises:
            InvalidRequest: fewer than 2 or more than 20 tasks; a task unknown, unfinished,
                without a probed clip, or whose clip is gone from disk; a clip too short for
                its crossfades (the message names the task and its place in ``task_ids``); a
                film longer than ``KLING_MCP_MAX_FILM_SECONDS`` or nested deeper than :data:`MAX_NESTING`.
        """
        if not MIN_SHOTS <= len(task_ids) <= MAX_SHOTS:
            raise InvalidRequest(
                f"task_ids: give {MIN_SHOTS} to {MAX_SHOTS} finished tasks in playing order (got {len(task_ids)})."
            )
        records = [await self.journal.get(task_id, owner) for task_id in task_ids]
        sources = await anyio.to_thread.run_sync(self._sources, list(task_ids), records)
        fade = crossfade_seconds if transition == "crossfade" else 0.0
        for position, source in enumerate(sources):
            joins = (position > 0) + (position < len(sources) - 1)
            if fade and source.facts.duration_seconds <= fade * joins:
                raise InvalidRequest(
                    f"task_ids[{position}]: task {source.task_id!r} is {source.facts.duration_seconds:.2f} s long, too "
                    f"short for {joins} crossfade(s) of {fade} s; use a shorter crossfade_seconds or transition='cut'."
                )
        expected = sum(source.facts.duration_seconds for source in sources) - fade * (len(sources) - 1)
        if expected > self.settings.max_film_seconds:
            raise InvalidRequest(
                f"task_ids: the film would be {expected:,.0f} s long, above the {self.settings.max_film_seconds:,.0f} s "
                "a film may last (KLING_MCP_MAX_FILM_SECONDS); nothing was made. Join fewer or shorter tasks."
            )
        if (depth := await self._nesting(records)) > MAX_NESTING:
            raise InvalidRequest(
                f"task_ids: the film would nest films {depth} deep (films of films), more than the {MAX_NESTING} levels "
                "allowed; nothing was made. Join the clips of the inner films instead."
            )
        return Assembly(
            title=title,
            transition=transition,
            crossfade_seconds=fade or None,
            audio=audio,
            sources=sources,
            expected_duration_seconds=round(expected, 3),
        )

    async def _nesting(self, records: Sequence[TaskRecord | None]) -> int:
        """How deep a film of ``records`` nests films: 1 for clips only, one more per level of films
        in it. Each level's films are looked up once however often they repeat, and no deeper than
        one level past :data:`MAX_NESTING`."""
        depth, films = 1, [record for record in records if record is not None and record.assembly is not None]
        while films and depth <= MAX_NESTING:
            depth += 1
            inner = {source.task_id for film in films if film.assembly is not None for source in film.assembly.sources}
            films = [found for task_id in inner if (found := await self.journal.get(task_id)) and found.assembly is not None]
        return depth

    @classmethod
    def _sources(cls, task_ids: list[str], records: list[TaskRecord | None]) -> list[AssemblySource]:
        return [cls._source(position, task_id, record) for position, (task_id, record) in enumerate(zip(task_ids, records))]

    @staticmethod
    def _source(position: int, task_id: str, record: TaskRecord | None) -> AssemblySource:
        where = f"task_ids[{position}]"
        if record is None:
            raise InvalidRequest(f"{where}: no task {task_id!r} in this server's journal; nothing was made.")
        if not record.delivered:
            state = "failed" if record.status == "failed" else "not finished yet"
            advice = "leave it out or render it again" if record.status == "failed" else "wait for it with check_task"
            raise InvalidRequest(f"{where}: task {task_id!r} is {state}, so it has no clip to assemble; {advice}.")
        assert record.file_path is not None
        if not Path(record.file_path).is_file():
            raise InvalidRequest(
                f"{where}: the clip of task {task_id!r} is no longer on disk ({record.file_path}); "
                "put it back or leave the task out."
            )
        facts = record.clip_facts
        if facts is None:  # a clip that could not be probed when it was delivered: once more
            try:
                facts = probe(Path(record.file_path))
            except Exception as exc:  # PyAV raises many types; any of them means "unreadable"
                raise InvalidRequest(f"{where}: the clip of task {task_id!r} cannot be read ({exc}), so it cannot be joined.") from exc
        return AssemblySource(task_id=record.task_id, file_path=record.file_path, sha256=record.sha256, facts=facts)

    async def create(self, assembly: Assembly, owner: str) -> TaskRecord:
        """Journal ``owner``'s new assembly task, already running (the watcher makes it from here on)."""
        task_id = uuid.uuid4().hex
        record = TaskRecord(
            task_id=task_id,
            owner=owner,
            kind="assemble",
            assembly=assembly,
            fingerprint=f"assemble:{task_id}",
            status="running",
            progress_percent=0.0,
            estimated_cost_usd=0.0,
            watched_since=utcnow(),
        )
        return await self.journal.save(record)

    def pace(self, record: TaskRecord) -> Pace:
        """How the watcher and ``wait_seconds`` pace an assembly (it is made in one step)."""
        assert record.assembly is not None
        return Pace(
            expected_seconds=record.assembly.expected_duration_seconds * SECONDS_PER_FILM_SECOND,
            min_interval=0.5,
            max_interval=5.0,
        )

    async def make(self, record: TaskRecord) -> TaskRecord:
        """Make the film and journal it as step 1 of its delivery (``succeeded``, its file in place,
        ``companions_pending``); delivery then makes its companions. The caller holds the
        task's files (no other server process works on them meanwhile). A restarted server
        makes the film from the start.

        Raises:
            AssemblyFailed: a clip is gone or unreadable, or the film came out shorter than its sources.
            StorageError: the output folder is full, read-only or gone.
        """
        try:
            return await self._make(record)
        except KlingError:
            raise
        except OSError as exc:  # the output folder: full, read-only or gone
            raise storage_error(exc, Path(self.settings.output_dir)) from exc
        except Exception as exc:  # PyAV raises many types; any of them ends this attempt
            raise AssemblyFailed(f"The film could not be made ({type(exc).__name__}: {exc}).") from exc

    async def _make(self, record: TaskRecord) -> TaskRecord:
        assembly = record.assembly
        assert assembly is not None
        for source in assembly.sources:
            if not Path(source.file_path).is_file():
                raise AssemblyFailed(f"The clip of task {source.task_id!r} is gone from disk ({source.file_path}).")
        destination = Path(self.settings.output_dir) / owner_folder(record.owner) / clip_filename(record)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fade = assembly.crossfade_seconds or 0.0
        work = partial(
            join,
            [Path(source.file_path) for source in assembly.sources],
            destination,
            crossfade_seconds=fade,
            keep_audio=assembly.audio == "keep",
            progress=self._progress_saver(record.task_id),
        )
        try:
            # Pictures only: a clip's sound may run a little past its last frame.
            files = [source.file_path for source in assembly.sources]
            sources = await anyio.to_thread.run_sync(self._picture_seconds, files)
            joined = await anyio.to_thread.run_sync(work, limiter=self._limiter)
            film = await anyio.to_thread.run_sync(read_clip, destination)
            length = float(film.picture_seconds)
            expected = round(sum(sources) - fade * (len(sources) - 1), 3)
            if expected - length > SHORT_BY_FRAMES / float(joined.rate):
                destination.unlink(missing_ok=True)
                raise AssemblyFailed(
                    f"The film came out {length:.2f} s long, {expected - length:.2f} s short of the {expected:.2f} s "
                    f"its {len(sources)} shots add up to, so a shot would be lost; it was deleted. Check that each "
                    "clip plays to its end."
                )
            hashed = await anyio.to_thread.run_sync(adopt, destination)
        except (JoinError, UnreadableClip) as exc:
            raise AssemblyFailed(f"The clips could not be joined: {exc}.") from exc
        record = await self.journal.get(record.task_id) or record
        assembly = record.assembly
        assert assembly is not None
        assembly.method = joined.method
        assembly.expected_duration_seconds = expected
        record.file_path, record.sha256, record.size_bytes = str(destination), hashed.sha256, hashed.size_bytes
        record.clip_facts = film.facts
        # The contact sheet shows one frame from the middle of each shot.
        ends = [*joined.shot_starts[1:], film.facts.duration_seconds]
        record.sheet_times_seconds = [round((start + end) / 2, 3) for start, end in zip(joined.shot_starts, ends)]
        record.status, record.progress_percent, record.finished_at = "succeeded", 100.0, utcnow()
        record.companions_pending = True
        log.info("assembly %s: %s (%s, %.2f s)", record.task_id, destination, joined.method, film.facts.duration_seconds)
        return await self.journal.save(record)

    @staticmethod
    def _picture_seconds(paths: list[str]) -> list[float]:
        return [float(read_clip(Path(path)).picture_seconds) for path in paths]

    def _progress_saver(self, task_id: str) -> Progress:
        """A progress callback for the worker thread: journals the percent now and then, and
        stops the work (by raising) when the server shuts down."""
        last_saved = 0.0

        def save(fraction: float) -> None:
            nonlocal last_saved
            anyio.from_thread.check_cancelled()
            now = time.monotonic()
            if now - last_saved >= PROGRESS_SAVE_SECONDS:
                last_saved = now
                anyio.from_thread.run(self._save_progress, task_id, fraction)

        return save

    async def _save_progress(self, task_id: str, fraction: float) -> None:
        record = await self.journal.get(task_id)
        if record is not None and not record.finished:
            record.progress_percent = round(min(fraction, 0.99) * 100, 1)
            await self.journal.save(record)
