"""Figure 4: many tasks in flight at once across the three providers.

One server (``bench.served``: the real server plus an event-loop lag probe) gets all the
tasks at once, their renders spread so that every one is submitted before the first ends.
Measured: clips delivered, each provider's busiest second of requests against the
configured limit, the server's RSS growth over the load, and the event loop's worst lag.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio

from bench.lab import (
    FLAVORS, REPO_DIR, ClipWatcher, EmulatorProcess, journal_records, proc_status_kb, server_env, spread, submit_all,
)  # fmt: skip
from bench.polling import REAL_RATE_LIMIT
from bench.report import Row
from bench.sizes import Size
from bench.stats import max_in_window
from bench.stdio_rpc import StdioServer, clean_env

RSS_TARGET_MB = 60
LAG_TARGET_MS = 100
RSS_SAMPLE_SECONDS = 0.05
WARM_UP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Load:
    tasks: int
    delivered: int
    peak_in_flight: int
    submit_seconds: float
    rate_limit: float
    busiest_second: dict[str, int]
    """Provider -> most requests it received in any one-second window."""
    rss_growth_kb: int
    max_lag_ms: float
    """The event loop's longest lateness while the load ran (from submitting to the last clip)."""


class RssPeak:
    """Samples a process's RSS until stopped; ``peak_kb`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = proc_status_kb(pid, "VmRSS")

    async def run(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
            await anyio.sleep(RSS_SAMPLE_SECONDS)


def peak_in_flight(records: list[dict], watcher: ClipWatcher) -> int:
    """Most tasks submitted and not yet on disk at one moment."""
    events = []
    for record in records:
        events.append((datetime.fromisoformat(record["created_at"]).timestamp(), 1))
        if (done := watcher.at(record["task_id"])) is not None:
            events.append((done, -1))
    level = peak = 0
    for _, step in sorted(events):
        level += step
        peak = max(peak, level)
    return peak


async def measure(size: Size, work: Path) -> Load:
    scale = size.concurrent_time_scale
    limit = REAL_RATE_LIMIT / scale
    n = size.concurrent_tasks
    timeout = (1.0 + size.concurrent_render[1]) * scale * 3 + n * 0.2 + 30
    lag_file = work / "lag.json"
    with EmulatorProcess(work / "emulator", scale) as emulator:
        env = clean_env(server_env(emulator, work, scale, provider_rate_limit=str(limit)))
        command = [sys.executable, "-m", "bench.served", str(lag_file)]
        with StdioServer(command, env, stderr=work / "server.log", cwd=REPO_DIR) as server:
            watcher = ClipWatcher(work / "clips")
            await anyio.to_thread.run_sync(submit_all, server, [0.0])  # warm-up: imports, pools, journal
            if not await watcher.until(1, WARM_UP_TIMEOUT):
                raise RuntimeError("the warm-up task did not finish")
            rss_before = proc_status_kb(server.pid, "VmRSS")
            rss = RssPeak(server.pid)
            async with anyio.create_task_group() as group:
                group.start_soon(rss.run)
                started = time.time()
                renders = spread(n, *size.concurrent_render)
                await anyio.to_thread.run_sync(submit_all, server, renders, 1)
                submit_seconds = time.time() - started
                await watcher.until(n + 1, timeout)
                finished = time.time()
                group.cancel_scope.cancel()
            records = journal_records(work / "state")
        stamps = [stamp for stamp in emulator.stamps() if stamp.at >= started]
    late = json.loads(lag_file.read_text())["late"]
    return Load(
        tasks=n,
        delivered=len(watcher.seen) - 1,
        peak_in_flight=peak_in_flight(records, watcher),
        submit_seconds=submit_seconds,
        rate_limit=limit,
        busiest_second={flavor: max_in_window([s.at for s in stamps if s.flavor == flavor], 1.0) for flavor in FLAVORS},
        rss_growth_kb=rss.peak_kb - rss_before,
        max_lag_ms=max((ms for at, ms in late if started <= at <= finished), default=0.0),
    )


def run(size: Size) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as scratch:
        load = anyio.run(measure, size, Path(scratch))
    busiest = max(load.busiest_second.values())
    per_provider = ", ".join(f"{name} {count}" for name, count in load.busiest_second.items())
    return [
        Row("4", f"clips delivered ({load.tasks} tasks, peak {load.peak_in_flight} in flight)",
            f"{load.delivered}/{load.tasks}", target=f"{load.tasks}/{load.tasks}", met=load.delivered == load.tasks),
        Row("4", "provider requests in the busiest second", f"{busiest} ({per_provider})",
            f"{load.rate_limit:g}/s configured", target="≤ limit", met=busiest <= load.rate_limit),
        Row("4", "server RSS growth under load", f"{load.rss_growth_kb / 1024:.1f} MB",
            target=f"< {RSS_TARGET_MB} MB", met=load.rss_growth_kb < RSS_TARGET_MB * 1024),
        Row("4", "event loop: longest block (lag probe every 10 ms)", f"{load.max_lag_ms:.0f} ms",
            target=f"≤ {LAG_TARGET_MS} ms", met=load.max_lag_ms <= LAG_TARGET_MS),
    ]  # fmt: skip
