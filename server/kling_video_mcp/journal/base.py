"""The journal's one interface, shared by the embedded SQLite backend and PostgreSQL.

Every task is a row holding its full :class:`~kling_video_mcp.models.TaskRecord` as JSON,
with the columns we search by beside it. A task's ``owner`` (the user who made it) is one of
them: the queries made on a caller's behalf take an ``owner`` and see only that user's tasks,
while ``owner=None`` (the server's own bookkeeping) sees every task. A write is committed before the call returns, so
a task the server has told anyone about survives ``kill -9``.

Beyond storage, the journal is where several server processes ("workers") meet:

- :meth:`Journal.exclusive`: a critical section held by one worker at a time (the submit's
  idempotency check, budget check and journal write run inside it);
- leases (:meth:`Journal.take_lease`, :meth:`Journal.claim`, :meth:`Journal.renew_leases`):
  each unfinished task is watched by one worker at a time;
- events (:meth:`Journal.publish`, :meth:`Journal.subscribe`): ``changed`` after every save,
  ``nudge`` to ask the lease holder to poll now, ``polled`` when it has, delivered to every worker;
- :meth:`Journal.rate_gate`: one pace of requests per provider for all workers together.

The embedded backend serves one machine: its leases always grant (every process watches the
tasks it knows, and a lock file keeps two processes from downloading one clip), its events
reach only this process, and each process paces its own requests. PostgreSQL makes all four hold
across workers on any number of machines.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from kling_video_mcp.models import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from kling_video_mcp.providers.http import Gate as RateGate

EventKind = Literal["changed", "nudge", "polled"]
"""``changed``: a task's record was saved. ``nudge``: whoever watches the task should poll it
now. ``polled``: the task's watcher finished a poll (and the download it led to, if any)."""
Listener = Callable[[EventKind, str], None]
"""Called with an event's kind and task id, on the event loop; must not block."""

LegacyNames = Literal["file", "oauth"]
"""How the owners of tasks journaled before owner ids named their sign-in method are migrated.

An old owner was ``local``, a token-file user's name or an OAuth ``sub``, all bare. They are told
apart by what a token-file name may be (letters, digits, ``._-``, starting with a letter or digit,
at most 64: ``surface/auth.py``):

- ``local`` stays ``local`` (stdio and the shared token, as before);
- anything else a token-file name cannot be (``auth0|65f0...``, an e-mail address) was an OAuth
  ``sub``: it becomes ``oauth:<sub>``;
- a name that could be either (``alice``, a Keycloak user id) becomes ``<legacy_names>:<name>``,
  where ``legacy_names`` is ``oauth`` when the server migrating the journal signs in with an
  issuer and no token file, else ``file`` (a token file, both, or neither). With both configured
  the name goes to the token file's user: the operator chose that name, while a ``sub`` is the issuer's.
"""


def token_digest(token: str) -> str:
    """sha256 hex of a webhook token: the journal keeps only this, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_open(record: TaskRecord) -> bool:
    """Whether someone must watch ``record``: submitted to its provider (or an assembly, made
    here), and neither delivered nor failed."""
    return (record.provider_task_id is not None or record.kind == "assemble") and not record.finished


class Journal(ABC):
    """All tasks the server has submitted or recovered. Every method is a coroutine."""

    shared: bool = False
    """``True`` when several machines can share it: leases, events and rate gates then hold across workers."""

    # -- lifecycle --------------------------------------------------------------------

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections and stop listening for events."""

    # -- records ----------------------------------------------------------------------

    @abstractmethod
    async def save(self, record: TaskRecord) -> TaskRecord:
        """Insert or replace ``record`` (stamping ``updated_at``), committed on return; publishes ``changed``."""

    @abstractmethod
    async def delete(self, task_id: str) -> None:
        """Forget the task (a submit the provider refused: nothing was created)."""

    @abstractmethod
    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord | None:
        """The task with our ``task_id``, or the one whose provider task id is ``task_id``,
        if it is ``owner``'s (any owner's for ``None``)."""

    @abstractmethod
    async def find_provider_task(self, provider: str, provider_task_id: str) -> TaskRecord | None:
        """The task the provider knows as ``provider_task_id``."""

    @abstractmethod
    async def find_webhook(self, token: str) -> TaskRecord | None:
        """The task whose webhook URL carries ``token`` (looked up by its digest)."""

    @abstractmethod
    async def unfinished(self) -> list[TaskRecord]:
        """Tasks whose clip is not yet safe on disk and that have not failed, oldest first."""

    @abstractmethod
    async def orphaned_submits(self, before: datetime) -> list[TaskRecord]:
        """Tasks journaled before ``before`` whose submit never got an answer recorded."""

    @abstractmethod
    async def same_request_since(
        self, fingerprint: str, since: datetime, owner: str | None = None
    ) -> TaskRecord | None:
        """``owner``'s newest task made from an identical request at or after ``since``, if any."""

    @abstractmethod
    async def created_since(self, since: datetime, owner: str | None = None) -> list[TaskRecord]:
        """Every task of ``owner``'s (everyone's for ``None``) created at or after ``since``
        (budget totals: every worker's tasks)."""

    @abstractmethod
    async def recent(
        self, status: TaskStatus | None = None, limit: int = 20, *, owner: str | None = None
    ) -> list[TaskRecord]:
        """``owner``'s tasks (everyone's for ``None``), newest first, optionally only those with ``status``."""

    # -- working together -------------------------------------------------------------

    @abstractmethod
    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the critical section ``name`` against every other holder of it, on any worker.

        What is read and written inside is seen whole by the next holder: the submit's
        duplicate check, budget check and journal write happen inside ``exclusive("submit")``.
        """

    @abstractmethod
    async def take_lease(self, task_id: str, owner: str, seconds: float) -> bool:
        """Lease ``task_id`` to ``owner`` for ``seconds`` unless another owner holds a live lease."""

    @abstractmethod
    async def claim(self, owner: str, seconds: float, limit: int) -> list[str]:
        """Lease up to ``limit`` open tasks nobody holds (or whose lease expired) to ``owner``."""

    @abstractmethod
    async def renew_leases(self, owner: str, task_ids: list[str], seconds: float) -> set[str]:
        """Extend ``owner``'s leases on ``task_ids``; returns those it still holds."""

    @abstractmethod
    async def release_lease(self, task_id: str, owner: str) -> None:
        """Give the lease up (the task finished, or the worker is stopping)."""

    @abstractmethod
    async def publish(self, kind: EventKind, task_id: str) -> None:
        """Tell every subscriber (on every worker, where the backend is shared)."""

    @abstractmethod
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns the function that unsubscribes it."""

    @abstractmethod
    def rate_gate(self, provider: str, rate: float) -> RateGate | None:
        """A gate letting at most ``rate`` requests per second go to ``provider`` from every
        worker together; ``None`` where the process's own gate is the right one."""


class Listeners:
    """The subscribers of one journal, and the loop-side delivery of events to them."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def deliver(self, kind: EventKind, task_id: str) -> None:
        for listener in list(self._listeners):
            listener(kind, task_id)
