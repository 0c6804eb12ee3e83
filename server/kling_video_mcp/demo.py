"""The demo: the whole job as a user sees it, through the real server over stdio.

It starts ``python -m kling_video_mcp`` as a subprocess (as Claude Desktop would), calls
``generate_video`` or ``animate_image``, polls ``check_task`` until the task is done, and
prints the finished clip's path and resource link. This is a command-line program, so it
prints to stdout; the server it starts never does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, ResourceLink


def _show(result: CallToolResult) -> dict:
    report = result.structured_content or {}
    status = report.get("status") or "error"
    progress = report.get("progress_percent")
    print(f"  {status}" + (f" ({progress:.0f}%)" if progress else ""), flush=True)
    return report


async def _demo(args: argparse.Namespace) -> int:
    # The server's per-request log lines would bury the demo's own few; warnings still show.
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "kling_video_mcp", "--log-level", "WARNING"], env=dict(os.environ)
    )
    arguments: dict[str, object] = {"prompt": args.prompt, "duration": args.duration, "provider": args.provider}
    if args.mode:
        arguments["mode"] = args.mode
    tool = "generate_video"
    if args.image:
        tool, arguments["image"] = "animate_image", args.image
    async with Client(server) as client:
        print(f"Calling {tool} on {args.provider} ...", flush=True)
        result = await client.call_tool(tool, arguments)
        report = _show(result)
        if result.is_error:
            print(f"Error: {report.get('message')}", file=sys.stderr)
            return 1
        task_id = report["task_id"]
        print(f"task_id {task_id}; estimated cost ${report.get('estimated_cost_usd', 0):.2f}", flush=True)
        deadline = time.monotonic() + args.timeout
        while report.get("status") not in ("succeeded", "failed") and time.monotonic() < deadline:
            await anyio.sleep(min(float(report.get("next_check_seconds") or 5), 15.0))
            result = await client.call_tool("check_task", {"task_id": task_id})
            report = _show(result)
    if report.get("status") != "succeeded":
        print(f"Not finished: {report.get('message')}", file=sys.stderr)
        return 1
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    print(f"Clip: {report['file_path']}")
    print(f"Resource link: {links[0].uri if links else report.get('file_uri')}")
    for note in report.get("notes", []):
        print(f"Note: {note}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code."""
    return anyio.run(_demo, args)
