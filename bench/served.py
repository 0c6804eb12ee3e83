"""The stdio server as ``kling-video-mcp`` runs it, plus a probe of its event loop's lag.

``python -m bench.served LAG_FILE`` builds the server exactly as the console script does
and serves it on stdio, with :class:`LoopLag` running inside the same event loop. On exit
(stdin closed) it writes the lag figures to ``LAG_FILE`` as JSON. Used by the concurrency
benchmark; nothing here is printed (stdout is the protocol).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import anyio

from kling_video_mcp.surface.server import build_server

PROBE_SECONDS = 0.01
"""How often the probe asks for the loop: it notices any block longer than this."""


class LoopLag:
    """Sleeps ``PROBE_SECONDS`` at a time and records how late each wake-up is.

    A wake-up is late by as long as the loop was busy with something else when the timer
    fell due, so the largest lateness bounds the longest the loop was blocked.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.max_seconds = 0.0
        self.over_50ms = 0

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + PROBE_SECONDS
            await anyio.sleep(PROBE_SECONDS)
            late = time.perf_counter() - due
            self.samples += 1
            self.max_seconds = max(self.max_seconds, late)
            self.over_50ms += late > 0.05

    def report(self) -> dict[str, float]:
        return {"samples": self.samples, "max_ms": self.max_seconds * 1000, "over_50ms": self.over_50ms}


async def serve(lag_file: Path) -> None:
    probe = LoopLag()
    server = build_server()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(probe.run)
            await server.run_stdio_async()
            group.cancel_scope.cancel()
    finally:
        lag_file.write_text(json.dumps(probe.report()))


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    anyio.run(serve, Path(sys.argv[1]))


if __name__ == "__main__":
    main()
