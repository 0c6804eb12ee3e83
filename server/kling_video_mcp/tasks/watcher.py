"""Background completion: every unfinished task is watched until its clip is on disk.

One watch loop per task polls the provider through the service's ``step``, paced by
:func:`next_poll_delay`: rarely early in a render and more often near its expected end.
A caller that wants fresh news (``check_task``) can *nudge* a loop to poll now and wait for
its next update; while any caller is :meth:`Watcher.waiting` on a task, it is polled at its
provider's minimum interval, so a clip somebody waits for is never picked up late. A task
still unfinished ``ceiling`` seconds past its expected end is marked ``timed_out`` (it can be
checked again).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from kling_video_mcp.errors import KlingError, TimedOut
from kling_video_mcp.models import TaskRecord, utcnow

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL = 30.0
"""Seconds: the longest pause between two polls of one unfinished task (before time scaling)."""


@dataclass(frozen=True)
class Pace:
    """How to pace the polls of one task, in seconds of our clock."""

    expected_seconds: float
    """Queue plus render time the model usually takes, from submission."""
    min_interval: float
    max_interval: float
    time_scale: float = 1.0
    """Our seconds per provider second: the provider's ``eta`` is multiplied by it."""

    def remaining(self, record: TaskRecord) -> float:
        """Seconds until the render should end.

        The provider's ETA where it gives one above 0; else, while the task runs, an estimate
        from its progress and how long it has been running (Novita reports ``eta: 0`` near the
        end, issue 9); else what is left of the model's usual time.
        """
        if record.eta_seconds is not None and record.eta_seconds > 0:
            return record.eta_seconds * self.time_scale
        if (left := _left_from_progress(record)) is not None:
            return left
        return self.expected_seconds - (utcnow() - record.created_at).total_seconds()


def _left_from_progress(record: TaskRecord) -> float | None:
    """Seconds left at the pace so far, ``elapsed × (100 - p) / p``; ``None`` without progress.

    ``elapsed`` counts from when a poll first saw the task running, at or after its real start,
    so the estimate errs early, never late; on that first poll itself, from its submission.
    """
    percent = record.progress_percent
    if record.status != "running" or percent is None or not 0 < percent < 100:
        return None
    now = utcnow()
    running = (now - record.running_since).total_seconds() if record.running_since else 0.0
    elapsed = running if running > 0 else (now - record.created_at).total_seconds()
    return elapsed * (100 - percent) / percent


def next_poll_delay(record: TaskRecord, pace: Pace) -> float:
    """Seconds to wait before polling ``record`` again.

    Half of the remaining time, so polls are rare early and dense near the end; once that is
    within two minimum intervals, exactly the remaining time, so the poll lands as the render
    ends. Bounded by ``pace.min_interval`` and ``pace.max_interval``. Past the expected end,
    steady polls that back off gently. A finished render waiting for its download: at once.
    """
    if record.status == "succeeded":
        return 0.0
    remaining = pace.remaining(record)
    if remaining <= 0:
        overdue = -remaining
        return min(pace.max_interval, max(pace.min_interval, overdue / 10))
    wait = remaining if remaining <= 2 * pace.min_interval else remaining / 2
    return min(pace.max_interval, max(pace.min_interval, wait))


class _Watch:
    def __init__(self) -> None:
        self.nudge = anyio.Event()
        self.updated = anyio.Event()


class WatchedService(Protocol):
    """What the watcher needs from the task service."""

    async def step(self, task_id: str) -> TaskRecord:
        """Poll once (and download when done); returns the saved record."""

    async def pacing(self, record: TaskRecord) -> Pace:
        """How to pace the polls of the record's provider."""

    def record_error(self, task_id: str, error: KlingError, *, final: bool) -> TaskRecord:
        """Save ``error`` on the task: as its failure if ``final``, else as a passing note."""


