"""Background completion: every unfinished task is watched until its clip is on disk.

One watch loop per task polls the provider through delivery's ``step``, paced by
:func:`next_poll_delay`: rarely early in a render and more often near its expected end, and
only as a safety net while a webhook is expected. A caller that wants fresh news
(``check_task``), or a webhook, can *nudge* a loop to poll now and wait for its next update.
A task still unfinished ``ceiling`` seconds past its expected end is marked ``timed_out``
(it can be checked again). While any caller is :meth:`Watcher.waiting` on a task, its loop
polls it at the provider's minimum interval, so a clip somebody waits for is never picked up
late.

Several workers on one shared journal watch each task once: a worker runs a task's loop
only while it holds the task's lease, renews its leases every third of their life
(:meth:`Watcher.keep_leases`), and takes over the tasks whose leases lapsed, so a worker
killed with ``kill -9`` loses its tasks to the others within ``lease_seconds``. Nudges and
updates travel as journal events, so they reach the lease holder and the waiters on any worker.
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
from kling_video_mcp.journal import EventKind, Journal
from kling_video_mcp.models import TaskRecord, utcnow

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL = 30.0
"""Seconds: the longest pause between two polls of one unfinished task (before time scaling)."""
CLAIM_BATCH = 50
"""Tasks one worker takes over at a time from workers that stopped renewing their leases."""


@dataclass(frozen=True)
class Pace:
    """How to pace the polls of one task, in seconds of our clock."""

    expected_seconds: float
    """Queue plus render time the model usually takes, from submission."""
    min_interval: float
    max_interval: float
    time_scale: float = 1.0
    """Our seconds per provider second: the provider's ``eta`` is multiplied by it."""
    webhook: bool = False
    """The provider will call our webhook when the task ends: polls are only a safety net."""

    def next_poll_in(self, record: TaskRecord) -> float:
        """Seconds until the watcher's next poll of ``record`` is due (:func:`next_poll_delay`),
        within this pace's bounds: when a client asking after the task should ask again."""
        return max(self.min_interval, min(next_poll_delay(record, self), self.max_interval))

    def remaining(self, record: TaskRecord) -> float:
        """Seconds until the render should end.

        The provider's ETA where it gives one above 0; else, while the task runs, an estimate
        from its progress and how long it has been running (a provider may report ``eta: 0``
        near the end); else what is left of the model's usual time.
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

    While a webhook is expected, the safety net: half the model's usual render time past the
    expected end, then every half of that time, so a provider that never calls back still
    delivers the clip, a little late, and one that does is hardly polled.
    """
    if record.status == "succeeded":
        return 0.0
    remaining = pace.remaining(record)
    if pace.webhook:
        return max(pace.min_interval, max(remaining, 0.0) + pace.expected_seconds / 2)
    if remaining <= 0:
        overdue = -remaining
        return min(pace.max_interval, max(pace.min_interval, overdue / 10))
    wait = remaining if remaining <= 2 * pace.min_interval else remaining / 2
    return min(pace.max_interval, max(pace.min_interval, wait))


class _Watch:
    def __init__(self) -> None:
        self.nudge = anyio.Event()
        self.scope = anyio.CancelScope()


class WatchedService(Protocol):
    """What the watcher needs from the task domain (:class:`~kling_video_mcp.tasks.delivery.Delivery`)."""

    async def step(self, task_id: str) -> TaskRecord:
        """Poll once (and download when done); returns the saved record."""

    async def pacing(self, record: TaskRecord) -> Pace:
        """How to pace the polls of the record's provider."""

    async def record_error(self, task_id: str, error: KlingError, *, final: bool) -> TaskRecord:
        """Save ``error`` on the task: as its failure if ``final``, else as a passing note."""


