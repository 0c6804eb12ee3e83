"""Small test helpers shared by several test modules."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp import Client
from mcp.types import CallToolResult

FLAVORS = ("novita", "highway", "wavespeed")
T = TypeVar("T")


def _failure(what: str | Callable[[], str], timeout: float, last: object) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"not within {timeout} s: {said} (the last check gave {repr(last)[:1000]})")


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Call ``probe`` (a plain or async function) every ``interval`` seconds until ``until`` of
    its value is true, and return that value. The one poll-and-sleep loop of the tests.

    Raises:
        AssertionError: not so within ``timeout`` seconds; the message names ``what`` (a string,
            or a function making one, e.g. to add a server's log) and the last value seen.
    """
    last: Any = None
    with anyio.move_on_after(timeout):
        while True:
            value = probe()
            last = await value if inspect.isawaitable(value) else value
            if until(last):
                return last
            await anyio.sleep(interval)
    raise _failure(what, timeout, last)


def eventually_sync(
    probe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """:func:`eventually` for code outside an event loop (subprocesses, plain HTTP, a database)."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if until(last):
            return last
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        time.sleep(interval)


async def wait_done(client: Client, task_id: str, timeout: float = 30.0) -> CallToolResult:
    """Call check_task until the task succeeded or failed."""
    return await eventually(
        lambda: client.call_tool("check_task", {"task_id": task_id}),
        lambda result: (result.structured_content or {}).get("status") in ("succeeded", "failed"),
        timeout=timeout, what=f"task {task_id} succeeded or failed",
    )  # fmt: skip


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
