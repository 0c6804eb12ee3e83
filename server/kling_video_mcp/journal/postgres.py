"""The journal on PostgreSQL (``KLING_MCP_DATABASE_URL=postgresql://…``): several workers, several machines.

psycopg 3 in async mode with a psycopg-pool connection pool, so no query blocks the event
loop (the ``kling-video-mcp[postgres]`` extra). What the embedded journal does for one
process, this does for every worker on the database:

- schema versions are applied at start-up under an advisory lock, so workers starting
  together apply each version once;
- :meth:`exclusive` is an advisory lock (``pg_advisory_lock``) on a name;
- leases are two columns on the task's row, taken with ``FOR UPDATE SKIP LOCKED`` so two
  workers claiming at once never wait on each other nor take the same task;
- events go out with ``pg_notify`` in the same transaction as the write, and one ``LISTEN``
  connection per worker hands them to its subscribers;
- a provider's rate gate is one row holding the next free send time, reserved atomically.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from psycopg import AsyncConnection, OperationalError
from psycopg_pool import AsyncConnectionPool

from kling_video_mcp.journal.base import EventKind, Journal, LegacyNames, Listener, Listeners, is_open, token_digest
from kling_video_mcp.models import TaskRecord, TaskStatus, utcnow

if TYPE_CHECKING:
    from kling_video_mcp.providers.http import Gate as RateGate

log = logging.getLogger(__name__)

CHANNEL = "kling_video_mcp_tasks"
MIGRATION_LOCK = 0x6B6C696E67  # any fixed number: "kling"
RECONNECT_SECONDS = 1.0

MIGRATIONS: tuple[str, ...] = (
    # 1: tasks (the record as JSON text, with the columns we search by), leases, rate gates.
    """
    CREATE TABLE tasks (
        task_id text PRIMARY KEY,
        provider text NOT NULL,
        provider_task_id text,
        status text NOT NULL,
        fingerprint text NOT NULL,
        created_at timestamptz NOT NULL,
        record text NOT NULL,
        open boolean NOT NULL,
        webhook_token text UNIQUE,
        lease_owner text,
        lease_expires timestamptz
    );
    CREATE INDEX tasks_provider_task ON tasks (provider, provider_task_id);
    CREATE INDEX tasks_fingerprint ON tasks (fingerprint, created_at);
    CREATE INDEX tasks_created ON tasks (created_at);
    CREATE INDEX tasks_open ON tasks (created_at) WHERE open;
    CREATE TABLE rate_gates (provider text PRIMARY KEY, next_at timestamptz NOT NULL);
    """,
    # 2: owners; tasks from before belong to the local user (models.LOCAL_OWNER).
    """
    ALTER TABLE tasks ADD COLUMN owner text NOT NULL DEFAULT 'local';
    CREATE INDEX tasks_owner_created ON tasks (owner, created_at);
    """,
    # 3: owner ids name their sign-in method (tasks/owners.py; base.LegacyNames says what maps where).
    # One statement: it takes a parameter, and psycopg sends parameters with one statement only.
    """
    WITH moved AS (
        SELECT task_id, CASE
            WHEN owner ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN %(legacy_names)s || ':' || owner
            ELSE 'oauth:' || owner END AS owner
        FROM tasks WHERE owner <> 'local'
    )
    UPDATE tasks SET owner = moved.owner, record = jsonb_set(tasks.record::jsonb, '{owner}', to_jsonb(moved.owner))::text
    FROM moved WHERE tasks.task_id = moved.task_id
    """,
)
"""Schema versions, oldest first; version ``n`` is ``MIGRATIONS[n - 1]`` (table ``schema_migrations``)."""

_LIVE = "(lease_owner IS NULL OR lease_expires < clock_timestamp())"
"""SQL: nobody holds a live lease on the row."""
_OWNED = "(%s::text IS NULL OR owner = %s)"
"""SQL: the row is the task owner's given twice (``None``: any owner's)."""


async def migrate(url: str, legacy_names: LegacyNames = "file") -> int:
    """Apply the schema versions the database lacks, each in its own transaction; returns the version.

    Under a session advisory lock, so of several workers starting at once one applies them
    and the others find them applied. ``legacy_names``: the sign-in method of the owners of
    existing tasks whose name could be either method's (:data:`~kling_video_mcp.journal.base.LegacyNames`).
    """
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cursor.fetchone()
            applied = int(row[0]) if row else 0
            for number, script in enumerate(MIGRATIONS[applied:], start=applied + 1):
                async with conn.transaction():
                    # Parameters only where a script takes them: a script of several statements cannot.
                    parameters = {"legacy_names": legacy_names} if "%(legacy_names)s" in script else None
                    await conn.execute(script, parameters)  # type: ignore[arg-type]  # our own constant SQL
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
                log.info("journal schema: applied version %d", number)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return len(MIGRATIONS)


class _SharedRateGate:
    """At most ``rate`` requests per second to one provider, from every worker together.

    One row holds the next free send time; each request reserves the slot after it in one
    atomic statement and sleeps until its own slot comes.
    """

    def __init__(self, pool: AsyncConnectionPool, provider: str, rate: float) -> None:
        self._pool = pool
        self._provider = provider
        self._interval = 1.0 / rate

    async def wait(self) -> None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO rate_gates AS g (provider, next_at) "
                "VALUES (%(p)s, clock_timestamp() + make_interval(secs => %(i)s)) "
                "ON CONFLICT (provider) DO UPDATE "
                "SET next_at = greatest(g.next_at, clock_timestamp()) + make_interval(secs => %(i)s) "
                "RETURNING extract(epoch FROM g.next_at - clock_timestamp())::float8 - %(i)s",
                {"p": self._provider, "i": self._interval},
            )
            row = await cursor.fetchone()
        await anyio.sleep(max(0.0, row[0] if row else 0.0))


class PostgresJournal(Journal):
    """The journal in the PostgreSQL database at ``url``; build with :meth:`open`."""

    shared = True

    def __init__(self, url: str, pool: AsyncConnectionPool, task_group: TaskGroup) -> None:
        self._url = url
        self._pool = pool
        self._task_group = task_group
        self._listeners = Listeners()
        self._sections: dict[str, anyio.Lock] = {}
        self._gates: dict[str, RateGate] = {}
        self._listening = anyio.Event()
        self._events: AsyncConnection | None = None
        self._closing = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, pool_size: int = 10, legacy_names: LegacyNames = "file"
    ) -> AsyncIterator[PostgresJournal]:
        """Migrate (``legacy_names``: see :func:`migrate`), open the pool and start listening for
        events; all closed on exit."""
        await migrate(url, legacy_names)
        pool = AsyncConnectionPool(url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False)
        await pool.open(wait=True)
        try:
            async with anyio.create_task_group() as task_group:
                journal = cls(url, pool, task_group)
                task_group.start_soon(journal._listen, name="journal LISTEN")
                with anyio.fail_after(30):
                    await journal._listening.wait()
                yield journal
                await journal._stop_listening()
                task_group.cancel_scope.cancel()
        finally:
            await pool.close()

    async def aclose(self) -> None:
        self._task_group.cancel_scope.cancel()

    async def _listen(self) -> None:
        """Hand every ``NOTIFY`` on :data:`CHANNEL` to the subscribers; reconnect when the link drops."""
        while not self._closing:
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    self._events = conn
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    async for notify in conn.notifies():
                        kind, _, task_id = notify.payload.partition(":")
                        if kind in ("changed", "nudge", "polled"):
                            self._listeners.deliver(kind, task_id)  # type: ignore[arg-type]
            except OperationalError as exc:
                if self._closing:
                    return
                log.warning("journal: lost the event connection (%s); reconnecting", exc)
                await anyio.sleep(RECONNECT_SECONDS)

    async def _stop_listening(self) -> None:
        """Close the event connection under the waiting ``notifies()`` (cancelling it instead
        makes psycopg log an interrupted query)."""
        self._closing = True
        if self._events is not None:
            await self._events.close()

    # -- records ----------------------------------------------------------------------

    async def _rows(self, sql: str, args: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, args)  # type: ignore[arg-type]
            return await cursor.fetchall()

    async def _one(self, sql: str, *args: Any) -> TaskRecord | None:
        rows = await self._rows(sql, args)
        return TaskRecord.model_validate_json(rows[0][0]) if rows else None

    async def _all(self, sql: str, *args: Any) -> list[TaskRecord]:
        return [TaskRecord.model_validate_json(row[0]) for row in await self._rows(sql, args)]

    async def save(self, record: TaskRecord) -> TaskRecord:
        record.updated_at = utcnow()
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tasks (task_id, provider, provider_task_id, status, fingerprint, created_at, record, "
                "open, webhook_token, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (task_id) DO UPDATE SET provider = excluded.provider, "
                "provider_task_id = excluded.provider_task_id, status = excluded.status, "
                "fingerprint = excluded.fingerprint, created_at = excluded.created_at, record = excluded.record, "
                "open = excluded.open, webhook_token = excluded.webhook_token, owner = excluded.owner",
                (
                    record.task_id,
                    record.provider or "local",  # an assembly is made here, at no provider
                    record.provider_task_id,
                    record.status,
                    record.fingerprint,
                    record.created_at,
                    record.model_dump_json(),
                    is_open(record),
                    record.webhook_token_sha256,
                    record.owner,
                ),
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"changed:{record.task_id}"))
        return record

    async def delete(self, task_id: str) -> None:
        await self._rows("DELETE FROM tasks WHERE task_id = %s RETURNING task_id", (task_id,))

    async def get(self, task_id: str, owner: str | None = None) -> TaskRecord | None:
        return await self._one(
            f"SELECT record FROM tasks WHERE (task_id = %s OR provider_task_id = %s) AND {_OWNED} "
            "ORDER BY task_id = %s DESC LIMIT 1",
            task_id, task_id, owner, owner, task_id,
        )  # fmt: skip

    async def find_provider_task(self, provider: str, provider_task_id: str) -> TaskRecord | None:
        return await self._one(
            "SELECT record FROM tasks WHERE provider = %s AND provider_task_id = %s", provider, provider_task_id
        )

    async def find_webhook(self, token: str) -> TaskRecord | None:
        return await self._one("SELECT record FROM tasks WHERE webhook_token = %s", token_digest(token))

    async def unfinished(self) -> list[TaskRecord]:
        return await self._all("SELECT record FROM tasks WHERE open ORDER BY created_at")

    async def orphaned_submits(self, before: datetime) -> list[TaskRecord]:
        return await self._all(
            "SELECT record FROM tasks WHERE provider_task_id IS NULL AND status = 'queued' AND created_at < %s", before
        )

    async def same_request_since(
        self, fingerprint: str, since: datetime, owner: str | None = None
    ) -> TaskRecord | None:
        return await self._one(
            f"SELECT record FROM tasks WHERE fingerprint = %s AND created_at >= %s AND {_OWNED} "
            "ORDER BY created_at DESC LIMIT 1",
            fingerprint, since, owner, owner,
        )  # fmt: skip

    async def created_since(self, since: datetime, owner: str | None = None) -> list[TaskRecord]:
        return await self._all(f"SELECT record FROM tasks WHERE created_at >= %s AND {_OWNED}", since, owner, owner)

    async def recent(
        self, status: TaskStatus | None = None, limit: int = 20, *, owner: str | None = None
    ) -> list[TaskRecord]:
        return await self._all(
            f"SELECT record FROM tasks WHERE (%s::text IS NULL OR status = %s) AND {_OWNED} "
            "ORDER BY created_at DESC LIMIT %s",
            status, status, owner, owner, limit,
        )  # fmt: skip

    # -- working together -------------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """A transaction advisory lock on ``hashtext(name)``, held by an open transaction on one
        pooled connection for the section's life; one waiter per worker (a local lock first), so
        waiting submits never hold more than one connection. The lock ends with the transaction,
        so no cancellation can leave it on a connection returned to the pool."""
        async with self._sections.setdefault(name, anyio.Lock()), self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
                yield

    def _lease_args(self, owner: str, seconds: float, **more: Any) -> dict[str, Any]:
        return {"owner": owner, "seconds": seconds, **more}

    async def take_lease(self, task_id: str, owner: str, seconds: float) -> bool:
        rows = await self._rows(
            "UPDATE tasks SET lease_owner = %(owner)s, lease_expires = clock_timestamp() + make_interval(secs => %(seconds)s) "
            f"WHERE task_id = (SELECT task_id FROM tasks WHERE task_id = %(task)s AND (lease_owner = %(owner)s OR {_LIVE}) "
            "FOR UPDATE SKIP LOCKED) RETURNING task_id",
            self._lease_args(owner, seconds, task=task_id),
        )
        return bool(rows)

    async def claim(self, owner: str, seconds: float, limit: int) -> list[str]:
        rows = await self._rows(
            "UPDATE tasks SET lease_owner = %(owner)s, lease_expires = clock_timestamp() + make_interval(secs => %(seconds)s) "
            f"WHERE task_id IN (SELECT task_id FROM tasks WHERE open AND {_LIVE} ORDER BY created_at LIMIT %(limit)s "
            "FOR UPDATE SKIP LOCKED) RETURNING task_id",
            self._lease_args(owner, seconds, limit=limit),
        )
        return [row[0] for row in rows]

    async def renew_leases(self, owner: str, task_ids: list[str], seconds: float) -> set[str]:
        if not task_ids:
            return set()
        rows = await self._rows(
            "UPDATE tasks SET lease_expires = clock_timestamp() + make_interval(secs => %(seconds)s) "
            "WHERE lease_owner = %(owner)s AND task_id = ANY(%(tasks)s) RETURNING task_id",
            self._lease_args(owner, seconds, tasks=task_ids),
        )
        return {row[0] for row in rows}

    async def release_lease(self, task_id: str, owner: str) -> None:
        await self._rows(
            "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL "
            "WHERE task_id = %s AND lease_owner = %s RETURNING task_id",
            (task_id, owner),
        )

    async def publish(self, kind: EventKind, task_id: str) -> None:
        await self._rows("SELECT pg_notify(%s, %s)", (CHANNEL, f"{kind}:{task_id}"))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def rate_gate(self, provider: str, rate: float) -> RateGate | None:
        return self._gates.setdefault(provider, _SharedRateGate(self._pool, provider, rate))
