"""What every benchmark needs: the emulator process, the server's command and settings, RSS.

Times are ``time.time()`` (unix seconds) wherever they are compared with the emulator's
task clock, which is wall-clock time too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from bench.emulator_proc import KEY
from bench.stdio_rpc import StdioServer
from kling_video_mcp.config import Settings

FLAVORS = ("novita", "highway", "wavespeed")
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Stamp:
    """One provider request as the emulator received it."""

    at: float
    """Unix seconds."""
    flavor: str
    path: str
    """Path within the flavor, e.g. ``/v3/async/task-result``."""
    query: str

    def concerns(self, provider_task_id: str) -> bool:
        """Whether the request names this task (a poll); submits are counted separately."""
        return provider_task_id in self.path or provider_task_id in self.query

    @property
    def is_submit(self) -> bool:
        return self.path.startswith(("/v3/async/kling", "/api/v3/kwaivgi/"))


class EmulatorProcess:
    """``bench.emulator_proc`` as a child process: ``with EmulatorProcess(state_dir, scale) as emu:``."""

    def __init__(self, state_dir: Path, time_scale: float, *, queue_seconds: float = 1.0) -> None:
        self.state_dir = state_dir
        self.time_scale = time_scale
        self.queue_seconds = queue_seconds
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "bench.emulator_proc", "--state-dir", str(self.state_dir),
            "--time-scale", str(self.time_scale), "--queue-seconds", str(self.queue_seconds),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self.__exit__(None, None, None)
            raise RuntimeError("the emulator process did not start")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def url(self, flavor: str) -> str:
        return f"{self.base_url}/{flavor}"

    def stamps(self) -> list[Stamp]:
        """Every provider request so far, oldest first."""
        with urllib.request.urlopen(f"{self.base_url}/__bench/requests", timeout=30) as answer:  # noqa: S310 - loopback
            rows = json.load(answer)
        stamps = []
        for at, path, query in rows:
            _, flavor, rest = path.split("/", 2)
            stamps.append(Stamp(at=at, flavor=flavor, path="/" + rest, query=query))
        return stamps

    def finished_at(self, provider_task_id: str) -> float:
        """Unix time at which the emulator's task turned ``succeeded`` (its task clock)."""
        task = json.loads((self.state_dir / "tasks" / f"{provider_task_id}.json").read_text())
        return float(task["forced_at"] if task.get("forced_at") is not None else task["starts_at"] + task["run_seconds"])

    def clip_path(self, provider_task_id: str) -> Path:
        """Where the emulator keeps (or will render) a task's clip; a file put here is served as the clip."""
        return self.state_dir / "clips" / f"{provider_task_id}.mp4"


def provider_settings(emulator: EmulatorProcess, work: Path) -> Settings:
    """Settings for driving the provider adapters directly from the bench: no rate gate of their own."""
    return Settings(
        provider_keys={"NOVITA_API_KEY": KEY, "HIGHWAY_API_KEY": KEY, "WAVESPEED_API_KEY": KEY},
        provider_settings={name.upper() + "_BASE_URL": emulator.url(name) for name in ("novita", "highway", "wavespeed")},
        output_dir=work / "clips", state_dir=work / "state", provider_rate_limit=1e6,
    )  # fmt: skip


def server_command() -> list[str]:
    """The installed ``kling-video-mcp`` console script (as Claude Desktop runs it)."""
    beside = Path(sys.executable).parent / "kling-video-mcp"
    found = str(beside) if beside.exists() else shutil.which("kling-video-mcp")
    return [found] if found else [sys.executable, "-m", "kling_video_mcp"]


def server_env(emulator: EmulatorProcess, work: Path, time_scale: float, **settings: str) -> dict[str, str]:
    """Environment for a server using the emulator's three providers, with clips under ``work``.

    ``settings`` are extra ``KLING_MCP_*`` values, by lower-case name without the prefix.
    """
    env = {
        "NOVITA_API_KEY": KEY, "HIGHWAY_API_KEY": KEY, "WAVESPEED_API_KEY": KEY,
        "NOVITA_BASE_URL": emulator.url("novita"), "HIGHWAY_BASE_URL": emulator.url("highway"),
        "WAVESPEED_BASE_URL": emulator.url("wavespeed"),
        "KLING_MCP_PROVIDER": "novita", "KLING_MCP_MODE": "std",
        "KLING_MCP_OUTPUT_DIR": str(work / "clips"), "KLING_MCP_STATE_DIR": str(work / "state"),
        "KLING_MCP_POLL_TIME_SCALE": str(time_scale),
    }  # fmt: skip
    env.update({f"KLING_MCP_{name.upper()}": value for name, value in settings.items()})
    return env


def proc_status_kb(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; 0 if unavailable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def render_prompt(index: int, render_seconds: float) -> str:
    """A prompt that renders for ``render_seconds`` (emulated) and is unique, so no request is a duplicate."""
    return f"bench clip {index} [[render:{render_seconds:g}]]"


def arguments(index: int, render_seconds: float, provider: str) -> Mapping[str, object]:
    """``generate_video`` arguments for one bench task."""
    return {"prompt": render_prompt(index, render_seconds), "duration": 3, "mode": "std", "provider": provider}


def journal_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every task record in a server's journal (read-only: the server may still be running)."""
    path = state_dir / "tasks.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT record FROM tasks")]


class ClipWatcher:
    """Notes when each finished clip appears in an output folder (its final name, after the rename).

    A clip's file name ends in ``_<first 12 characters of the task id>.mp4``.
    """

    SCAN_SECONDS = 0.005

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[str, float] = {}
        """Task id head -> unix time the clip was first seen."""

    def scan(self) -> None:
        if not self.folder.is_dir():
            return
        now = time.time()
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".mp4"):
                self.seen.setdefault(entry.name[-16:-4], now)

    async def until(self, count: int, timeout: float) -> bool:
        """Scan until ``count`` clips are seen or ``timeout`` seconds pass; ``True`` if all came."""
        with anyio.move_on_after(timeout):
            while len(self.seen) < count:
                self.scan()
                await anyio.sleep(self.SCAN_SECONDS)
        return len(self.seen) >= count

    def at(self, task_id: str) -> float | None:
        return self.seen.get(task_id[:12])


def spread(count: int, low: float, high: float) -> list[float]:
    """``count`` values evenly from ``low`` to ``high`` (both included)."""
    if count == 1:
        return [low]
    return [low + (high - low) * index / (count - 1) for index in range(count)]


def submit_all(server: StdioServer, renders: Sequence[float], first_index: int = 0) -> list[str]:
    """Submit one task per render time, round-robin over the providers; returns our task ids."""
    return [
        server.call_tool("generate_video", dict(arguments(index, render, FLAVORS[index % len(FLAVORS)])))["task_id"]
        for index, render in enumerate(renders, start=first_index)
    ]
