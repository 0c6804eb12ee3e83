"""Figure 6: never poll late. Success to clip on disk while a client waits; polls when nobody does.

Two servers on one emulator, side by side. One runs figure 3's workload with nobody waiting:
its provider requests per task must stay at the thrifty pace measured before waiting clients
were polled faster (2026-11-21). The other is driven as a waiting client would: each task is
submitted and then waited on with ``check_task(wait_seconds=50)`` until it succeeded; the delay
from the emulator task's end to its clip on disk must stay within 1.5 times the provider's
minimum poll interval. Clocks, polling pace and rate limit are scaled as in figure 3; delays are
in emulated seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from bench.lab import FLAVORS, ClipWatcher, EmulatorProcess, arguments, journal_records, server_command, server_env, spread
from bench.polling import REAL_RATE_LIMIT, PollerResult, TaskRun, run_adaptive, summarise
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stdio_rpc import StdioServer, clean_env
from kling_video_mcp.providers.base import Provider

MIN_POLL_INTERVAL = Provider.min_poll_interval
"""Seconds: the real providers' minimum poll interval, the pace of a waited-on task."""
REQUESTS_BEFORE = 15.0
"""Figure 3's provider requests per task before waiting clients were polled faster (BENCHMARKS.md, 2026-11-21 full run)."""
WAIT_SECONDS = 50


def wait_for_each(server: StdioServer, renders: list[float], first_index: int) -> None:
    """Submit each task and wait on it with ``check_task(wait_seconds)`` until it succeeded, one after another."""
    for index, render in enumerate(renders, start=first_index):
        provider = FLAVORS[index % len(FLAVORS)]
        task_id = server.call_tool("generate_video", dict(arguments(index, render, provider)))["task_id"]
        status = "queued"
        while status not in ("succeeded", "failed"):  # a failure shows as a missing clip in the figure
            status = server.call_tool("check_task", {"task_id": task_id, "wait_seconds": WAIT_SECONDS})["status"]


async def run_waited(server: StdioServer, work: Path, renders: list[float], timeout: float) -> list[TaskRun]:
    watcher = ClipWatcher(work / "clips")
    first_index = 10_000  # prompts unlike the other server's, so no request is a duplicate
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as group:
            group.start_soon(watcher.until, len(renders), timeout)
            await anyio.to_thread.run_sync(wait_for_each, server, renders, first_index)
    return [TaskRun(r["provider_task_id"], watcher.at(r["task_id"])) for r in journal_records(work / "state")]


async def measure(size: Size, work: Path) -> dict[str, PollerResult]:
    scale = size.polling_time_scale
    alone = spread(size.polling_tasks, *size.polling_render)
    waited = spread(size.waiting_tasks, *size.waiting_render)
    timeout = (1.0 + size.polling_render[1] + sum(waited) + len(waited)) * scale * 2 + 60
    results: dict[str, list[TaskRun]] = {}
    with EmulatorProcess(work / "emulator", scale) as emulator:

        def start(name: str) -> StdioServer:
            env = server_env(emulator, work / name, scale, provider_rate_limit=str(REAL_RATE_LIMIT / scale))
            return StdioServer(server_command(), clean_env(env), stderr=work / f"{name}.log")

        with start("alone") as alone_server, start("waited") as waited_server:

            async def nobody_waits() -> None:
                results["alone"] = await run_adaptive(alone_server, work / "alone", alone, timeout)

            async def client_waits() -> None:
                results["waited"] = await run_waited(waited_server, work / "waited", waited, timeout)

            async with anyio.create_task_group() as group:
                group.start_soon(nobody_waits)
                group.start_soon(client_waits)
        stamps = emulator.stamps()
        return {name: summarise(name, runs, stamps, emulator, scale) for name, runs in results.items()}


def run(size: Size) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-waiting-") as scratch:
        results = anyio.run(measure, size, Path(scratch))
    alone, waited = results["alone"], results["waited"]
    n, m = size.polling_tasks, size.waiting_tasks
    limit = 1.5 * MIN_POLL_INTERVAL
    return [
        Row("6", f"success → clip on disk, a client waiting ({m} tasks, {size.waiting_render[0]:g}-{size.waiting_render[1]:g} s renders), median",
            f"{waited.median_delay:.2f} s", f"{MIN_POLL_INTERVAL:g} s (minimum poll interval)",
            ratio_text(waited.median_delay, MIN_POLL_INTERVAL), f"≤ {limit:g} s (1.5×)", waited.median_delay <= limit),
        Row("6", f"provider requests per task, nobody waiting (figure 3's {n} tasks)", f"{alone.requests_per_task:.1f}",
            f"{REQUESTS_BEFORE:.1f} (2026-11-21)", ratio_text(alone.requests_per_task, REQUESTS_BEFORE),
            f"≤ {REQUESTS_BEFORE:.1f}", alone.requests_per_task <= REQUESTS_BEFORE),
        Row("6", "provider requests per task, a client waiting, context", f"{waited.requests_per_task:.1f}"),
        Row("6", "clips delivered (nobody waiting, a client waiting)", f"{alone.delivered}/{n}, {waited.delivered}/{m}",
            target=f"{n}/{n}, {m}/{m}", met=(alone.delivered, waited.delivered) == (n, m)),
    ]  # fmt: skip
