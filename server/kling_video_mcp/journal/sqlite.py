"""The embedded journal: one SQLite file in ``KLING_MCP_STATE_DIR`` (the zero-setup default).

Statements run synchronously inside the coroutines: each is a few-row lookup on a local
file, far cheaper than a hop to a thread (and cold start stays within its benchmark target).
Writes are committed before the call returns (``synchronous=FULL``). Schema versions are
applied under ``BEGIN IMMEDIATE``, so processes starting at once apply each version once.

This backend serves one machine (SQLite's WAL mode "does not work over a network
filesystem", sqlite.org/wal.html): leases always grant, events reach this process only,
and rate gates are the process's own (see :mod:`kling_video_mcp.journal.base`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from kling_video_mcp.journal.base import EventKind, Journal, LegacyNames, Listener, Listeners, is_open, token_digest
from kling_video_mcp.models import TaskRecord, TaskStatus, utcnow

if TYPE_CHECKING:
    from kling_video_mcp.providers.http import Gate as RateGate

MIGRATIONS: tuple[str, ...] = (
    # 1: the journal as it was before versions were kept (hence IF NOT EXISTS).
    """
    CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        provider_task_id TEXT,
        status TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS tasks_provider_task ON tasks (provider, provider_task_id);
    CREATE INDEX IF NOT EXISTS tasks_fingerprint ON tasks (fingerprint, created_at);
    CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
    """,
    # 2: webhook tokens (their digests) to find a task by.
    """
    ALTER TABLE tasks ADD COLUMN webhook_token TEXT;
    CREATE UNIQUE INDEX tasks_webhook_token ON tasks (webhook_token) WHERE webhook_token IS NOT NULL;
    """,
    # 3: owners; tasks from before belong to the local user (models.LOCAL_OWNER).
    """
    ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT 'local';
    CREATE INDEX tasks_owner_created ON tasks (owner, created_at);
    """,
    # 4: owner ids name their sign-in method (tasks/owners.py; base.LegacyNames says what maps where).
    """
    UPDATE tasks SET owner = CASE
        WHEN length(owner) <= 64 AND owner GLOB '[A-Za-z0-9]*' AND owner NOT GLOB '*[^A-Za-z0-9._-]*'
        THEN :legacy_names || ':' || owner
        ELSE 'oauth:' || owner END
    WHERE owner <> 'local';
    UPDATE tasks SET record = json_set(record, '$.owner', owner) WHERE owner <> 'local';
    """,
)
"""Schema versions, oldest first; version ``n`` is ``MIGRATIONS[n - 1]`` (``PRAGMA user_version``)."""

BUSY_SECONDS = 5.0
"""How long a statement waits for another process's write lock on the file."""

_COLUMNS = "task_id, provider, provider_task_id, status, fingerprint, created_at, record, webhook_token, owner"
_OWNED = "(? IS NULL OR owner = ?)"
"""SQL: the row is the owner's given twice (``None``: any owner's)."""


