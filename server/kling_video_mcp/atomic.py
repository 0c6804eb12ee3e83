"""Atomic file writes: a reader sees the old file, or none, or the whole new one, never a part.

Every file the server writes that someone may read meanwhile goes through here: sidecars,
contact sheets, last frames, previews, films, downloaded clips and the signed-link secret. The
bytes go to a temporary file beside the destination (the same folder, so the same file system)
and one rename puts it in place (``os.replace``, atomic on POSIX and on Windows). Whatever goes
wrong removes the temporary file, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_SUFFIX = ".part"
"""Temporary files end so: a folder listing (or a cleanup) tells them from finished files."""


def temporary_beside(destination: Path) -> Path:
    """A fresh hidden name beside ``destination`` to write it under: ``.<name>.<random>.part``.

    Unique per call, so two writers of one file (a background maker and a reader making it on
    demand) never write into each other's temporary file.
    """
    return destination.with_name(f".{destination.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def publish(temporary: Path, destination: Path, *, exclusive: bool = False) -> None:
    """Put the complete file ``temporary`` in place as ``destination``, in one step.

    ``exclusive``: never replace an existing ``destination`` (a hard link, which fails when the
    name is taken); ``temporary`` is then left for the caller to remove.

    Raises:
        FileExistsError: ``exclusive`` and ``destination`` exists.
        OSError: the rename failed (``destination`` is a folder, the disk is read-only...).
    """
    if exclusive:
        os.link(temporary, destination)
        temporary.unlink()
    else:
        os.replace(temporary, destination)


@contextmanager
def atomic_path(destination: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """A temporary path to write ``destination``'s new content to, published when the block ends.

    In: the final path (its folder must exist). Out: a path beside it that does not exist yet;
    write the whole file there. When the block ends without an error the file becomes
    ``destination`` (see :func:`publish` for ``exclusive``); on any error, or if it is never
    written, nothing changes and the temporary file is removed.

    Raises:
        FileExistsError: ``exclusive`` and ``destination`` exists.
        OSError: writing or publishing failed.
    """
    temporary = temporary_beside(destination)
    try:
        yield temporary
        publish(temporary, destination, exclusive=exclusive)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(destination: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> Path:
    """Write ``data`` to ``destination`` atomically, with permission bits ``mode``; returns ``destination``.

    The permissions hold from the first byte (a secret is never readable by others, not even
    while it is written).

    Raises:
        FileExistsError: ``exclusive`` and ``destination`` exists.
        OSError: it could not be written (nothing is left behind).
    """
    with atomic_path(destination, exclusive=exclusive) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    return destination