class Watcher:
    """Runs one watch loop per unfinished task inside ``task_group``."""

    def __init__(self, task_group: TaskGroup, service: WatchedService, *, ceiling: float) -> None:
        self._task_group = task_group
        self._service = service
        self._ceiling = ceiling
        self._watches: dict[str, _Watch] = {}
        self._waiters: Counter[str] = Counter()
        self._changed = anyio.Event()

    def watch(self, task_id: str) -> None:
        """Start watching ``task_id`` unless it is already watched."""
        if task_id not in self._watches:
            self._watches[task_id] = _Watch()
            self._task_group.start_soon(self._run, task_id, name=f"watch {task_id}")

    async def wait_for_updates(self, task_ids: list[str], timeout: float) -> None:
        """Nudge the tasks' loops to poll now and wait, ``timeout`` s in all, for each one's next update."""
        updates = []
        for task_id in task_ids:
            if (watch := self._watches.get(task_id)) is not None:
                updates.append(watch.updated)
                watch.nudge.set()
        with anyio.move_on_after(timeout):
            for updated in updates:
                await updated.wait()

    @contextmanager
    def waiting(self, task_ids: list[str]) -> Iterator[None]:
        """While inside, poll the tasks at their provider's minimum interval: a client is waiting.

        Entering nudges each task's loop, so a long pause chosen before anyone waited is cut short.
        """
        self._waiters.update(task_ids)
        for task_id in task_ids:
            if (watch := self._watches.get(task_id)) is not None:
                watch.nudge.set()
        try:
            yield
        finally:
            self._waiters.subtract(task_ids)
            self._waiters += Counter()  # drop the zeros

    async def wait_for_any_update(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for any watched task's next update (no nudge)."""
        changed = self._changed
        with anyio.move_on_after(timeout):
            await changed.wait()
            return True
        return False

    async def _run(self, task_id: str) -> None:
        watch = self._watches[task_id]
        failures = 0
        try:
            while True:
                try:
                    record, answered = await self._poll_once(task_id)
                    pace = await self._service.pacing(record)
                except Exception:
                    # A local fault (disk full, output folder gone, journal locked) or a bug must
                    # never take the server, and every other task, down with it.
                    failures += 1
                    log.exception("task %s: unexpected error while watching it; trying again", task_id)
                    await anyio.sleep(min(MAX_POLL_INTERVAL, 2.0**failures))
                    continue
                last_poll = anyio.current_time()
                self._announce(watch)
                if record.finished:
                    return
                failures = 0 if answered else failures + 1
                if answered and record.status in ("queued", "running") and self._overdue(record, pace):
                    self._service.record_error(task_id, self._timed_out(pace.expected_seconds), final=True)
                    return
                backoff = pace.min_interval * 2 ** min(failures, 5) if failures else 0.0
                delay = pace.min_interval if self._waiters[task_id] else next_poll_delay(record, pace)
                with anyio.move_on_after(max(delay, backoff)):
                    await watch.nudge.wait()
                watch.nudge = anyio.Event()
                # A nudge never makes us poll one task faster than its provider allows.
                await anyio.sleep(max(0.0, last_poll + pace.min_interval - anyio.current_time()))
        finally:
            self._announce(watch)
            del self._watches[task_id]

    def _announce(self, watch: _Watch) -> None:
        watch.updated.set()
        watch.updated = anyio.Event()
        self._changed.set()
        self._changed = anyio.Event()

    def _overdue(self, record: TaskRecord, pace: Pace) -> bool:
        """Past the ceiling, counted from when watching (re)started, not from an old submission."""
        since = record.watched_since or record.created_at
        return utcnow() > since + timedelta(seconds=pace.expected_seconds + self._ceiling)

    def _timed_out(self, expected: float) -> TimedOut:
        minutes = (expected + self._ceiling) / 60
        return TimedOut(
            f"The provider still reported the task unfinished {minutes:.0f} minutes after the server began "
            "watching it, so it stopped. Check it again later to resume watching."
        )

    async def _poll_once(self, task_id: str) -> tuple[TaskRecord, bool]:
        """Poll once; returns the saved record and whether the provider answered."""
        try:
            return await self._service.step(task_id), True
        except KlingError as exc:
            # Transient trouble (already retried by the HTTP layer) keeps the watch going; a
            # refusal (404, a key that stopped working) ends it, and check_task can resume it.
            log.warning("task %s: %s", task_id, exc.message)
            return self._service.record_error(task_id, exc, final=not exc.retryable), False
