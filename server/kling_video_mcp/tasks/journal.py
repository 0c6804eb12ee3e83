"""The durable task journal: one SQLite file in ``KLING_MCP_STATE_DIR``.

Each task is a row holding its full :class:`~kling_video_mcp.models.TaskRecord` as JSON,
with the columns we search by beside it. Writes are committed before the caller goes on
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

    def close(self) -> None:
        self._db.close()

    def save(self, record: TaskRecord) -> TaskRecord:
        """Insert or replace ``record`` (stamping ``updated_at``), committed on return."""
        record.updated_at = utcnow()
        self._db.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.task_id,
                record.provider or "local",  # an assembly is made here, at no provider
                record.provider_task_id,
                record.status,
                record.fingerprint,
                record.created_at.isoformat(),
                record.model_dump_json(),
            ),
        )
        return record

    def delete(self, task_id: str) -> None:
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def get(self, task_id: str) -> TaskRecord | None:
        """The task with our ``task_id``, or the one whose provider task id is ``task_id``."""
        row = self._db.execute(
            "SELECT record FROM tasks WHERE task_id = ? OR provider_task_id = ? ORDER BY task_id = ? DESC LIMIT 1",
            (task_id, task_id, task_id),
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def find_provider_task(self, provider: str, provider_task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT record FROM tasks WHERE provider = ? AND provider_task_id = ?", (provider, provider_task_id)
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def unfinished(self) -> list[TaskRecord]:
        """Tasks whose clip is not yet safe on disk and that have not failed, oldest first: renders
        with a provider task to watch, and assemblies (made here)."""
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE status IN ('queued', 'running', 'succeeded') ORDER BY created_at"
        ).fetchall()
        records = [TaskRecord.model_validate_json(row[0]) for row in rows]
        return [
            record for record in records
            if not record.delivered and (record.provider_task_id or record.kind == "assemble")
        ]  # fmt: skip

    def orphaned_submits(self, before: datetime) -> list[TaskRecord]:
        """Tasks journaled before ``before`` whose submit never got an answer recorded."""
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE provider_task_id IS NULL AND status = 'queued' AND created_at < ?",
            (before.isoformat(),),
        ).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def same_request_since(self, fingerprint: str, since: datetime) -> TaskRecord | None:
        """The newest task made from an identical request at or after ``since``, if any."""
        row = self._db.execute(
            "SELECT record FROM tasks WHERE fingerprint = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
            (fingerprint, since.isoformat()),
        ).fetchone()
        return TaskRecord.model_validate_json(row[0]) if row else None

    def created_since(self, since: datetime) -> list[TaskRecord]:
        rows = self._db.execute("SELECT record FROM tasks WHERE created_at >= ?", (since.isoformat(),)).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]

    def recent(self, status: TaskStatus | None = None, limit: int = 20) -> list[TaskRecord]:
        """Newest first, optionally only those with ``status``."""
        if status is None:
            rows = self._db.execute("SELECT record FROM tasks ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT record FROM tasks WHERE status = ? ORDER BY created_at DESC LIMIT ?", (status, limit)
            ).fetchall()
        return [TaskRecord.model_validate_json(row[0]) for row in rows]
