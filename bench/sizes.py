"""How big each benchmark is: ``full`` (the issue's sizes, minutes) and ``smoke`` (seconds, for CI)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Size:
    name: str
    cold_starts: int
    """Process starts of each server (after one warm-up start each that caches bytecode)."""
    calls: int
    """``check_task`` calls, and as many calls to the floor's trivial tool."""
    polling_tasks: int
    polling_render: tuple[float, float]
    """Render seconds (emulated) of the polling tasks, spread evenly between these two."""
    polling_time_scale: float
    concurrent_tasks: int
    concurrent_render: tuple[float, float]
    concurrent_time_scale: float
    download_mb: int
    """Size of the clip the download benchmark moves, in MB (10^6 bytes)."""
    download_rounds: int
    """Downloads of each kind (ours, bare), alternated."""
    scale_tasks: int
    """Tasks each worker setup of figure 6 runs."""
    scale_render: tuple[float, float]
    """Render seconds (emulated) of figure 6's tasks."""
    wake_ups: int
    """Cross-worker wake-ups measured."""


FULL = Size(
    name="full",
    cold_starts=10,
    calls=1000,
    polling_tasks=50,
    polling_render=(30.0, 300.0),
    polling_time_scale=0.1,
    concurrent_tasks=300,
    concurrent_render=(60.0, 180.0),
    concurrent_time_scale=0.1,
    download_mb=500,
    download_rounds=5,
    scale_tasks=12,
    scale_render=(30.0, 120.0),
    wake_ups=10,
)

SMOKE = replace(
    FULL,
    name="smoke",
    cold_starts=1,
    calls=20,
    polling_tasks=3,
    polling_render=(3.0, 6.0),
    concurrent_tasks=6,
    concurrent_render=(3.0, 6.0),
    download_mb=4,
    download_rounds=1,
    scale_tasks=3,
    scale_render=(3.0, 6.0),
    wake_ups=2,
)
"""Every figure at a size that runs in seconds: proves the suite works, measures nothing."""

SIZES = {size.name: size for size in (FULL, SMOKE)}