def migrate(db: sqlite3.Connection, legacy_names: LegacyNames = "file") -> int:
    """Apply the versions ``db`` lacks, in one ``BEGIN IMMEDIATE`` transaction; returns the version.

    ``legacy_names``: the sign-in method of the owners of existing tasks whose name could be
    either method's (:data:`~kling_video_mcp.journal.base.LegacyNames`).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement, {"legacy_names": legacy_names})
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


class SqliteJournal(Journal):
    """The journal in one SQLite file at ``path`` (``legacy_names``: see :func:`migrate`)."""

    shared = False

    def __init__(self, path: Path, legacy_names: LegacyNames = "file") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        migrate(self._db, legacy_names)
        self._listeners = Listeners()
        self._sections: dict[str, anyio.Lock] = {}

    async def aclose(self) -> None:
        self._db.close()

    # -- records ----------------------------------------------------------------------

    def _one(self, sql: str, *args: object) -> TaskRecord | None:
        row = self._db.execute(sql, args).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def _all(self, sql: str, *args: object) -> list[TaskRecord]:
        return [TaskRecord.model_validate_json(row[0]) for row in self._db.execute(sql, args).fetchall()]

    async def save(self, record: TaskRecord) -> TaskRecord:
        record.updated_at = utcnow()
        self._db.execute(
            f"INSERT OR REPLACE INTO tasks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.task_id,
                record.provider or "local",  # an assembly is made here, at no provider
                record.provider_task_id,
                record.status,
                record.fingerprint,
                record.created_at.isoformat(),
                record.model_dump_json(),
                record.webhook_token_sha256,
                record.owner,
            ),
        )
        self._listeners.deliver("changed", record.task_id)
        return record

    async def delete(self, task_id: str) -> None:
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord | None:
        return self._one(
            f"SELECT record FROM tasks WHERE (task_id = ? OR provider_task_id = ?) AND {_OWNED} "
            "ORDER BY task_id = ? DESC LIMIT 1",
            task_id, task_id, owner, owner, task_id,
        )  # fmt: skip

    async def find_provider_task(self, provider: str, provider_task_id: str) -> TaskRecord | None:
        return self._one("SELECT record FROM tasks WHERE provider = ? AND provider_task_id = ?", provider, provider_task_id)

    async def find_webhook(self, token: str) -> TaskRecord | None:
        return self._one("SELECT record FROM tasks WHERE webhook_token = ?", token_digest(token))

    async def unfinished(self) -> list[TaskRecord]:
        records = self._all("SELECT record FROM tasks WHERE status IN ('queued', 'running', 'succeeded') ORDER BY created_at")
        return [record for record in records if is_open(record)]

    async def orphaned_submits(self, before: datetime) -> list[TaskRecord]:
        return self._all(
            "SELECT record FROM tasks WHERE provider_task_id IS NULL AND status = 'queued' AND created_at < ?",
            before.isoformat(),
        )

    async def same_request_since(
        self, fingerprint: str, since: datetime, owner: str | None = None
    ) -> TaskRecord | None:
        return self._one(
            f"SELECT record FROM tasks WHERE fingerprint = ? AND created_at >= ? AND {_OWNED} "
            "ORDER BY created_at DESC LIMIT 1",
            fingerprint, since.isoformat(), owner, owner,
        )  # fmt: skip

    async def created_since(self, since: datetime, owner: str | None = None) -> list[TaskRecord]:
        return self._all(f"SELECT record FROM tasks WHERE created_at >= ? AND {_OWNED}", since.isoformat(), owner, owner)

    async def recent(
        self, status: TaskStatus | None = None, limit: int = 20, *, owner: str | None = None
    ) -> list[TaskRecord]:
        return self._all(
            f"SELECT record FROM tasks WHERE (? IS NULL OR status = ?) AND {_OWNED} ORDER BY created_at DESC LIMIT ?",
            status, status, owner, owner, limit,
        )  # fmt: skip

    # -- working together (one machine) -----------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """One holder in this process (a lock), and in every process on the file (``BEGIN IMMEDIATE``).

        The write lock is asked for without SQLite's busy wait, which would stall the event
        loop: while another process holds it, we sleep between tries (up to ``BUSY_SECONDS``).
        """
        async with self._sections.setdefault(name, anyio.Lock()):
            await self._begin_immediate()
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def _begin_immediate(self) -> None:
        deadline = anyio.current_time() + BUSY_SECONDS
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or anyio.current_time() > deadline:
                        raise
                await anyio.sleep(0.005)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")

    async def take_lease(self, task_id: str, owner: str, seconds: float) -> bool:
        return True

    async def claim(self, owner: str, seconds: float, limit: int) -> list[str]:
        return []

    async def renew_leases(self, owner: str, task_ids: list[str], seconds: float) -> set[str]:
        return set(task_ids)

    async def release_lease(self, task_id: str, owner: str) -> None:
        return None

    async def publish(self, kind: EventKind, task_id: str) -> None:
        self._listeners.deliver(kind, task_id)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def rate_gate(self, provider: str, rate: float) -> RateGate | None:
        return None
