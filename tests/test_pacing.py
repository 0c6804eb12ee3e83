"""Poll pacing (``tasks/watcher.py``: :class:`Pace`, :func:`next_poll_delay`): pure functions, no server.

Rare polls early in a render, dense ones near its expected end, one landing as it ends; steady
polls that back off gently once it is overdue; only a safety net while a webhook is expected.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from kling_video_mcp.models import GenerationRequest, TaskRecord, utcnow
from kling_video_mcp.tasks.watcher import Pace, next_poll_delay

PACE = Pace(expected_seconds=300.0, min_interval=2.0, max_interval=30.0)


def record(*, age: float = 0.0, **fields) -> TaskRecord:
    """A 4K task submitted ``age`` seconds ago."""
    request = GenerationRequest(provider="novita", mode="4k", kind="t2v", prompt="x")
    return TaskRecord(
        task_id="t", provider="novita", mode="4k", kind="t2v", endpoint="e", request=request, fingerprint="f",
        created_at=utcnow() - timedelta(seconds=age), **fields,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("age", "delay"),
    [
        (0, 30.0),  # 300 s left: half is 150, capped at the longest pause
        (250, 25.0),  # 50 s left: half of it
        (297, 3.0),  # 3 s left, within two minimum intervals: exactly what is left, to land at the end
        (299.5, 2.0),  # less than the minimum interval left: never faster than the minimum
        (310, 2.0),  # 10 s overdue: a tenth of it, but at least the minimum
        (400, 10.0),  # 100 s overdue: backs off gently
        (900, 30.0),  # far overdue: never slower than the longest pause
    ],
)
def test_polls_are_rare_early_dense_near_the_end_and_steady_when_overdue(age, delay):
    assert next_poll_delay(record(age=age, status="running"), PACE) == pytest.approx(delay, abs=0.1)


def test_a_finished_render_is_fetched_at_once():
    assert next_poll_delay(record(age=10, status="succeeded"), PACE) == 0.0


def test_the_providers_eta_wins_and_is_scaled_to_our_clock():
    scaled = Pace(expected_seconds=300.0, min_interval=0.1, max_interval=30.0, time_scale=0.1)
    assert scaled.remaining(record(status="running", eta_seconds=40)) == pytest.approx(4.0)
    assert next_poll_delay(record(status="running", eta_seconds=40), scaled) == pytest.approx(2.0)


def test_without_eta_the_progress_estimates_what_is_left():
    running = record(age=100, status="running", progress_percent=50.0, eta_seconds=0, running_since=utcnow() - timedelta(seconds=40))
    assert PACE.remaining(running) == pytest.approx(40.0, abs=0.5)  # 40 s at 50 %: as long again
    first_poll = record(age=20, status="running", progress_percent=80.0)  # not yet seen running: from submission
    assert PACE.remaining(first_poll) == pytest.approx(5.0, abs=0.5)


def test_progress_outside_0_to_100_falls_back_to_the_usual_time():
    for percent in (0.0, 100.0, None):
        assert PACE.remaining(record(age=100, status="running", progress_percent=percent)) == pytest.approx(200.0, abs=0.5)
    assert PACE.remaining(record(age=100, status="queued", progress_percent=50.0)) == pytest.approx(200.0, abs=0.5)


def test_with_a_webhook_polls_are_only_a_safety_net():
    hooked = Pace(expected_seconds=90.0, min_interval=2.0, max_interval=30.0, webhook=True)
    assert next_poll_delay(record(age=50, status="running"), hooked) == pytest.approx(40 + 45, abs=0.1)
    assert next_poll_delay(record(age=500, status="running"), hooked) == pytest.approx(45, abs=0.1)
    assert next_poll_delay(record(age=500, status="succeeded"), hooked) == 0.0
