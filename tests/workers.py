"""Several ``kling-video-mcp --transport streamable-http --stateless`` worker processes on one
PostgreSQL journal, as a deployment behind a load balancer runs them (shared by the scale-out
tests and the benchmark figures)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx2
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from helpers import eventually_sync
from test_http import HttpServer, free_port, start_server, stop_server, wait_healthy
from test_stdio import server_env

LEASE_SECONDS = 3.0
"""Leases in the tests: a killed worker's tasks are taken over within 4 s (default 15 s, at most 20 s)."""


@contextmanager
def workers(emulator, tmp_path: Path, database_url: str, count: int = 3, **extra: str) -> Iterator[list[HttpServer]]:
    """Start ``count`` workers at once (own state folders, one output folder, one database); stop them after.

    ``extra`` is added to every worker's environment; ``{port}`` in a value is the worker's own
    port, ``{port0}`` the first worker's.
    """
    servers: list[HttpServer] = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    try:
        ports = [free_port() for _ in range(count)]
        for number, port in enumerate(ports):
            env = server_env(
                emulator, tmp_path,
                KLING_MCP_DATABASE_URL=database_url, KLING_MCP_LEASE_SECONDS=str(LEASE_SECONDS),
                KLING_MCP_STATE_DIR=str(tmp_path / f"state-{number}"),
                **{name: value.format(port=port, port0=ports[0]) for name, value in extra.items()},
            )  # fmt: skip
            servers.append(start_server(env, "--stateless", log_dir=tmp_path, port=port))
        for server in servers:
            wait_healthy(server, extra.get("KLING_MCP_HTTP_TOKEN"))  # a worker with sign-in needs it
        yield servers
    finally:
        for server in servers:
            stop_server(server)


@asynccontextmanager
async def connect(server: HttpServer) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=60) as http, Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
        yield client


def query(database_url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def lease_holder(database_url: str, task_id: str) -> int | None:
    """The process id of the worker holding a live lease on the task."""
    rows = query(database_url, "SELECT lease_owner FROM tasks WHERE task_id = %s AND lease_expires > now()", task_id)
    return int(rows[0][0].split(":")[1]) if rows and rows[0][0] else None


def kill_9(server: HttpServer) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()


def delivered(database_url: str, task_id: str) -> bool:
    rows = query(database_url, "SELECT record::json->>'file_path' FROM tasks WHERE task_id = %s", task_id)
    return bool(rows and rows[0][0])


def wait_delivered(database_url: str, task_ids: list[str], timeout: float = 60.0) -> float:
    """Block until every task's clip is journaled, watching the database only (no check_task,
    which would ask for polls); returns the moment (``time.monotonic``) the last one was seen."""
    pending = set(task_ids)

    def still_pending() -> set[str]:
        pending.difference_update({task_id for task_id in pending if delivered(database_url, task_id)})
        return pending

    eventually_sync(still_pending, lambda left: not left, timeout=timeout, interval=0.01, what=f"clips of {task_ids} journaled")
    return time.monotonic()
