"""Command line: ``kling-video-mcp`` serves MCP; ``kling-video-mcp demo PROMPT`` shows it working;
``kling-video-mcp doctor`` checks keys, folders and versions without spending anything.

Serving logs go to stderr only: on stdio, stdout carries the protocol.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kling_video_mcp import __version__

if TYPE_CHECKING:
    from kling_video_mcp.config import Settings

TRANSPORTS = ("stdio", "sse", "streamable-http")


def _parser() -> argparse.ArgumentParser:
    from kling_video_mcp.providers import PROVIDER_NAMES, PROVIDERS  # what serving imports anyway

    parser = argparse.ArgumentParser(
        prog="kling-video-mcp",
        description=f"MCP server that makes videos with Kling v3.0 ({', '.join(p.label for p in PROVIDERS if not p.makes_placeholders)}).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio", help="default: stdio")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="HTTP bind address (default: 127.0.0.1); any other needs KLING_MCP_HTTP_TOKEN set",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument(
        "--stateless", action="store_true",
        help="streamable HTTP without sessions, for several workers behind a load balancer",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="make one clip through the MCP server over stdio, as a client would",
        description="Start the server, connect with the MCP client over stdio, generate a clip, wait, print it.",
    )
    demo.add_argument("prompt", help="what the video shows")
    demo.add_argument("--image", help="animate this image (path or URL) instead of text to video")
    free = next(provider.name for provider in PROVIDERS if provider.makes_placeholders)
    demo.add_argument("--provider", default=free, choices=PROVIDER_NAMES, help=f"who renders (default {free}: free placeholder clips)")
    demo.add_argument("--mode", choices=("std", "pro", "4k"), help="default: the server's (KLING_MCP_MODE, 4k)")
    demo.add_argument("--duration", type=int, default=5, help="seconds, 3-15 (default 5)")
    demo.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this many seconds")
    commands.add_parser(
        "doctor",
        help="check the setup: keys (without spending), folders, versions",
        description="Check each configured provider key without spending anything, the default provider and "
        "mode, whether the output and state folders are writable, and the versions in use. Exits 1 on a problem.",
    )
    return parser


def read_settings() -> Settings:
    """The settings from the environment; exits with the broken rules (never the values, which
    may hold secrets) when they are invalid."""
    from pydantic import ValidationError

    from kling_video_mcp.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        sys.exit(f"kling-video-mcp: invalid configuration: {problems}")


def doctor() -> int:
    """Run ``kling-video-mcp doctor``; returns its exit status."""
    from kling_video_mcp.doctor import run_doctor

    return run_doctor(read_settings(), sys.stdout)


def serve_stdio() -> None:
    """Run the server on stdio until the client closes it."""
    from kling_video_mcp.surface.server import build_server, settle_heap

    server = build_server(read_settings())
    settle_heap()
    server.run("stdio")


def serve_http(args: argparse.Namespace) -> None:
    """Run the HTTP server until it is stopped; exits with a message when it must not start."""
    from kling_video_mcp.surface import http

    config = http.HttpConfig(transport=args.transport, host=args.host, port=args.port, stateless=args.stateless)
    try:
        http.serve_http(read_settings(), config)
    except http.StartRefused as exc:
        sys.exit(f"kling-video-mcp: {exc}")


def main(argv: Sequence[str] | None = None) -> None:
    # Start-up builds long-lived objects (the SDK, pydantic schemas, the tools): collecting
    # while they are built costs about 50 ms of cold start and finds almost no garbage. A
    # server turns collection back on once built (settle_heap); the other commands at once.
    gc.disable()
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.stateless and args.transport != "streamable-http":
            parser.error("--stateless applies to --transport streamable-http only (stdio and SSE connections are sessions)")
    except SystemExit:  # --help, --version or a usage error: nothing runs
        gc.enable()
        raise
    if args.command is not None:
        gc.enable()
    # The doctor's report is its output; request logs would only bury it.
    level = "WARNING" if args.command == "doctor" and args.log_level == "INFO" else args.log_level
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "doctor":
        sys.exit(doctor())
    if args.command == "demo":
        from kling_video_mcp.demo import run_demo

        sys.exit(run_demo(args))
    if args.transport == "stdio":
        serve_stdio()
    else:
        serve_http(args)
