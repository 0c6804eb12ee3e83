"""A clip's companions: its probed facts, a contact sheet, its last frame and a JSON sidecar.

Renders and films get the same companions from the same code, beside the clip:
``<clip>.contact.jpg`` (a JPEG grid of frames: four spread across a render, one from the
middle of each shot of a film), ``<clip>.last.png`` (the last frame at full size, the first
frame of the next shot when chaining) and ``<clip>.json`` (the sidecar: what the caller says
the clip is). Each is written atomically (:mod:`kling_video_mcp.atomic`), and each can be made
again from the clip alone, so a companion lost to a crash or a deleted file is remade without
asking any provider.

PyAV and Pillow load on first use, and everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Collection, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from kling_video_mcp import atomic
from kling_video_mcp.media.probe import probe
from kling_video_mcp.models import ClipFacts, Companion

if TYPE_CHECKING:
    from PIL.Image import Image

COMPANIONS: tuple[Companion, ...] = ("facts", "contact_sheet", "last_frame", "sidecar")
SUFFIXES: dict[Companion, str] = {"contact_sheet": ".contact.jpg", "last_frame": ".last.png", "sidecar": ".json"}
"""Each companion file's name is the clip's name plus this."""
SHEET_FRAMES = 4
"""Frames on a render's contact sheet, spread evenly across it."""
SHEET_TILE_WIDTH = 320
SHEET_COLUMNS = 5
"""Frames per row of a contact sheet: a film of more shots gets more rows."""
SHEET_JPEG_QUALITY = 80

SidecarBody = Callable[[ClipFacts | None], dict[str, Any]]
"""Builds the sidecar's JSON object from the clip's facts (``None`` when it could not be probed)."""


def companion_path(clip: Path, companion: Companion) -> Path:
    """Where ``companion`` of ``clip`` lives (not for ``facts``, which is no file)."""
    return clip.with_name(clip.name + SUFFIXES[companion])


def spread_times(duration: float, count: int = SHEET_FRAMES) -> list[float]:
    """``count`` times (seconds) at the middles of equal parts of a ``duration``-second clip."""
    return [duration * (index + 0.5) / count for index in range(count)]


def _frame_at(container, stream, seconds: float) -> Image | None:
    """The first frame at or after ``seconds`` (or the last one before the end)."""
    time_base = stream.time_base or Fraction(1, 1000)
    container.seek(int(seconds / time_base), stream=stream, backward=True, any_frame=False)
    chosen = None
    for frame in container.decode(stream):
        chosen = frame
        if frame.time is not None and frame.time >= seconds:
            break
    return chosen.to_image() if chosen is not None else None


def frames(path: Path, times: Sequence[float]) -> list[Image]:
    """Frames of the clip at the given times in seconds (frames that cannot be read are skipped)."""
    import av

    found = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for seconds in times:
            if (image := _frame_at(container, stream, max(0.0, seconds))) is not None:
                found.append(image)
    return found


def contact_sheet(path: Path, times: Sequence[float]) -> bytes:
    """A JPEG grid of the clip's frames at ``times`` (seconds), in order, :data:`SHEET_COLUMNS` to
    a row, each :data:`SHEET_TILE_WIDTH` pixels wide (tens of KB).

    Raises:
        ValueError: no frame could be decoded. av.error.FFmpegError: the clip cannot be read.
    """
    from PIL import Image

    images = frames(path, times)
    if not images:
        raise ValueError("no frame could be decoded")
    tile_height = round(images[0].height * SHEET_TILE_WIDTH / images[0].width)
    columns = min(SHEET_COLUMNS, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (SHEET_TILE_WIDTH * columns, tile_height * rows))
    for index, image in enumerate(images):
        tile = image.convert("RGB").resize((SHEET_TILE_WIDTH, tile_height))
        sheet.paste(tile, ((index % columns) * SHEET_TILE_WIDTH, (index // columns) * tile_height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=SHEET_JPEG_QUALITY)
    return buffer.getvalue()


def last_frame(path: Path) -> Image:
    """The clip's last frame, at full size.

    Raises:
        ValueError: no frame could be decoded. av.error.FFmpegError: the clip cannot be read.
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = container.duration / av.time_base if container.duration else 0.0
        container.seek(int(max(0.0, duration - 1.0) / (stream.time_base or Fraction(1, 1000))), stream=stream, backward=True)
        last = None
        for frame in container.decode(stream):
            last = frame
    if last is None:
        raise ValueError("no frame could be decoded")
    return last.to_image()


class Companions(BaseModel):
    """What :func:`make_companions` made beside a clip, and what it could not make and why."""

    facts: ClipFacts | None = None
    contact_sheet: Path | None = None
    last_frame: Path | None = None
    sidecar: Path | None = None
    problems: dict[Companion, str] = {}
    """Each companion that could not be made, with why, in words for the person reading the result."""

    @property
    def warnings(self) -> list[str]:
        return list(self.problems.values())


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def make_companions(
    clip: Path,
    facts: ClipFacts | None = None,
    *,
    sheet_times: Sequence[float] | None = None,
    sidecar: SidecarBody | None = None,
    wanted: Collection[Companion] = COMPANIONS,
) -> Companions:
    """Make the ``wanted`` companions of ``clip`` beside it (see the module docstring).

    In: the clip; its ``facts`` when already known (else it is probed); where the contact
    sheet takes its frames (seconds; default :func:`spread_times`); the sidecar's body (no
    sidecar without it). Out: the facts and the files made, and ``problems`` naming each
    wanted companion that could not be made and why (a clip that cannot be probed gets no
    contact sheet or last frame; its sidecar is still written).

    Never raises for a clip it cannot read or a file it cannot write: the clip stays as it is,
    and no half-written companion is left.
    """
    found = Companions(facts=facts)
    if found.facts is None:
        try:
            found.facts = probe(clip)
        except Exception as exc:  # PyAV raises many types; any of them means "unreadable"
            found.problems["facts"] = f"The clip could not be probed ({_why(exc)}); it may not play."
    if found.facts is not None:
        if "contact_sheet" in wanted:
            times = sheet_times if sheet_times is not None else spread_times(found.facts.duration_seconds)
            try:
                found.contact_sheet = atomic.write_bytes(companion_path(clip, "contact_sheet"), contact_sheet(clip, times))
            except Exception as exc:
                found.problems["contact_sheet"] = f"The contact sheet could not be made ({_why(exc)})."
        if "last_frame" in wanted:
            destination = companion_path(clip, "last_frame")
            try:
                image = last_frame(clip)
                with atomic.atomic_path(destination) as temporary:
                    image.save(temporary, format="PNG")
                found.last_frame = destination
            except Exception as exc:
                found.problems["last_frame"] = (
                    f"The last frame could not be saved ({_why(exc)}), so this clip cannot start the next shot."
                )
    if sidecar is not None and "sidecar" in wanted:
        destination = companion_path(clip, "sidecar")
        try:
            body = json.dumps(sidecar(found.facts), indent=2, sort_keys=True)
            found.sidecar = atomic.write_bytes(destination, body.encode())
        except OSError as exc:
            found.problems["sidecar"] = f"The sidecar {destination.name} could not be written ({exc.strerror or exc})."
    return found
