"""The rate gate (``providers/http.py``: :class:`RateGate`): requests at least ``1 / rate`` seconds apart.

A leaky bucket without bursts: the first request goes at once, concurrent ones queue and leave one
interval apart, and requests that fell behind (an event loop that stalled) do not then go all
at once. Measured with anyio's clock; only lower bounds are asserted (a loaded machine is slower,
never faster).
"""

from __future__ import annotations

import time

import anyio
import pytest

from kling_video_mcp.providers.http import Gate, RateGate

pytestmark = pytest.mark.anyio

RATE = 20.0
INTERVAL = 1 / RATE
SLACK = 0.005
"""anyio's clock and the loop's timers may round a sleep down by a few milliseconds."""


def gaps(moments: list[float]) -> list[float]:
    ordered = sorted(moments)
    return [later - earlier for earlier, later in zip(ordered, ordered[1:])]


async def test_the_first_request_goes_at_once():
    gate = RateGate(RATE)
    started = anyio.current_time()
    await gate.wait()
    assert anyio.current_time() - started < INTERVAL


async def concurrent(gate: Gate, count: int, *, stall: float = 0.0) -> list[float]:
    """When each of ``count`` requests sent at once went through ``gate``; with ``stall``, the
    event loop is blocked that long once they are all queued."""
    went: list[float] = []

    async def request() -> None:
        await gate.wait()
        went.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(request)
        if stall:
            await anyio.sleep(0)  # every request is queued at the gate
            time.sleep(stall)
    return went


async def test_concurrent_requests_leave_one_interval_apart():
    went = await concurrent(RateGate(RATE), 6)
    assert len(went) == 6 and min(gaps(went)) >= INTERVAL - SLACK


async def test_requests_that_fell_behind_do_not_go_in_a_burst():
    went = await concurrent(RateGate(RATE), 4, stall=4 * INTERVAL)  # past all their turns
    assert len(went) == 4 and min(gaps(went)) >= INTERVAL - SLACK


async def test_an_idle_gate_lets_the_next_request_go_at_once_but_not_two():
    gate = RateGate(RATE)
    await gate.wait()
    await anyio.sleep(3 * INTERVAL)
    started = anyio.current_time()
    await gate.wait()
    first = anyio.current_time()
    await gate.wait()
    assert first - started < INTERVAL and anyio.current_time() - first >= INTERVAL - SLACK
