"""Whether the tool call being served runs as an MCP task: set around the call, read by the tools.

A call run as a task returns at once, so it must not stop to ask a person anything: a spend
that needs their yes is parked instead, and asked through the task (``tasks/get`` input
requests, or ``tasks/result`` in 2025-11-25). Kept outside ``surface/mcp_tasks``, which imports
the tools, so the tools can read it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_RUNNING_AS_TASK: ContextVar[bool] = ContextVar("kling_video_mcp_running_as_task", default=False)


def running_as_task() -> bool:
    """``True`` inside a tool call that is answered with an MCP task."""
    return _RUNNING_AS_TASK.get()


@contextmanager
def as_task() -> Iterator[None]:
    """Run the tool call inside as an MCP task (see :func:`running_as_task`)."""
    token = _RUNNING_AS_TASK.set(True)
    try:
        yield
    finally:
        _RUNNING_AS_TASK.reset(token)
