"""One download in a fresh process, reporting its time, memory and disk reads as JSON.

``python -m bench.download_probe ours|bare URL DEST``: ``ours`` is the server's downloader
(:func:`kling_video_mcp.tasks.downloads.download`) to ``DEST``; ``bare`` is a bare httpx2
stream to /dev/null, the ceiling. Both use the server's HTTP client settings. A process of
its own keeps the RSS figure about the download alone. Printed: ``seconds``, ``bytes``,
``rss_growth_kb`` (peak RSS during the download over RSS before it), ``read_back_bytes``
(bytes this process read through read(2) during the download: a hashing second pass over
the file would show here; sockets do not count) and ``sha256``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import httpx2

from bench.lab import proc_status_kb
from kling_video_mcp.config import Settings
from kling_video_mcp.providers.http import make_client
from kling_video_mcp.tasks.addresses import AddressPolicy
from kling_video_mcp.tasks.downloads import download


def read_chars() -> int:
    """``rchar`` of /proc/self/io: bytes passed to read(2) and friends so far."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``5`` in /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


async def bare(client: httpx2.AsyncClient, url: str) -> tuple[int, str]:
    size = 0
    with open("/dev/null", "wb") as sink:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                sink.write(chunk)
                size += len(chunk)
    return size, ""


async def ours(client: httpx2.AsyncClient, url: str, destination: Path) -> tuple[int, str]:
    # The file is random bytes (only its size matters here), so the transfer is timed without
    # the PyAV check every real clip gets.
    settings = Settings()
    result = await download(
        client, url, destination, deadline=600, policy=AddressPolicy("local"),
        max_bytes=settings.max_clip_bytes, verify=lambda _path: None,
    )  # fmt: skip
    return result.size_bytes, result.sha256


async def probe(kind: str, url: str, destination: Path) -> dict[str, object]:
    async with make_client(Settings()) as client:
        before_kb = proc_status_kb("self", "VmRSS")
        reset_peak_rss()
        reads_before = read_chars()
        started = time.perf_counter()
        size, digest = await (bare(client, url) if kind == "bare" else ours(client, url, destination))
        seconds = time.perf_counter() - started
        reads = read_chars() - reads_before
        growth_kb = proc_status_kb("self", "VmHWM") - before_kb
    return {"seconds": seconds, "bytes": size, "rss_growth_kb": growth_kb, "read_back_bytes": reads, "sha256": digest}


def main() -> None:
    kind, url, destination = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    print(json.dumps(anyio.run(probe, kind, url, destination)))


if __name__ == "__main__":
    main()
