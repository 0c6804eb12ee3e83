"""Bring a finished clip home: streamed, hashed while streaming, resumed, verified, atomic.

The bytes go to ``<name>.part`` beside the final file. A cut-off transfer leaves the part
file, and the next attempt resumes it with an HTTP ``Range`` request (or restarts if the
server ignores the range). Only a file whose size matches the server's declared length is
renamed into place, so a half file is never presented as a clip.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2

from kling_video_mcp.errors import KlingError, ProviderError, ProviderUnreachable

CHUNK_BYTES = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class UrlExpired(KlingError):
    """The storage host refused the result URL (403/404/410): it has expired."""

    code = "provider_error"


class IncompleteDownload(ProviderUnreachable):
    """The transfer ended before the declared length; the part file is kept for resuming."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size_bytes: int


def _part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


async def _seed_hash(part: Path) -> tuple["hashlib._Hash", int]:
    """Hash what an earlier attempt already wrote, so the final digest covers the whole file."""
    digest = hashlib.sha256()
    size = 0
    if part.exists():
        async with await anyio.open_file(part, "rb") as handle:
            while chunk := await handle.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    return digest, size


def _expected_total(response: httpx2.Response, offset: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


async def download(client: httpx2.AsyncClient, url: str, destination: Path, *, deadline: float) -> Downloaded:
    """Download ``url`` to ``destination`` (one attempt, resuming a previous one).

    Returns:
        The final path, its sha256 (hex) and size in bytes.

    Raises:
        UrlExpired: the URL answered 403, 404 or 410.
        IncompleteDownload: the connection broke or ended early (the part file is kept).
        ProviderError: any other unexpected answer.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(destination)
    digest, offset = await _seed_hash(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with anyio.fail_after(deadline):
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code in (403, 404, 410):
                    raise UrlExpired(f"The clip's URL answered HTTP {response.status_code}; it has probably expired.")
                if response.status_code == 416 or (offset and response.status_code == 200):
                    # The server cannot continue where we stopped: start over.
                    digest, offset = hashlib.sha256(), 0
                    part.unlink(missing_ok=True)
                    if response.status_code == 416:
                        raise IncompleteDownload("The server refused to resume the download; it restarts from zero.")
                if response.status_code not in (200, 206):
                    raise ProviderError(f"Downloading the clip failed with HTTP {response.status_code}.", retryable=True)
                total = _expected_total(response, offset)
                async with await anyio.open_file(part, "ab") as handle:
                    # Write what arrives, unbuffered: bytes held back in a buffer would be lost
                    # with the connection instead of being kept for the resume.
                    async for chunk in response.aiter_bytes():
                        await handle.write(chunk)
                        digest.update(chunk)
                        offset += len(chunk)
                    await handle.flush()
                    await anyio.to_thread.run_sync(os.fsync, handle.wrapped.fileno())
    except (httpx2.TransportError, TimeoutError) as exc:
        raise IncompleteDownload(f"The download was cut off after {offset} bytes ({type(exc).__name__}); it will resume.") from exc
    if total is not None and offset != total:
        raise IncompleteDownload(f"The download ended at {offset} of {total} bytes; it will resume.")
    os.replace(part, destination)
    return Downloaded(path=destination, sha256=digest.hexdigest(), size_bytes=offset)