class Watcher:
    """Runs one watch loop per task this worker holds the lease of, inside ``task_group``."""

    def __init__(
        self,
        task_group: TaskGroup,
        service: WatchedService,
        journal: Journal,
        *,
        ceiling: float,
        owner: str,
        lease_seconds: float,
    ) -> None:
        self._task_group = task_group
        self._service = service
        self._journal = journal
        self._ceiling = ceiling
        self._waiters: Counter[str] = Counter()
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._watches: dict[str, _Watch] = {}
        self._updated: dict[str, anyio.Event] = {}
        self._changed = anyio.Event()
        journal.subscribe(self._on_event)

    async def watch(self, task_id: str) -> bool:
        """Watch ``task_id`` here unless it is watched already; ``False`` when another worker holds its lease."""
        if task_id in self._watches:
            return True
        if not await self._journal.take_lease(task_id, self._owner, self._lease_seconds):
            return False
        self._start(task_id)
        return True

    def watches(self, task_id: str) -> bool:
        """Whether this worker runs the task's watch loop now."""
        return task_id in self._watches

    def _start(self, task_id: str) -> None:
        if task_id not in self._watches:
            self._watches[task_id] = _Watch()
            self._task_group.start_soon(self._run, task_id, name=f"watch {task_id}")

    async def nudge(self, task_id: str) -> None:
        """Have the task's watch loop poll now, on whichever worker holds its lease."""
        if (watch := self._watches.get(task_id)) is not None:
            watch.nudge.set()
        else:
            await self._journal.publish("nudge", task_id)

    def _on_event(self, kind: EventKind, task_id: str) -> None:
        if kind == "nudge":
            if (watch := self._watches.get(task_id)) is not None:
                watch.nudge.set()
        elif kind == "polled":
            if (updated := self._updated.pop(task_id, None)) is not None:
                updated.set()
        else:
            self._changed.set()
            self._changed = anyio.Event()

    async def _announce(self, task_id: str) -> None:
        """Tell the waiters on every worker that the task's watcher finished a poll (or stopped)."""
        try:
            await self._journal.publish("polled", task_id)
        except Exception:
            log.exception("task %s: could not announce its poll; waiters see it at their timeout", task_id)

    async def wait_for_updates(self, task_ids: list[str], timeout: float) -> None:
        """Nudge the tasks' loops to poll now and wait, ``timeout`` s in all, for each one's next update."""
        updates = [self._updated.setdefault(task_id, anyio.Event()) for task_id in task_ids]
        for task_id in task_ids:
            await self.nudge(task_id)
        with anyio.move_on_after(timeout):
            for updated in updates:
                await updated.wait()

    @contextmanager
    def waiting(self, task_ids: list[str]) -> Iterator[None]:
        """While inside, poll the tasks at their provider's minimum interval: a client is waiting.

        Entering nudges each task's loop, so a long pause chosen before anyone waited is cut short.
        Only the loops of this worker speed up; a client waiting here on a task another worker
        holds is woken by that worker's saves (:meth:`next_change`) and by :meth:`wait_for_updates`.
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

    def next_change(self) -> anyio.Event:
        """The event set by the next save of any task, on any worker.

        Take it *before* reading the records it should tell news of, then wait on it with
        :meth:`wait_for_change`: a save in between is then never missed.
        """
        return self._changed

    @staticmethod
    async def wait_for_change(change: anyio.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``change`` (from :meth:`next_change`); ``True`` if it came."""
        with anyio.move_on_after(timeout):
            await change.wait()
            return True
        return False

    async def keep_leases(self) -> None:
        """Forever: renew this worker's leases, stop watching those it lost, take over lapsed ones.

        Runs every third of ``lease_seconds``, so a lease is renewed twice before it could lapse.
        """
        while True:
            try:
                # Only the watches that existed before the await: one started meanwhile has a fresh lease.
                renewing = list(self._watches)
                held = await self._journal.renew_leases(self._owner, renewing, self._lease_seconds)
                for task_id in renewing:
                    if task_id not in held and (watch := self._watches.get(task_id)) is not None:
                        log.warning("task %s: lost its lease to another worker; it watches the task now", task_id)
                        watch.scope.cancel()
                for task_id in await self._journal.claim(self._owner, self._lease_seconds, CLAIM_BATCH):
                    log.info("task %s: taken over (its lease had lapsed)", task_id)
                    self._start(task_id)
            except Exception:
                log.exception("could not renew or take leases; trying again")
            await anyio.sleep(self._lease_seconds / 3)

    async def _run(self, task_id: str) -> None:
        watch = self._watches[task_id]
        try:
            with watch.scope:
                await self._watch_loop(task_id, watch)
        finally:
            del self._watches[task_id]
            with anyio.CancelScope(shield=True):
                try:
                    await self._journal.release_lease(task_id, self._owner)
                except Exception:
                    log.exception("task %s: could not release its lease; it lapses by itself", task_id)
                await self._announce(task_id)

    async def _watch_loop(self, task_id: str, watch: _Watch) -> None:
        failures = 0
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
            await self._announce(task_id)
            if record.finished:
                return
            failures = 0 if answered else failures + 1
            if answered and record.status in ("queued", "running") and self._overdue(record, pace):
                await self._service.record_error(task_id, self._timed_out(pace.expected_seconds), final=True)
                return
            backoff = pace.min_interval * 2 ** min(failures, 5) if failures else 0.0
            delay = pace.min_interval if self._waiters[task_id] else next_poll_delay(record, pace)
            with anyio.move_on_after(max(delay, backoff)):
                await watch.nudge.wait()
            watch.nudge = anyio.Event()
            # A nudge never makes us poll one task faster than its provider allows.
            await anyio.sleep(max(0.0, last_poll + pace.min_interval - anyio.current_time()))

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
            record = await self._service.record_error(task_id, exc, final=not exc.retryable)
            log.warning("task %s (user %s): %s", task_id, record.owner, exc.message)
            return record, False
