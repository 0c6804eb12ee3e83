"""Figure 5: a large clip from the emulator's media route, beside a bare httpx2 stream.

The clip is a file of the chosen size (random bytes; only its size matters) put where the
emulator keeps a task's rendered clip, so the task's normal result URL serves it. Each
download runs in a fresh process (``bench.download_probe``), ours and the bare stream in
turn, and the medians are compared. The file lives in a temporary folder, deleted after.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import httpx2

from bench.lab import REPO_DIR, EmulatorProcess, provider_settings, render_prompt
from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import median
from kling_video_mcp.models import GenerationRequest
from kling_video_mcp.providers import Providers

THROUGHPUT_TARGET = 0.8
RSS_TARGET_MB = 32
PROBE_TIMEOUT_SECONDS = 600
MB = 1_000_000


def write_big_file(path: Path, size: int) -> str:
    """Write ``size`` incompressible bytes to ``path``; returns their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = (written.to_bytes(8, "big") + block)[: min(len(block), size - written)]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


async def result_url(emulator: EmulatorProcess, work: Path) -> tuple[str, str]:
    """Submit a task that renders at once; returns its provider task id and result URL."""
    async with httpx2.AsyncClient(timeout=60) as client:
        adapter = await Providers(provider_settings(emulator, work), client).get("novita")
        request = GenerationRequest(provider="novita", mode="std", kind="t2v", prompt=render_prompt(0, 0), duration=3)
        task_id = (await adapter.submit(request, {})).provider_task_id
        update = await adapter.poll(task_id)
    if not update.video_url:
        raise RuntimeError("the emulator gave no result URL")
    return task_id, update.video_url


def probe(kind: str, url: str, destination: Path) -> dict[str, float | str]:
    run = subprocess.run(
        [sys.executable, "-m", "bench.download_probe", kind, url, str(destination)],
        capture_output=True, text=True, check=True, cwd=REPO_DIR, timeout=PROBE_TIMEOUT_SECONDS,
    )  # fmt: skip
    destination.unlink(missing_ok=True)
    return json.loads(run.stdout)


def run(size: Size) -> list[Row]:
    nbytes = size.download_mb * MB
    with tempfile.TemporaryDirectory(prefix="bench-download-") as scratch:
        work = Path(scratch)
        with EmulatorProcess(work / "emulator", time_scale=1.0, queue_seconds=0.0) as emulator:
            task_id, url = anyio.run(result_url, emulator, work)
            expected_sha = write_big_file(emulator.clip_path(task_id), nbytes)
            runs: dict[str, list[dict[str, float | str]]] = {"bare": [], "ours": []}
            for _ in range(size.download_rounds):
                for kind in runs:
                    runs[kind].append(probe(kind, url, work / "clip.mp4"))
    for result in runs["ours"]:
        if result["bytes"] != nbytes or result["sha256"] != expected_sha:
            raise RuntimeError("the downloader delivered a wrong file")
    speed = {kind: median([float(r["bytes"]) / float(r["seconds"]) / MB for r in rs]) for kind, rs in runs.items()}
    growth = {kind: max(float(r["rss_growth_kb"]) for r in rs) / 1024 for kind, rs in runs.items()}
    read_back = max(float(r["read_back_bytes"]) for r in runs["ours"])
    label = f"{size.download_mb} MB, median of {size.download_rounds}"
    return [
        Row("5", f"download throughput ({label})", f"{speed['ours']:.0f} MB/s",
            f"{speed['bare']:.0f} MB/s (bare httpx2 → /dev/null)", ratio_text(speed["ours"], speed["bare"]),
            f"≥ {THROUGHPUT_TARGET}×", speed["ours"] >= THROUGHPUT_TARGET * speed["bare"]),
        Row("5", "peak RSS growth during the download", f"{growth['ours']:.1f} MB", f"{growth['bare']:.1f} MB (bare)",
            target=f"< {RSS_TARGET_MB} MB", met=growth["ours"] < RSS_TARGET_MB),
        Row("5", "bytes read back through read(2) while downloading", f"{read_back / 1000:.0f} kB",
            f"{nbytes / MB:.0f} MB (a second hashing pass)", target="≪ clip (hashed while streaming; sha256 verified)",
            met=read_back < nbytes / 100),
    ]  # fmt: skip
