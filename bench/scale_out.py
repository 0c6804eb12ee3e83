"""Figure 6: several workers on one PostgreSQL journal, with and without webhooks.

The same tasks (render times spread evenly over a range, all on Novita) run three ways, each
on a fresh database of one throwaway PostgreSQL server (the test suite's, ``tests/pg_server.py``):
by one worker, by three workers (tasks submitted round-robin), and by three workers whose
``KLING_MCP_PUBLIC_URL`` names the first, so the emulator calls back when each task ends.
Nobody calls ``check_task`` meanwhile (it asks for polls of its own): what the provider sees is
the watchers' work alone. Then the cross-worker wake-up: a ``check_task(wait_seconds=…)`` on a
worker that does not hold the task's lease, against the moment the holder journaled the clip
(seen by this process through the journal's own ``LISTEN`` channel).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx2
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.lab import REPO_DIR, START_TIMEOUT_SECONDS, ClipWatcher, EmulatorProcess, render_prompt, server_command, server_env, spread
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import median
from kling_video_mcp.journal.postgres import CHANNEL

sys.path.insert(0, str(REPO_DIR / "tests"))
from pg_server import fresh_database, postgres_server  # noqa: E402 - the test suite's throwaway server

TIME_SCALE = 0.1
WORKERS = 3


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def workers(emulator: EmulatorProcess, work: Path, database_url: str, count: int, webhooks: bool) -> Iterator[list[str]]:
    """``count`` ``--stateless`` HTTP workers on one database; yields their base URLs."""
    import subprocess

    ports = [_free_port() for _ in range(count)]
    processes = []
    work.mkdir(parents=True, exist_ok=True)
    try:
        for number, port in enumerate(ports):
            settings = {"database_url": database_url, "state_dir": str(work / f"state-{number}")}
            if webhooks:
                settings["public_url"] = f"http://127.0.0.1:{ports[0]}"
            env = server_env(emulator, work, TIME_SCALE, **settings)
            argv = [*server_command(), "--transport", "streamable-http", "--stateless", "--port", str(port)]
            with (work / f"worker-{number}.log").open("wb") as log:
                processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for base, process in zip(bases, processes, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited; see {work}")
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310 - loopback
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"a worker did not start; see {work}") from None
                    time.sleep(0.05)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)


@asynccontextmanager
async def connect(base: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=120) as http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        yield client


async def submit(base: str, index: int, render: float) -> str:
    arguments = {"prompt": render_prompt(index, render), "duration": 3, "mode": "std", "provider": "novita"}
    async with connect(base) as client:
        result = await client.call_tool("generate_video", arguments)
    assert not result.is_error, result.structured_content
    return result.structured_content["task_id"]


def provider_ids(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT task_id, provider_task_id FROM tasks").fetchall())  # type: ignore[arg-type]


async def run_tasks(emulator: EmulatorProcess, work: Path, database_url: str, count: int, renders: list[float], webhooks: bool) -> tuple[float, list[float], int]:
    """Requests per task (submits and polls), success-to-disk delays (real seconds), clips delivered."""
    before = len(emulator.stamps())
    watcher = ClipWatcher(work / "clips")
    with workers(emulator, work, database_url, count, webhooks) as bases:
        async with anyio.create_task_group() as group:
            # Watch the folder from the first submit on, so each clip is stamped as it lands.
            group.start_soon(watcher.until, len(renders), max(renders) * TIME_SCALE * 4 + 60)
            for index, render in enumerate(renders):
                await submit(bases[index % count], index, render)
    requests = len(emulator.stamps()) - before
    delays = []
    for task_id, provider_task_id in provider_ids(database_url).items():
        if (on_disk := watcher.at(task_id)) is not None:
            delays.append(on_disk - emulator.finished_at(provider_task_id))
    return requests / len(renders), delays, len(delays)


async def wake_ups(emulator: EmulatorProcess, work: Path, database_url: str, rounds: int) -> list[float]:
    """Seconds from the holder journaling each clip to a waiting check_task on another worker returning."""
    results = []
    with workers(emulator, work, database_url, 2, webhooks=False) as (holder, waiter):
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listen:
            await listen.execute(f"LISTEN {CHANNEL}")
            for index in range(rounds):
                task_id = await submit(holder, 1000 + index, 20.0)
                returned: list[float] = []

                async def wait(task_id: str = task_id, returned: list[float] = returned) -> None:
                    async with connect(waiter) as client:
                        await client.call_tool("check_task", {"task_id": task_id, "wait_seconds": 50})
                        returned.append(time.time())  # before closing the client, which takes a while

                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    recorded = await _delivered_at(listen, database_url, task_id)
                results.append(returned[0] - recorded)
    return results


async def _delivered_at(listen: psycopg.AsyncConnection, database_url: str, task_id: str) -> float:
    """When the notification of the save that journaled the task's clip arrived here."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as reader:
        async for notify in listen.notifies():
            at = time.time()
            if notify.payload != f"changed:{task_id}":
                continue
            cursor = await reader.execute("SELECT record FROM tasks WHERE task_id = %s", (task_id,))
            row = await cursor.fetchone()
            if row and json.loads(row[0]).get("file_path"):
                return at
    raise AssertionError("unreachable: notifies() ends only with its connection")


def run(size: Size) -> list[Row]:
    renders = spread(size.scale_tasks, *size.scale_render)
    with tempfile.TemporaryDirectory(prefix="kling-bench-scale-") as folder, postgres_server() as server:
        work = Path(folder)
        with EmulatorProcess(work / "emulator", TIME_SCALE) as emulator:

            async def measure() -> tuple:
                one = await run_tasks(emulator, work / "one", fresh_database(server, "one"), 1, renders, False)
                three = await run_tasks(emulator, work / "three", fresh_database(server, "three"), WORKERS, renders, False)
                hooked = await run_tasks(emulator, work / "hooks", fresh_database(server, "hooks"), WORKERS, renders, True)
                woken = await wake_ups(emulator, work / "wake", fresh_database(server, "wake"), size.wake_ups)
                return one, three, hooked, woken

            (one, three, hooked, woken) = anyio.run(measure)
    n = len(renders)
    return [
        Row("6", f"provider requests per task, {WORKERS} workers ({n} tasks, {size.scale_render[0]:g}-{size.scale_render[1]:g} s renders)",
            f"{three[0]:.1f}", f"{one[0]:.1f} (1 worker)", ratio_text(three[0], one[0]), "≤ 1.1×", three[0] <= 1.1 * one[0]),
        Row("6", f"provider requests per task with webhooks, {WORKERS} workers (incl. submit)",
            f"{hooked[0]:.1f}", f"{three[0]:.1f} (no webhooks)", ratio_text(hooked[0], three[0]), "≤ 3", hooked[0] <= 3),
        Row("6", "with webhooks: success → verified clip on disk, median (real seconds)",
            f"{median(hooked[1]):.2f} s", f"{median(three[1]):.2f} s (no webhooks)", ratio_text(median(hooked[1]), median(three[1])),
            "≤ 1 s + download", median(hooked[1]) <= 1.0),
        Row("6", "clips delivered (1 worker, 3 workers, 3 with webhooks)",
            f"{one[2]}/{n}, {three[2]}/{n}, {hooked[2]}/{n}", "—", "—", f"{n}/{n} each", one[2] == three[2] == hooked[2] == n),
        Row("6", f"cross-worker wake-up: clip journaled → waiting check_task returns, median of {len(woken)}",
            f"{median(woken) * 1000:.0f} ms", "—", "—", "< 200 ms", median(woken) < 0.2),
    ]  # fmt: skip
