"""The provider emulator in its own process, with every provider request time-stamped.

Run by :class:`bench.lab.EmulatorProcess`; not a command for people. A separate process
keeps the emulator's work (serving polls, sending a 500 MB file) off the bench's own clock
and out of the server's. It prints its base URL on stdout, serves until its stdin closes,
and adds one route, ``GET /__bench/requests``: ``[[unix_time, path, query], ...]`` for
every request to a provider API (control and media routes excluded).

Every task's clip is a copy of one clip rendered at start-up, put in place when the task is
created. The emulator would otherwise render each clip on its first download, which at a
scaled clock adds emulated seconds to every delay that a real provider's ready file does not.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer
from kling_video_mcp.emulator.media import ClipSpec, render_clip
from kling_video_mcp.emulator.state import Emulator
from kling_video_mcp.emulator.tasks import Shot, Task

LOG_ROUTE = "/__bench/requests"
KEY = "bench-key"

Scope = dict[str, Any]


class StampedApp:
    """ASGI wrapper that records when each provider request arrived and serves the log."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stamps: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == LOG_ROUTE:
            await self._serve_log(send)
            return
        if scope["type"] == "http" and "/__fake/" not in scope["path"]:
            with self._lock:
                self.stamps.append((time.time(), scope["path"], scope["query_string"].decode()))
        await self.app(scope, receive, send)

    async def _serve_log(self, send: Any) -> None:
        with self._lock:
            body = json.dumps(self.stamps).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve_template_clips(emulator: Emulator, template: Path) -> None:
    """Make every new task's clip a copy of ``template``, ready before the task can succeed."""
    spec = ClipSpec([Shot("bench clip", 3.0)], 3, emulator.config.fps, 64, 36, sound=False)
    render_clip(spec, template)
    create_task = emulator.create_task

    @functools.wraps(create_task)
    async def create_with_clip(*args: Any, **kwargs: Any) -> Task:
        task = await create_task(*args, **kwargs)
        shutil.copyfile(template, emulator.store.clip_path(task.id))
        return task

    emulator.create_task = create_with_clip  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_proc")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--time-scale", type=float, required=True)
    parser.add_argument("--queue-seconds", type=float, default=1.0)
    parser.add_argument("--long-side", type=int, default=64, help="pixels of a rendered clip's long side")
    parser.add_argument("--fps", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    config = EmulatorConfig(
        time_scale=args.time_scale,
        queue_seconds=args.queue_seconds,
        state_dir=args.state_dir,
        valid_keys=frozenset({KEY}),
        video_long_side=args.long_side,
        fps=args.fps,
    )
    server = EmulatorServer(config)
    serve_template_clips(server.emulator, args.state_dir / "template.mp4")
    server.app = StampedApp(server.app)  # start() serves whatever app is set
    with server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # until the bench closes our stdin (or exits)


if __name__ == "__main__":
    main()
