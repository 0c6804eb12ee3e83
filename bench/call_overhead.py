"""Figure 2: latency of ``check_task`` on a finished task over stdio, beside a trivial tool."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.lab import BENCH_DIR, EmulatorProcess, arguments, server_command, server_env
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import percentile
from bench.stdio_rpc import StdioServer, clean_env

TARGET_P50_RATIO = 2.0
BLOCK = 100
"""Calls to one server before switching to the other, so drift hits both alike."""
WARM_UP_CALLS = 20
FINISH_TIMEOUT_SECONDS = 60.0


def finished_task(server: StdioServer) -> str:
    """Submit a task that renders at once and return its id once its clip is on disk."""
    task_id = server.call_tool("generate_video", dict(arguments(0, 0, "novita")))["task_id"]
    deadline = time.monotonic() + FINISH_TIMEOUT_SECONDS
    while server.call_tool("check_task", {"task_id": task_id}).get("status") != "succeeded":
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up task did not finish")
        time.sleep(0.05)
    return task_id


def timed_calls(server: StdioServer, tool: str, args: dict[str, str], count: int) -> list[float]:
    """Seconds per ``tools/call`` round trip, ``count`` calls in a row."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        server.call_tool(tool, args)
        times.append(time.perf_counter() - started)
    return times


def run(size: Size) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as scratch:
        work = Path(scratch)
        with (
            EmulatorProcess(work / "emulator", time_scale=0.01) as emulator,
            StdioServer(server_command(), clean_env(server_env(emulator, work, 0.01)), stderr=work / "server.log") as ours,
            StdioServer([sys.executable, str(BENCH_DIR / "floor_server.py")], clean_env()) as floor,
        ):
            task = {"task_id": finished_task(ours)}
            timed_calls(ours, "check_task", task, WARM_UP_CALLS), timed_calls(floor, "ping", task, WARM_UP_CALLS)
            our_times: list[float] = []
            floor_times: list[float] = []
            for start in range(0, size.calls, BLOCK):
                count = min(BLOCK, size.calls - start)
                our_times += timed_calls(ours, "check_task", task, count)
                floor_times += timed_calls(floor, "ping", task, count)
    rows = []
    for label, fraction, target in (("p50", 0.5, TARGET_P50_RATIO), ("p99", 0.99, None)):
        mine, base = percentile(our_times, fraction), percentile(floor_times, fraction)
        rows.append(
            Row(
                "2", f"`check_task` (finished task) {label}, {size.calls} calls",
                f"{mine * 1000:.2f} ms", f"{base * 1000:.2f} ms (trivial tool)", ratio_text(mine, base),
                f"≤ {target:g}×" if target else "—", mine <= target * base if target else None,
            )
        )  # fmt: skip
    return rows
