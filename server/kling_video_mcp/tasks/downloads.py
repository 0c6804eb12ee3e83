"""Bring a finished clip home: streamed, hashed while streaming, resumed, verified, atomic.

The bytes go to ``<name>.part`` beside the final file. A cut-off transfer leaves the part
file, and the next attempt resumes it with an HTTP ``Range`` request (or restarts if the
server ignores the range). Only a file whose size matches the server's declared length is
renamed into place, so a half file is never presented as a clip.

A 4K clip is hundreds of MB, so the transfer is a two-stage pipeline: the event loop only
receives, gathering the network's small chunks into blocks of about :data:`BLOCK_BYTES`,
and a worker thread writes and hashes each block while the next one arrives (both release
the GIL, so they use the second core). At most :data:`QUEUED_BLOCKS` blocks wait between
the stages, which bounds the memory a download holds to a few MB whatever the clip's size.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream

from kling_video_mcp.errors import KlingError, ProviderError, ProviderUnreachable

BLOCK_BYTES = 1024 * 1024
"""Bytes gathered before one write: large writes keep the file system's block allocation cheap."""
QUEUED_BLOCKS = 4
"""Blocks received but not yet written, at most (the memory bound: about 4 MiB in flight)."""
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


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    """sha256 and size of a file, read once in blocks (blocks: call from a worker thread)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return digest, size


def adopt(path: Path) -> Downloaded:
    """The facts of a clip already complete at its final name (a crash kept it off the journal).

    Only verified downloads are renamed to a final name, so the file is whole. Blocks.
    """
    digest, size = _hash_file(path)
    return Downloaded(path=path, sha256=digest.hexdigest(), size_bytes=size)


def _part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


class _PartFile:
    """The part file with the sha256 and size of everything in it; its methods block (worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        """Bytes in the file, all of them hashed."""
        self._fd: int | None = None

    def open(self, *, resume: bool) -> None:
        """Open for appending; when resuming, hash what an earlier attempt wrote first."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if resume else os.O_TRUNC)
        self._fd = os.open(self.path, flags, 0o644)
        self.digest, self.size = _hash_file(self.path) if resume else (hashlib.sha256(), 0)

    def append(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` at the end of the file and add them to the hash."""
        assert self._fd is not None
        # One write and one hash update per block: each releases the GIL once, where a
        # call per network chunk would make the receiving thread wait for it dozens of times.
        data = b"".join(chunks)
        view = memoryview(data)
        while view:  # a regular file takes it all at once; loop in case it does not
            view = view[os.write(self._fd, view) :]
        self.digest.update(data)
        self.size += len(data)

    def close(self, *, sync: bool) -> None:
        """Close the file, first forcing it to disk if ``sync`` (it is about to become the clip)."""
        if self._fd is None:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None


def _expected_total(response: httpx2.Response, offset: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


async def _write_all(part: _PartFile, blocks: MemoryObjectReceiveStream[list[bytes]]) -> None:
    async with blocks:
        async for block in blocks:
            await anyio.to_thread.run_sync(part.append, block)


async def _receive(response: httpx2.Response, part: _PartFile) -> BaseException | None:
    """Stream the body into ``part`` through the pipeline; returns the error that cut it off, if any.

    Network chunks (64 KiB or less) are gathered into blocks of about :data:`BLOCK_BYTES`
    without copying. Whatever arrived before a break is still written, so the next attempt
    resumes right after it.
    """
    send, receive = anyio.create_memory_object_stream[list[bytes]](QUEUED_BLOCKS)
    cut_off: BaseException | None = None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(_write_all, part, receive)
        async with send:
            block: list[bytes] = []
            gathered = 0
            try:
                async for chunk in response.aiter_bytes():
                    block.append(chunk)
                    gathered += len(chunk)
                    if gathered >= BLOCK_BYTES:
                        await send.send(block)
                        block, gathered = [], 0
            except httpx2.TransportError as exc:
                cut_off = exc
            if block:
                await send.send(block)
    return cut_off


async def download(client: httpx2.AsyncClient, url: str, destination: Path, *, deadline: float) -> Downloaded:
    """Download ``url`` to ``destination`` (one attempt, resuming a previous one).

    ``deadline`` is the whole attempt's limit in seconds.

    Returns:
        The final path, its sha256 (hex) and size in bytes.

    Raises:
        UrlExpired: the URL answered 403, 404 or 410.
        IncompleteDownload: the connection broke or ended early (the part file is kept).
        ProviderError: any other unexpected answer.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = _PartFile(_part_path(destination))
    offset = part.path.stat().st_size if part.path.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    total: int | None = None
    cut_off: BaseException | None = None
    try:
        with anyio.fail_after(deadline):
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code in (403, 404, 410):
                    raise UrlExpired(f"The clip's URL answered HTTP {response.status_code}; it has probably expired.")
                if response.status_code == 416 or (offset and response.status_code == 200):
                    # The server cannot continue where we stopped: start over.
                    offset = 0
                    part.path.unlink(missing_ok=True)
                    if response.status_code == 416:
                        raise IncompleteDownload("The server refused to resume the download; it restarts from zero.")
                if response.status_code not in (200, 206):
                    raise ProviderError(f"Downloading the clip failed with HTTP {response.status_code}.", retryable=True)
                total = _expected_total(response, offset)
                await anyio.to_thread.run_sync(lambda: part.open(resume=offset > 0))
                try:
                    cut_off = await _receive(response, part)
                finally:
                    # Shielded: a deadline must not leave the file open (or half-synced).
                    complete = cut_off is None and (total is None or part.size == total)
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(lambda: part.close(sync=complete))
    except (httpx2.TransportError, TimeoutError) as exc:
        cut_off = exc
    if cut_off is not None:
        raise IncompleteDownload(
            f"The download was cut off after {part.size} bytes ({type(cut_off).__name__}); it will resume."
        ) from cut_off
    if total is not None and part.size != total:
        raise IncompleteDownload(f"The download ended at {part.size} of {total} bytes; it will resume.")
    os.replace(part.path, destination)
    return Downloaded(path=destination, sha256=part.digest.hexdigest(), size_bytes=part.size)
