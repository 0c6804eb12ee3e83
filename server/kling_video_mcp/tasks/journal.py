"""The durable task journal: one SQLite file in ``KLING_MCP_STATE_DIR``.

Each task is a row holding its full :class:`~kling_video_mcp.models.TaskRecord` as JSON,
with the columns we search by beside it. Every query made on a caller's behalf takes an
``owner`` and sees only that owner's tasks; ``owner=None`` (the server's own bookkeeping) sees
all. Writes are committed before the caller goes on
(``synchronous=FULL``), so a task the server has told anyone about survives ``kill -9``.
The standard library's ``sqlite3`` is enough: every statement is a few-row lookup.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from kling_video_mcp.models import TaskRecord, TaskStatus, utcnow

_SCHEMA = """
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
"""
_OWNERS = (
    "ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'",
    "CREATE INDEX tasks_owner_created ON tasks (owner, created_at)",
)
"""Journals from before owners: their tasks belong to the local owner (``models.LOCAL_OWNER``)."""


def _owned(owner: str | None) -> tuple[str, tuple[str, ...]]:
    """A ``WHERE`` condition and its parameter limiting rows to ``owner`` (none for ``None``)."""
    return ("owner = ?", (owner,)) if owner is not None else ("1", ())


class Journal:
    """All tasks this server has submitted or recovered, newest last."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._db.execute("BEGIN IMMEDIATE")  # one server process adds the column; others then see it
        try:
            if "owner" not in {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}:
                for statement in _OWNERS:
                    self._db.execute(statement)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def save(self, record: TaskRecord) -> TaskRecord:
        """Insert or replace ``record`` (stamping ``updated_at``), committed on return."""
        record.updated_at = utcnow()
        self._db.execute(
            "INSERT OR REPLACE INTO tasks (task_id, provider, provider_task_id, status, fingerprint, created_at, record, owner)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.task_id,
                record.provider,
                record.provider_task_id,
                record.status,
                record.fingerprint,
                record.created_at.isoformat(),
                record.model_dump_json(),
                record.owner,
            ),
        )
        return record

    def delete(self, task_id: str) -> None:
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def get(self, task_id: str, owner: str | None = None) -> TaskRecord | None:
        """The task with our ``task_id``, or the one whose provider task id is ``task_id``."""
        mine, who = _owned(owner)
        row = self._db.execute(
            f"SELECT record FROM tasks WHERE (task_id = ? OR provider_task_id = ?) AND {mine} "
            "ORDER BY task_id = ? DESC LIMIT 1",
            (task_id, task_id, *who, task_id),
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def find_provider_task(self, provider: str, provider_task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT record FROM tasks WHERE provider = ? AND provider_task_id = ?", (provider, provider_task_id)
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def unfinished(self) -> list[TaskRecord]:
        """Tasks whose clip is not yet safe on disk and that have not failed, oldest first."""
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE status IN ('queued', 'running', 'succeeded') ORDER BY created_at"
        ).fetchall()
        records = [TaskRecord.model_validate_json(row[0]) for row in rows]
        return [record for record in records if not record.delivered and record.provider_task_id]

    def orphaned_submits(self, before: datetime) -> list[TaskRecord]:
        """Tasks journaled before ``before`` whose submit never got an answer recorded."""
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE provider_task_id IS NULL AND status = 'queued' AND created_at < ?",
            (before.isoformat(),),
        ).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def same_request_since(self, fingerprint: str, since: datetime, owner: str | None) -> TaskRecord | None:
        """The newest task ``owner`` made from an identical request at or after ``since``, if any."""
        mine, who = _owned(owner)
        row = self._db.execute(
            f"SELECT record FROM tasks WHERE fingerprint = ? AND created_at >= ? AND {mine} "
            "ORDER BY created_at DESC LIMIT 1",
            (fingerprint, since.isoformat(), *who),
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def created_since(self, since: datetime, owner: str | None = None) -> list[TaskRecord]:
        mine, who = _owned(owner)
        rows = self._db.execute(
            f"SELECT record FROM tasks WHERE created_at >= ? AND {mine}", (since.isoformat(), *who)
        ).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def recent(self, status: TaskStatus | None = None, limit: int = 20, *, owner: str | None) -> list[TaskRecord]:
        """``owner``'s tasks, newest first, optionally only those with ``status``."""
        mine, who = _owned(owner)
        if status is None:
            rows = self._db.execute(
                f"SELECT record FROM tasks WHERE {mine} ORDER BY created_at DESC LIMIT ?", (*who, limit)
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT record FROM tasks WHERE status = ? AND {mine} ORDER BY created_at DESC LIMIT ?",
                (status, *who, limit),
            ).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]
