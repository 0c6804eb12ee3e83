"""Bring a finished clip home: streamed, hashed while streaming, resumed, verified, atomic.

The bytes go to ``<name>.part`` beside the final file. A cut-off transfer leaves the part
file, and the next attempt resumes it with an HTTP ``Range`` request (or restarts if the
server ignores the range). Nothing from the link is trusted blindly:

- every hop (redirects are followed here, one by one) must be an ``http(s)`` URL, and every
  connection goes through :class:`~kling_video_mcp.tasks.addresses.CheckedBackend`: the host's
  addresses are checked against the provider's
  :class:`~kling_video_mcp.tasks.addresses.AddressPolicy` before anything is sent to them;
- an answer typed as HTML, JSON, XML or text is not a clip (a CDN's "502 Bad Gateway" page
  served with status 200);
- a declared or received size above ``KLING_MCP_MAX_CLIP_BYTES`` stops the transfer;
- only a file whose size matches the declared length, and that PyAV reads as a video stream
  with a duration, is renamed into place. So a half file, or a page saved as ``.mp4``, is
  never presented as a clip.

A 4K clip is hundreds of MB, so the transfer is a two-stage pipeline: the event loop only
receives, gathering the network's small chunks into blocks of about :data:`BLOCK_BYTES`,
and a worker thread writes and hashes each block while the next one arrives (both release
the GIL, so they use the second core). At most :data:`QUEUED_BLOCKS` blocks wait between
the stages, which bounds the memory a download holds to a few MB whatever the clip's size.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream

from kling_video_mcp.errors import DownloadFailed, KlingError, ProviderError, ProviderUnreachable, StorageError
from kling_video_mcp.atomic import publish
from kling_video_mcp.media.probe import check_whole, probe
from kling_video_mcp.models import ClipFacts
from kling_video_mcp.tasks.addresses import AddressPolicy, AddressRefused, CheckedBackend

log = logging.getLogger(__name__)

BLOCK_BYTES = 1024 * 1024
"""Bytes gathered before one write: large writes keep the file system's block allocation cheap."""
QUEUED_BLOCKS = 4
"""Blocks received but not yet written, at most (the memory bound: about 4 MiB in flight)."""
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NOT_VIDEO_TYPES = re.compile(r"^\s*(text/|[^;]*[/+](json|html|xml)\b)", re.IGNORECASE)
"""Content types a clip never has: HTML error pages, JSON or XML error bodies, plain text."""


class UrlExpired(KlingError):
    """The storage host refused the result URL (403/404/410): it has expired."""

    code = "provider_error"


class IncompleteDownload(ProviderUnreachable):
    """The transfer ended before the declared length; the part file is kept for resuming."""


class NotAVideo(DownloadFailed):
    """The link answered with something that is not a video (the part file is discarded).

    Worth another try with a fresh link: a CDN's error page is usually a passing fault.
    """

    retryable = True


class DownloadRefused(DownloadFailed):
    """The link (or a redirect) leads where downloads may not go; trying again will not help."""


class ClipTooLarge(DownloadFailed):
    """The clip is larger than ``KLING_MCP_MAX_CLIP_BYTES``."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size_bytes: int
    facts: ClipFacts | None = None
    """What PyAV read from the clip (``None`` for a clip adopted from an earlier run)."""


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


def _too_large(size: int, limit: int, *, declared: bool) -> ClipTooLarge:
    said = "declares" if declared else "sent more than"
    return ClipTooLarge(
        f"The clip's link {said} {size / 1e6:,.0f} MB, above the {limit / 1e6:,.0f} MB ceiling "
        "(KLING_MCP_MAX_CLIP_BYTES); the download was stopped. Raise the ceiling if the clip is genuine, "
        "then call check_task again."
    )


async def _receive(response: httpx2.Response, part: _PartFile, limit: int) -> BaseException | None:
    """Stream the body into ``part`` through the pipeline; returns the error that cut it off, if any.

    Network chunks (64 KiB or less) are gathered into blocks of about :data:`BLOCK_BYTES`
    without copying. Whatever arrived before a break is still written, so the next attempt
    resumes right after it.

    Raises:
        ClipTooLarge: the file would grow past ``limit`` bytes.
        OSError: the part file could not be written (disk full, folder gone).
    """
    send, receive = anyio.create_memory_object_stream[list[bytes]](QUEUED_BLOCKS)
    cut_off: BaseException | None = None
    received = part.size
    try:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(_write_all, part, receive)
            async with send:
                block: list[bytes] = []
                gathered = 0
                try:
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if received > limit:
                            raise _too_large(received, limit, declared=False)
                        block.append(chunk)
                        gathered += len(chunk)
                        if gathered >= BLOCK_BYTES:
                            await send.send(block)
                            block, gathered = [], 0
                except httpx2.TransportError as exc:
                    cut_off = exc
                if block:
                    await send.send(block)
    except BaseExceptionGroup as group:
        # One failure (a full disk in the writer, the ceiling in the receiver) cancels the other.
        raise _first_cause(group) from None
    return cut_off


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    """The error that failed a task group, rather than the cancellations it caused."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_cause(error)
        if not isinstance(error, anyio.get_cancelled_exc_class()):
            return error
    return group.exceptions[0]


