"""Small test helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import anyio
from mcp import Client
from mcp.types import CallToolResult

FLAVORS = ("novita", "highway", "wavespeed")


async def wait_done(client: Client, task_id: str, timeout: float = 30.0) -> CallToolResult:
    """Call check_task until the task succeeded or failed."""
    with anyio.fail_after(timeout):
        while True:
            result = await client.call_tool("check_task", {"task_id": task_id})
            if (result.structured_content or {}).get("status") in ("succeeded", "failed"):
                return result
            await anyio.sleep(0.05)


def clip_duration(path: str | Path) -> float:
    """Duration in seconds of a video file, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.frames / stream.average_rate) if stream.frames else float(container.duration / av.time_base)


def clip_size(path: str | Path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def submits(emulator, flavor: str) -> list[dict]:
    """Recorded POSTs that create tasks (not uploads or control calls)."""
    return [
        r for r in emulator.requests(flavor)
        if r["method"] == "POST" and ("/v3/async/" in r["path"] or "/kwaivgi/" in r["path"])
    ]


def submit_count(emulator) -> int:
    """Task-creating POSTs on every provider: what "nothing was sent" counts while other tasks poll."""
    return sum(len(submits(emulator, flavor)) for flavor in FLAVORS)


def total_requests(emulator) -> int:
    return sum(len(emulator.requests(flavor)) for flavor in FLAVORS)
