"""Figure 3: provider requests per task and success-to-disk delay, beside fixed-interval pollers.

The same tasks (render times spread evenly over a range, the providers in turn) are run
three times side by side on one emulator: by the server's adaptive watcher, and by two
naive pollers in this process that poll every 2 s and every 10 s. Every clock is scaled by
the same factor (the emulator's, the server's polling pace, the naive intervals and the
per-provider rate limit), so all three see the real-time world, only faster. Delays are
reported in that world's (emulated) seconds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2

from bench.lab import (
    FLAVORS, ClipWatcher, EmulatorProcess, Stamp, journal_records, provider_settings, render_prompt,
    server_command, server_env, spread, submit_all,
)  # fmt: skip
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import median
from bench.stdio_rpc import StdioServer, clean_env
from kling_video_mcp.config import Settings
from kling_video_mcp.models import GenerationRequest
from kling_video_mcp.providers import Providers
from kling_video_mcp.tasks.addresses import AddressPolicy
from kling_video_mcp.tasks.downloads import download

FIXED_INTERVALS = (2.0, 10.0)
"""Seconds (emulated) between the naive pollers' polls."""
REAL_RATE_LIMIT = Settings.model_fields["provider_rate_limit"].default
"""Requests per second per provider in the real world (the server's default)."""
MAX_CLIP_BYTES = Settings.model_fields["max_clip_bytes"].default


@dataclass(frozen=True)
class TaskRun:
    """One task as one poller ran it."""

    provider_task_id: str
    on_disk_at: float | None
    """Unix time its clip was on disk, ``None`` if it never was."""


@dataclass(frozen=True)
class PollerResult:
    name: str
    requests_per_task: float
    median_delay: float
    """Emulated seconds from the provider's success to the clip on disk."""
    delivered: int


async def fixed_poller(providers: Providers, client: httpx2.AsyncClient, index: int, render: float, interval: float, folder: Path) -> TaskRun:
    """Submit task ``index``, poll it every ``interval`` real seconds, then download its clip."""
    provider = FLAVORS[index % len(FLAVORS)]
    adapter = await providers.get(provider)
    request = GenerationRequest(provider=provider, mode="std", kind="t2v", prompt=render_prompt(index, render), duration=3)
    task_id = (await adapter.submit(request, {})).provider_task_id
    while True:
        await anyio.sleep(interval)
        update = await adapter.poll(task_id)
        if update.status == "failed":
            return TaskRun(task_id, None)
        if update.status == "succeeded" and update.video_url:
            await download(
                client, update.video_url, folder / f"{task_id}.mp4", deadline=600,
                policy=AddressPolicy("local"), max_bytes=MAX_CLIP_BYTES,
            )  # fmt: skip
            return TaskRun(task_id, time.time())


async def run_fixed(emulator: EmulatorProcess, work: Path, renders: list[float], interval: float) -> list[TaskRun]:
    runs: list[TaskRun] = []

    async def one(index: int, render: float) -> None:
        runs.append(await fixed_poller(providers, client, index, render, interval, work / "clips"))

    settings = provider_settings(emulator, work)
    async with httpx2.AsyncClient(timeout=60) as client:
        providers = Providers(settings, client)
        async with anyio.create_task_group() as group:
            for index, render in enumerate(renders):
                group.start_soon(one, index, render)
    return runs


async def run_adaptive(server: StdioServer, work: Path, renders: list[float], timeout: float) -> list[TaskRun]:
    watcher = ClipWatcher(work / "clips")
    await anyio.to_thread.run_sync(submit_all, server, renders)
    await watcher.until(len(renders), timeout)
    return [
        TaskRun(record["provider_task_id"], watcher.at(record["task_id"])) for record in journal_records(work / "state")
    ]


def summarise(name: str, runs: list[TaskRun], stamps: list[Stamp], emulator: EmulatorProcess, scale: float) -> PollerResult:
    polls = sum(1 for run in runs for stamp in stamps if stamp.concerns(run.provider_task_id))
    delays = [(run.on_disk_at - emulator.finished_at(run.provider_task_id)) / scale for run in runs if run.on_disk_at]
    return PollerResult(name, (len(runs) + polls) / len(runs), median(delays), len(delays))


async def measure(size: Size, work: Path) -> list[PollerResult]:
    scale = size.polling_time_scale
    renders = spread(size.polling_tasks, *size.polling_render)
    timeout = (1.0 + size.polling_render[1]) * scale * 2 + 30
    with EmulatorProcess(work / "emulator", scale) as emulator:
        env = server_env(emulator, work / "adaptive", scale, provider_rate_limit=str(REAL_RATE_LIMIT / scale))
        with StdioServer(server_command(), clean_env(env), stderr=work / "server.log") as server:
            results: dict[str, list[TaskRun]] = {}

            async def adaptive() -> None:
                results["adaptive"] = await run_adaptive(server, work / "adaptive", renders, timeout)

            async def fixed(interval: float) -> None:
                results[f"every {interval:g} s"] = await run_fixed(emulator, work / f"fixed-{interval:g}", renders, interval * scale)

            with anyio.fail_after(timeout + 60):
                async with anyio.create_task_group() as group:
                    group.start_soon(adaptive)
                    for interval in FIXED_INTERVALS:
                        group.start_soon(fixed, interval)
        stamps = emulator.stamps()
        return [summarise(name, runs, stamps, emulator, scale) for name, runs in results.items()]


def run(size: Size) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as scratch:
        results = {result.name: result for result in anyio.run(measure, size, Path(scratch))}
    ours, fast, slow = results["adaptive"], results["every 2 s"], results["every 10 s"]
    n = size.polling_tasks
    label = f"{n} tasks, {size.polling_render[0]:g}-{size.polling_render[1]:g} s renders"
    return [
        Row("3", f"provider requests per task ({label})", f"{ours.requests_per_task:.1f}",
            f"{slow.requests_per_task:.1f} (every 10 s)", ratio_text(ours.requests_per_task, slow.requests_per_task),
            "< every-10 s poller", ours.requests_per_task < slow.requests_per_task),
        Row("3", "provider requests per task, context", f"{ours.requests_per_task:.1f}",
            f"{fast.requests_per_task:.1f} (every 2 s)", ratio_text(ours.requests_per_task, fast.requests_per_task)),
        Row("3", "success → verified clip on disk, median", f"{ours.median_delay:.2f} s",
            f"{fast.median_delay:.2f} s (every 2 s)", ratio_text(ours.median_delay, fast.median_delay),
            "≤ every-2 s poller", ours.median_delay <= fast.median_delay),
        Row("3", "success → verified clip on disk, context", f"{ours.median_delay:.2f} s",
            f"{slow.median_delay:.2f} s (every 10 s)", ratio_text(ours.median_delay, slow.median_delay)),
        Row("3", "clips delivered", f"{ours.delivered}/{n}", f"{fast.delivered}/{n}, {slow.delivered}/{n}",
            target=f"{n}/{n}", met=min(ours.delivered, fast.delivered, slow.delivered) == n),
    ]  # fmt: skip
