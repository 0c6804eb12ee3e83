"""Command line: ``kling-video-mcp`` serves MCP; ``kling-video-mcp demo PROMPT`` shows it working.

Serving logs go to stderr only: on stdio, stdout carries the protocol.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kling_video_mcp import __version__

TRANSPORTS = ("stdio", "sse", "streamable-http")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-video-mcp",
        description="MCP server that makes videos with Kling v3.0 (Novita AI, HighwayAPI, WaveSpeedAI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio", help="default: stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="make one clip through the MCP server over stdio, as a client would",
        description="Start the server, connect with the MCP client over stdio, generate a clip, wait, print it.",
    )
    demo.add_argument("prompt", help="what the video shows")
    demo.add_argument("--image", help="animate this image (path or URL) instead of text to video")
    demo.add_argument("--provider", default="sandbox", choices=("sandbox", "novita", "highway", "wavespeed"))
    demo.add_argument("--mode", choices=("std", "pro", "4k"), help="default: the server's (KLING_MCP_MODE, 4k)")
    demo.add_argument("--duration", type=int, default=5, help="seconds, 3-15 (default 5)")
    demo.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this many seconds")
    return parser


def serve(transport: str, host: str, port: int) -> None:
    """Run the server on ``transport`` until it is stopped."""
    from kling_video_mcp.surface.server import build_server

    server = build_server()
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run(transport, host=host, port=port)  # type: ignore[call-overload]


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from kling_video_mcp.demo import run_demo

        sys.exit(run_demo(args))
    serve(args.transport, args.host, args.port)
