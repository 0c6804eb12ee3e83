"""Input images for image-to-video: find them, read them, and check them before spending.

An image may be given as a local path, a ``file://`` URI, an ``http(s)`` URL or a ``data:``
URI. Local and inline images are checked against the Kling image rules (the providers' Kling
v3.0 image-to-video pages agree, docs/providers.md#input-images): JPEG or PNG, at most 10 MB, both sides at least 300 px, aspect ratio
between 1:2.5 and 2.5:1, and decodable in full: a truncated or damaged file is refused here,
before any money is spent, rather than by the provider after the submit. Remote URLs are
passed on unchanged and checked by the provider.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from kling_video_mcp.errors import InvalidRequest
from kling_video_mcp.models import ImageSource

MAX_BYTES = 10 * 1024 * 1024
MIN_SIDE = 300
MIN_RATIO, MAX_RATIO = 1 / 2.5, 2.5
MAX_PIXELS = 50_000_000
"""Largest image decoded (about 150 MB as RGB): six times a 4K frame, far below what a header
can claim (a 60-byte PNG can declare 100000x100000). Our bound, not a provider rule."""
_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png"}
"""Pillow's names for what Kling takes; phone cameras' JPEGs often read as MPO (a JPEG with extras)."""


def _label(reference: str) -> str:
    return reference[:40] + "..." if reference.startswith("data:") else reference


def _read_data_uri(field: str, reference: str) -> bytes:
    head, _, payload = reference.partition(",")
    if not head.endswith(";base64"):
        raise InvalidRequest(f"{field}: a data: URI must be base64 (data:image/png;base64,...).")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"{field}: the data: URI is not valid base64 ({exc}).") from exc


def _read_file(field: str, path: Path) -> bytes:
    """The bytes of ``path``, which has been resolved (and checked against the allowed folders)."""
    if not path.is_file():
        raise InvalidRequest(f"{field}: no file at {path} (give an existing JPEG or PNG path, a URL, or a data: URI).")
    if (size := path.stat().st_size) > MAX_BYTES:
        raise InvalidRequest(f"{field}: {path} is {size / 1e6:.1f} MB; images may be at most 10 MB.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{field}: cannot read {path} ({exc.strerror}).") from exc


def check_image_bytes(field: str, label: str, data: bytes) -> ImageSource:
    """Check bytes against the Kling image rules; returns the source with its size and type.

    Raises:
        InvalidRequest: naming ``field`` and the rule broken.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow loads on first use, not at start-up

    if len(data) > MAX_BYTES:
        raise InvalidRequest(f"{field}: {label} is {len(data) / 1e6:.1f} MB; images may be at most 10 MB.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            if width * height > MAX_PIXELS:
                raise InvalidRequest(
                    f"{field}: {label} declares {width}x{height} px, more than {MAX_PIXELS // 1_000_000} megapixels; "
                    "give a smaller JPEG or PNG."
                )
            if kind in _MIME:
                image.load()  # the whole image, not just its header: a damaged file fails here
    except Image.DecompressionBombError as exc:  # Pillow's own, far larger bound, checked on open
        raise InvalidRequest(
            f"{field}: {label} declares far more than {MAX_PIXELS // 1_000_000} megapixels; give a smaller JPEG or PNG."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidRequest(f"{field}: {label} is not a readable image; give a JPEG or PNG.") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow raises for damaged data
        raise InvalidRequest(f"{field}: {label} is damaged or truncated ({exc}); give a complete JPEG or PNG.") from exc
    if kind not in _MIME:
        raise InvalidRequest(f"{field}: {label} is {kind}; Kling takes only JPEG or PNG images.")
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(f"{field}: {label} is {width}x{height} px; both sides must be at least {MIN_SIDE} px.")
    if not MIN_RATIO <= width / height <= MAX_RATIO:
        raise InvalidRequest(
            f"{field}: {label} is {width}x{height} px (aspect {width / height:.2f}); "
            "the aspect ratio must be between 1:2.5 and 2.5:1."
        )
    return ImageSource(label=label, data=data, mime_type=_MIME[kind], width=width, height=height)


def _local_path(field: str, reference: str, scheme: str) -> Path:
    """The real path (``~`` expanded, symlinks and ``..`` resolved) a path or ``file://`` URI names.

    Raises:
        InvalidRequest: a NUL in it, an unknown ``~user``, or a ``file://`` URI naming another host.
    """
    if "\x00" in (unquote(reference) if scheme == "file" else reference):
        raise InvalidRequest(f"{field}: the path contains a NUL character; give a plain file path, a URL or a data: URI.")
    if scheme == "file":
        parts = urlparse(reference)
        if parts.netloc.lower() not in ("", "localhost"):
            raise InvalidRequest(
                f"{field}: {reference!r} names the host {parts.netloc!r}; a file:// URI must name a file on this machine "
                "(file:///path or file://localhost/path)."
            )
        path = Path(unquote(parts.path))
    else:
        path = Path(reference)
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # "~nosuchuser": no such home folder; a symlink loop
        raise InvalidRequest(f"{field}: {reference!r} cannot be found ({exc}); give an existing JPEG or PNG path.") from exc


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path.is_relative_to(folder.expanduser().resolve()) for folder in folders)


def resolve_image(field: str, reference: str, *, allowed_dirs: Sequence[Path] | None = None) -> ImageSource:
    """Turn what the user gave for ``field`` into a checked :class:`ImageSource`.

    ``allowed_dirs`` limits local files (paths and ``file://`` URIs) to those folders, after
    resolving symlinks; ``None`` allows any readable file (stdio: the user's own machine), an
    empty list allows none (an HTTP server with no ``KLING_MCP_IMAGE_DIRS``).

    Raises:
        InvalidRequest: the reference is malformed, missing, unreadable, outside the allowed
            folders, or breaks a rule.
    """
    reference = reference.strip()
    label = _label(reference)
    scheme = urlparse(reference).scheme.lower()
    if scheme in ("http", "https"):
        return ImageSource(label=label, url=reference)
    if scheme == "data":
        return check_image_bytes(field, label, _read_data_uri(field, reference))
    # The resolved path is both the one checked and the one read: a symlink cannot lead elsewhere.
    path = _local_path(field, reference, scheme)
    if allowed_dirs is not None and not _inside(path, allowed_dirs):
        where = ", ".join(str(folder) for folder in allowed_dirs) or "none (KLING_MCP_IMAGE_DIRS is not set)"
        raise InvalidRequest(
            f"{field}: this server only reads local images inside its allowed folders ({where}); "
            "give an http(s) URL or a data: URI instead."
        )
    return check_image_bytes(field, label, _read_file(field, path))


def frame_image(field: str, path: Path) -> ImageSource:
    """A clip's saved frame as an input image, re-encoded as JPEG if the PNG is over 10 MB.

    A detailed 4K frame can pass 10 MB as PNG; a high-quality JPEG of it is a few MB.
    """
    data = path.read_bytes()
    if len(data) > MAX_BYTES:
        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(io.BytesIO(data)) as frame:
            frame.convert("RGB").save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
    return check_image_bytes(field, str(path), data)
