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
NOTE_MS = 5.0
MAX_NOTES = 100_000


class LoopLag:
    """Sleeps ``PROBE_SECONDS`` at a time and records how late each wake-up is.

    A wake-up is late by as long as the loop was busy with something else when the timer
    fell due, so the largest lateness bounds the longest the loop was blocked. Late
    wake-ups are kept with their unix time, so the bench can look at its load alone
    (server start-up blocks the loop too, before any request, and is not the question).
    """

    def __init__(self) -> None:
        self.samples = 0
        self.late: list[tuple[float, float]] = []
        """``(unix time, lateness in ms)`` of wake-ups later than ``NOTE_MS``, at most ``MAX_NOTES``."""

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + PROBE_SECONDS
            await anyio.sleep(PROBE_SECONDS)
            late_ms = (time.perf_counter() - due) * 1000
            self.samples += 1
            if late_ms > NOTE_MS and len(self.late) < MAX_NOTES:
                self.late.append((time.time(), late_ms))

    def report(self) -> dict[str, object]:
        return {"samples": self.samples, "late": self.late}


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
