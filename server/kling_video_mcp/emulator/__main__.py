"""Command line: ``python -m kling_video_mcp.emulator [--host H] [--port P] [--time-scale S] [--state-dir DIR]``.

Serves the emulator in the foreground until interrupted. Logs go to stderr;
nothing is written to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .config import EmulatorConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m kling_video_mcp.emulator",
        description="Serve the Kling v3.0 provider emulator: every flavor (/novita ... /replicate) on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument(
        "--time-scale", type=float, default=defaults.time_scale, help="multiplies queue and render times"
    )
    parser.add_argument("--queue-seconds", type=float, default=defaults.queue_seconds)
    parser.add_argument("--run-seconds", type=float, default=defaults.run_seconds)
    parser.add_argument("--state-dir", type=Path, default=None, help="persist tasks, uploads and clips here")
    parser.add_argument(
        "--key", action="append", dest="keys", help="a valid API key (repeatable; default: test-key, sandbox)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = EmulatorConfig(
        time_scale=args.time_scale,
        queue_seconds=args.queue_seconds,
        run_seconds=args.run_seconds,
        state_dir=args.state_dir,
        **({"valid_keys": frozenset(args.keys)} if args.keys else {}),
    )
    # log_config=None keeps uvicorn from installing its stdout access-log handler; records reach stderr via root.
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_config=None, log_level=args.log_level)


if __name__ == "__main__":
    main()