class _CheckedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's own transport whose connection pool connects through a :class:`CheckedBackend`.

    httpx2 takes no network backend of its own (encode/httpx#3749 proposes the parameter), so the
    backend is given to the httpcore pool the transport built; the pool hands it to every
    connection it opens afterwards.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__()
        self._pool._network_backend = CheckedBackend(policy)


@asynccontextmanager
async def _connecting(client: httpx2.AsyncClient, policy: AddressPolicy) -> AsyncIterator[httpx2.AsyncClient]:
    """The client a download connects with: ``client`` itself when ``policy`` allows any address
    (so ``HTTP(S)_PROXY`` is honoured), else one like it (timeouts, headers) whose every
    connection is checked before a byte is sent (:class:`CheckedBackend`), with a pool of its own
    so no connection opened for other work is reused."""
    if policy.reach == "any":
        yield client
        return
    async with httpx2.AsyncClient(transport=_CheckedTransport(policy), timeout=client.timeout, headers=client.headers) as checked:
        yield checked


@asynccontextmanager
async def _open(
    client: httpx2.AsyncClient, url: str, headers: dict[str, str], policy: AddressPolicy
) -> AsyncIterator[httpx2.Response]:
    """GET ``url`` as a stream, following redirects one hop at a time, each hop checked.

    Raises:
        DownloadRefused: a hop's scheme or address is not allowed, or too many redirects.
    """
    async with _connecting(client, policy) as connecting:
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                parsed = httpx2.URL(url)
            except httpx2.InvalidURL:
                parsed = httpx2.URL()
            if parsed.scheme.lower() not in ("http", "https") or not parsed.host:
                raise DownloadRefused(
                    f"The clip's download link was not followed: it is a {parsed.scheme or 'malformed'}: link, and clips "
                    "are fetched only from http(s) hosts. The provider may be misconfigured; call check_task again later."
                )
            request = connecting.build_request("GET", url, headers=headers)
            try:
                response = await connecting.send(request, stream=True, follow_redirects=False)
            except AddressRefused as refused:
                raise DownloadRefused(_refusal(refused.problem)) from None
            try:
                if not response.has_redirect_location:
                    yield response
                    return
                url = str(response.url.join(response.headers["Location"]))
            finally:
                await response.aclose()
        raise DownloadRefused(f"The clip's link redirected more than {MAX_REDIRECTS} times; it was not followed further.")


def _refusal(problem: str) -> str:
    return (
        f"The clip's download link was not followed: {problem}. Downloads go only to public addresses unless "
        "the provider's own base URL is local; set KLING_MCP_ALLOW_PRIVATE_DOWNLOADS=true if this provider really "
        "serves clips from a private network, then call check_task again."
    )


def _check_type(response: httpx2.Response) -> None:
    content_type = response.headers.get("Content-Type", "")
    if _NOT_VIDEO_TYPES.match(content_type):
        raise NotAVideo(
            f"The clip's link answered HTTP {response.status_code} with a {content_type.split(';')[0].strip()} "
            "page instead of a video (a CDN or storage error); it will be tried again with a fresh link."
        )


def verify_clip(path: Path) -> ClipFacts:
    """Probe the downloaded file (blocks). Raises :class:`NotAVideo` unless it is a whole video
    stream with a duration."""
    try:
        facts = probe(path)
        if facts.duration_seconds <= 0:
            raise ValueError("it has no duration")
        check_whole(path, facts.duration_seconds)
    except Exception as exc:  # PyAV raises many types; any of them means "not a readable video"
        raise NotAVideo(
            f"The downloaded file is not a whole, readable video ({type(exc).__name__}: {exc}); it was discarded "
            "and will be fetched again with a fresh link."
        ) from exc
    return facts


def part_size(destination: Path) -> int:
    """Bytes in the part file of ``destination`` (0 when there is none)."""
    part = _part_path(destination)
    return part.stat().st_size if part.exists() else 0


def discard_part(destination: Path) -> None:
    """Remove the part file of an abandoned download of ``destination``, if any (never raises)."""
    try:
        _part_path(destination).unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass  # never written, or the folder itself is gone
    except OSError:
        log.warning("could not remove the abandoned part file of %s", destination)


_STORAGE_ADVICE = {
    errno.ENOSPC: "the disk holding {folder} is full: free space there",
    errno.EDQUOT: "the disk quota for {folder} is used up: free space there",
    errno.EROFS: "{folder} is on a read-only file system: point KLING_MCP_OUTPUT_DIR at a writable folder",
    errno.EACCES: "{folder} is not writable by the server: make it writable (or point KLING_MCP_OUTPUT_DIR elsewhere)",
    errno.EPERM: "{folder} is not writable by the server: make it writable (or point KLING_MCP_OUTPUT_DIR elsewhere)",
    errno.ENOENT: "the output folder {folder} is gone: create it (or point KLING_MCP_OUTPUT_DIR elsewhere)",
    errno.ENOTDIR: "the output folder {folder} is missing or not a folder: create it (or fix KLING_MCP_OUTPUT_DIR)",
    errno.EEXIST: "the output folder {folder} is missing or not a folder: create it (or fix KLING_MCP_OUTPUT_DIR)",
}


def storage_error(exc: OSError, folder: Path) -> StorageError:
    """What to do about a local write failure while saving a clip into ``folder``."""
    advice = _STORAGE_ADVICE.get(exc.errno or 0, "the clip could not be written to {folder}: fix the folder")
    return StorageError(
        f"The render finished and is paid for, but its clip could not be saved ({exc.strerror or exc}): "
        f"{advice.format(folder=folder)}, then call check_task again to resume the download "
        "(the provider's link lasts about an hour)."
    )


async def download(
    client: httpx2.AsyncClient,
    url: str,
    destination: Path,
    *,
    deadline: float,
    policy: AddressPolicy,
    max_bytes: int,
    verify: Callable[[Path], ClipFacts | None] = verify_clip,
) -> Downloaded:
    """Download ``url`` to ``destination`` (one attempt, resuming a previous one), and verify it.

    ``deadline`` is the whole attempt's limit in seconds; ``policy`` says which addresses the
    link and its redirects may reach; ``max_bytes`` is the size ceiling; ``verify`` checks the
    complete file before it gets its final name (blocks; raises :class:`NotAVideo`).

    Returns:
        The final path, its sha256 (hex), size in bytes, and what PyAV read from it.

    Raises:
        UrlExpired: the URL answered 403, 404 or 410.
        IncompleteDownload: the connection broke or ended early (the part file is kept).
        NotAVideo: the answer or the file is not a video (the part file is removed).
        DownloadRefused: the link or a redirect leads to a refused scheme or address.
        ClipTooLarge: the declared or received size is above ``max_bytes``.
        ProviderError: any other unexpected answer.
        OSError: the file could not be written (the caller says what to do about it).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = _PartFile(_part_path(destination))
    offset = part.path.stat().st_size if part.path.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    total: int | None = None
    cut_off: BaseException | None = None
    try:
        with anyio.fail_after(deadline):
            async with _open(client, url, headers, policy) as response:
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
                _check_type(response)
                total = _expected_total(response, offset)
                if total is not None and total > max_bytes:
                    raise _too_large(total, max_bytes, declared=True)
                await anyio.to_thread.run_sync(lambda: part.open(resume=offset > 0))
                try:
                    cut_off = await _receive(response, part, max_bytes)
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
    try:
        facts = await anyio.to_thread.run_sync(verify, part.path)
    except NotAVideo:
        part.path.unlink(missing_ok=True)
        raise
    publish(part.path, destination)
    return Downloaded(path=destination, sha256=part.digest.hexdigest(), size_bytes=part.size, facts=facts)
