"""Look at a downloaded clip: probe its facts, draw a contact sheet, keep its last frame.

PyAV and Pillow load on first use (not at server start-up), and every function here blocks:
call them from a worker thread.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from kling_video_mcp.models import ClipFacts

if TYPE_CHECKING:
    from PIL.Image import Image

SHEET_FRAMES = 4
SHEET_TILE_WIDTH = 320
SHEET_JPEG_QUALITY = 80


def probe(path: Path) -> ClipFacts:
    """Duration (seconds), frame size (pixels), frame rate, codec, and whether it has sound.

    Raises:
        av.error.FFmpegError or ValueError: the file is not a readable video.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        video = container.streams.video[0]
        rate = video.average_rate
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        else:
            duration = float(video.frames / rate) if rate and video.frames else 0.0
        return ClipFacts(
            duration_seconds=round(float(duration), 3),
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=round(float(rate), 3) if rate else None,
            video_codec=video.codec_context.name,
            has_audio=bool(container.streams.audio),
        )


END_TOLERANCE_SECONDS = 0.5
"""How far short of its announced length a video stream's packets may end (audio can run longer)."""


def check_whole(path: Path, duration: float) -> None:
    """Check that the video stream's data runs to the end: a file cut short (a body that ended
    early without a declared length) stops early or ends in a partial packet, even when its
    index up front still announces the full ``duration`` (seconds). Reads only the last second.

    Raises:
        ValueError: the file is cut short (the message says where).
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1000)
        if stream.duration is not None:
            duration = float(stream.duration * time_base)
        container.seek(int(max(0.0, duration - 1.0) / time_base), stream=stream, backward=True)
        last = None
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                last = packet
    end = float((last.pts + (last.duration or 0)) * time_base) if last is not None else 0.0
    if last is None or last.is_corrupt or end < duration - END_TOLERANCE_SECONDS:
        raise ValueError(f"the video data ends at {end:.2f} s of {duration:.2f} s")


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


def frames(path: Path, times: list[float]) -> list[Image]:
    """Frames of the clip at the given times in seconds (frames that cannot be read are skipped)."""
    import av

    found = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for seconds in times:
            if (image := _frame_at(container, stream, max(0.0, seconds))) is not None:
                found.append(image)
    return found


def contact_sheet(path: Path, duration: float) -> bytes:
    """A JPEG strip of :data:`SHEET_FRAMES` frames spread across the clip (tens of KB)."""
    from PIL import Image

    times = [duration * (index + 0.5) / SHEET_FRAMES for index in range(SHEET_FRAMES)]
    tiles = [image.convert("RGB") for image in frames(path, times)]
    if not tiles:
        raise ValueError("no frame could be decoded")
    height = round(tiles[0].height * SHEET_TILE_WIDTH / tiles[0].width)
    sheet = Image.new("RGB", (SHEET_TILE_WIDTH * len(tiles), height))
    for index, tile in enumerate(tiles):
        sheet.paste(tile.resize((SHEET_TILE_WIDTH, height)), (index * SHEET_TILE_WIDTH, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=SHEET_JPEG_QUALITY)
    return buffer.getvalue()


def save_last_frame(path: Path, destination: Path) -> Path:
    """Write the clip's last frame as a PNG (full resolution) to ``destination``."""
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
    last.to_image().save(destination, format="PNG")
    return destination


class Companions(BaseModel):
    """The files made beside a clip, and what could not be made."""

    facts: ClipFacts | None = None
    contact_sheet: Path | None = None
    last_frame: Path | None = None
    warnings: list[str] = []


def _write_or_remove(destination: Path, write) -> Path:
    """Run ``write(destination)``; if it fails, leave no partial or empty file behind."""
    try:
        write(destination)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return destination


def make_companions(clip: Path, facts: ClipFacts | None = None) -> Companions:
    """Probe ``clip`` (unless its ``facts`` are given) and write ``<clip>.contact.jpg`` and
    ``<clip>.last.png`` beside it.

    Never raises for a clip it cannot read or files it cannot write: the clip is still
    delivered, with warnings naming what is missing and why. No half-written file is left.
    """
    found = Companions(facts=facts)
    if found.facts is None:
        try:
            found.facts = probe(clip)
        except Exception as exc:  # PyAV raises many types; any of them means "unreadable"
            found.warnings.append(f"The clip could not be probed ({type(exc).__name__}: {exc}); it may not play.")
            return found
    duration = found.facts.duration_seconds
    try:
        sheet = contact_sheet(clip, duration)
        found.contact_sheet = _write_or_remove(clip.with_name(clip.name + ".contact.jpg"), lambda path: path.write_bytes(sheet))
    except Exception as exc:
        found.warnings.append(f"The contact sheet could not be made ({type(exc).__name__}: {exc}).")
    try:
        found.last_frame = _write_or_remove(
            clip.with_name(clip.name + ".last.png"), lambda path: save_last_frame(clip, path)
        )
    except Exception as exc:
        found.warnings.append(
            f"The last frame could not be saved ({type(exc).__name__}: {exc}), so this clip cannot start the next shot."
        )
    return found
