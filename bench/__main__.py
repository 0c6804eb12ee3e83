"""``python -m bench [--size full|smoke] [--output FILE] [--only N,...]``: run the suite.

Prints the table and writes it, with the machine's CPU count, Python version and date, to
BENCHMARKS.md (or ``--output``). ``full`` takes minutes; ``smoke`` takes seconds and is
what the test suite runs. Run it from the repository root with the project installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import assembly, call_overhead, cold_start, concurrency, download, polling, scale_out, waiting
from bench.report import Row, document, table, write
from bench.sizes import SIZES, Size

FIGURES: dict[str, Callable[[Size], list[Row]]] = {
    "1": cold_start.run,
    "2": call_overhead.run,
    "3": polling.run,
    "4": concurrency.run,
    "5": download.run,
    "6": waiting.run,
    "7": assembly.run,
    "8": scale_out.run,
}

SETUP = [
    "The emulator runs in a process of its own (`bench/emulator_proc.py`) and time-stamps every provider "
    "request; each task's clip is ready when the task is created, as a real provider's file is.",
    "Servers run as the installed `kling-video-mcp` console script over stdio, spoken to with bare "
    "newline-delimited JSON-RPC (2025-11-25 `initialize` handshake), so the client adds almost nothing. "
    "The floor is `bench/floor_server.py`: a minimal `MCPServer` with one trivial async tool.",
    "1: one warm-up start of each server (it caches bytecode, as an installed package has), then starts "
    "alternated between the two; the figure is spawn to the `tools/list` answer.",
    "2: one finished task; `check_task` and the trivial tool called in alternating blocks of 100, one at a time.",
    "3: the emulator clock, the server's polling pace (`KLING_MCP_POLL_TIME_SCALE`), the naive pollers' "
    "intervals and the per-provider rate limit (5/s real) are all scaled by the same factor (0.1), and delays "
    "are given in emulated seconds. The naive pollers use the server's own provider adapters and downloader. "
    "Requests are counted at the emulator (submit + polls); a clip is on disk when its final name appears "
    "in the output folder (scanned every 5 ms); success is the emulator task's end on its clock.",
    "4: `bench/served.py` is the real server plus a probe that sleeps 10 ms at a time in its event loop "
    "and records the lateness; RSS is sampled every 50 ms from /proc, its growth taken over the RSS after "
    "a warm-up task; rates are counted at the emulator over sliding one-second windows.",
    "5: every download runs in a fresh process (`bench/download_probe.py`), ours and the bare stream "
    "alternated; the emulator serves the file through a task's normal result URL.",
    "6: two servers on one emulator, scaled as in 3. One runs figure 3's workload with nobody waiting; the other "
    "is a waiting client: each task submitted, then `check_task(wait_seconds=50)` called until it succeeded, one "
    "task after another. Success and clip on disk are timed as in 3; the baseline of requests per task is "
    "figure 3's value before waiting clients were polled faster (2026-11-21).",
    "7: one 10 s 1080p H.264 + AAC clip of FFmpeg's `testsrc2` pattern (libx264 veryfast, crf 18), copied to six "
    "files; `media.assembly.join` (what the server runs on its worker thread) alternated in one process with a bare "
    "PyAV demux of the same packets (stream copy) or a bare decode + encode with the same libx264 settings "
    "(crossfades); speeds are film seconds per wall-clock second.",
    "8: `--stateless` HTTP workers on one PostgreSQL server started for the run (fresh database per setup), "
    "emulator clock at 0.1; nobody calls `check_task` while tasks render, so only the watchers poll; requests "
    "are counted at the emulator (submits and polls); with webhooks every worker's `KLING_MCP_PUBLIC_URL` "
    "names the first worker. Wake-ups: a `check_task(wait_seconds=50)` on a worker not holding the lease, "
    "from the `NOTIFY` of the save that journaled the clip, as this process received it.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--only", help="comma-separated figure numbers (default: all)")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    chosen = args.only.split(",") if args.only else list(FIGURES)
    started = time.monotonic()
    rows: list[Row] = []
    for number in chosen:
        print(f"figure {number} ...", file=sys.stderr, flush=True)
        rows += FIGURES[number](size)
    seconds = time.monotonic() - started
    command = "python -m bench" + ("" if size.name == "full" else f" --size {size.name}")
    print(table(rows))
    write(args.output, document(rows, size.name, command, seconds, SETUP))
    return 0


if __name__ == "__main__":
    sys.exit(main())
