"""Figure 1: process start to the first ``tools/list`` answer over stdio, beside the floor."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.lab import BENCH_DIR, server_command
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import median
from bench.stdio_rpc import StdioServer, clean_env

TARGET_RATIO = 1.25  # within 1.25x of a bare MCPServer


def time_to_tools(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``command`` to its answer to ``tools/list`` (after ``initialize``)."""
    server = StdioServer(command, env).spawn()
    try:
        server.handshake()
        tools = server.request("tools/list")
        elapsed = time.perf_counter() - server.started_at
        assert tools.get("tools"), "the server listed no tools"
        return elapsed
    finally:
        server.close()


def run(size: Size) -> list[Row]:
    floor = [sys.executable, str(BENCH_DIR / "floor_server.py")]
    ours = server_command()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as work:
        # A first-time user's setup: no keys (sandbox default, never started), own folders.
        env = clean_env({"KLING_MCP_OUTPUT_DIR": str(Path(work) / "clips"), "KLING_MCP_STATE_DIR": str(Path(work) / "state")})
        if size.cold_starts > 1:
            time_to_tools(floor, env), time_to_tools(ours, env)  # warm-up: writes the bytecode caches
        floor_times, our_times = [], []
        for _ in range(size.cold_starts):  # alternated, so drift hits both alike
            floor_times.append(time_to_tools(floor, env))
            our_times.append(time_to_tools(ours, env))
    ours_s, floor_s = median(our_times), median(floor_times)
    return [
        Row(
            "1", f"cold start to `tools/list`, median of {size.cold_starts}",
            f"{ours_s * 1000:.0f} ms", f"{floor_s * 1000:.0f} ms (minimal MCPServer)",
            ratio_text(ours_s, floor_s), f"≤ {TARGET_RATIO}×", ours_s <= TARGET_RATIO * floor_s,
        )
    ]  # fmt: skip
