"""Pixels and samples: image inspection and synthesis of the result clip.

The clip stands in for a Kling render: a playable H.264/yuv420p MP4 whose
duration is exactly the requested one (``duration * fps`` frames; Kling
outputs 24 fps, docs/providers.md#common-fields), showing the prompt text of the current shot
over a plain or image background, with a moving bar and a frame counter so it
is visibly video, plus an optional quiet AAC tone when ``sound`` is set.
Everything here is blocking; callers run it in a worker thread.
"""

from __future__ import annotations

import array
import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

from .tasks import Shot

IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

AUDIO_RATE = 24_000  # plenty for a tone, and half the AAC encoding time of 48 kHz
AUDIO_FRAME = 1024
# A whole number of periods per AAC frame, so one precomputed frame repeats seamlessly.
TONE_HZ = AUDIO_RATE / AUDIO_FRAME * 9
TONE_LEVEL = 0.05

BACKDROP = (24, 32, 56)
BAR = (240, 180, 40)
INK = (255, 255, 255)
SHADE = (0, 0, 0)


def sniff_image(data: bytes) -> str | None:
    """Image format from magic bytes: jpeg, png, gif, bmp, tiff, webp, or ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for signature, name in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels read from the header, or ``None`` if Pillow cannot parse it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def frame_size(long_side: int, width_over_height: float) -> tuple[int, int]:
    """Even (width, height) with the longer side ``long_side`` and the given aspect ratio."""
    long_even = max(2, long_side - long_side % 2)
    if width_over_height >= 1:
        short = long_even / width_over_height
        return long_even, max(2, 2 * round(short / 2))
    short = long_even * width_over_height
    return max(2, 2 * round(short / 2)), long_even


def fit_background(data: bytes, size: tuple[int, int]) -> bytes:
    """``data`` (any image Pillow reads) scaled and centre-cropped to ``size``, as PNG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        picture = image.convert("RGB")
    scale = max(size[0] / picture.width, size[1] / picture.height)
    scaled = picture.resize((max(1, math.ceil(picture.width * scale)), max(1, math.ceil(picture.height * scale))))
    left = (scaled.width - size[0]) // 2
    top = (scaled.height - size[1]) // 2
    out = io.BytesIO()
    scaled.crop((left, top, left + size[0], top + size[1])).save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class ClipSpec:
    """What to render: ``duration`` seconds at ``fps``, ``width``×``height`` (even) pixels."""

    shots: Sequence[Shot]
    duration: int
    fps: int
    width: int
    height: int
    sound: bool
    background: Path | None = None


def render_clip(spec: ClipSpec, destination: Path) -> None:
    """Encode ``spec`` to an MP4 at ``destination``; the file appears atomically when complete."""
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".render-", suffix=".mp4")
    os.close(handle)
    try:
        _encode(spec, temporary)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _encode(spec: ClipSpec, path: str) -> None:
    frames = spec.duration * spec.fps
    stills = _shot_stills(spec)
    starts = _shot_start_frames(spec.shots, frames)
    font = ImageFont.load_default(size=max(9, min(spec.width, spec.height) // 14))
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=spec.fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if spec.sound else None
        shot = 0
        for index in range(frames):
            while shot + 1 < len(starts) and index >= starts[shot + 1]:
                shot += 1
            frame = av.VideoFrame.from_image(_animate(stills[shot], index, frames, spec.fps, font))
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            _encode_tone(container, audio, spec.duration)


def _shot_stills(spec: ClipSpec) -> list[Image.Image]:
    """One still per shot: the background with that shot's wrapped text on a shaded band."""
    size = (spec.width, spec.height)
    if spec.background is not None:
        with Image.open(spec.background) as image:
            base = image.convert("RGB").resize(size)
    else:
        base = Image.new("RGB", size, BACKDROP)
    font = ImageFont.load_default(size=max(10, min(size) // 10))
    margin = max(4, spec.width // 40)
    stills = []
    for number, shot in enumerate(spec.shots, start=1):
        still = base.copy()
        draw = ImageDraw.Draw(still)
        label = f"[{number}/{len(spec.shots)}] {shot.text}" if len(spec.shots) > 1 else shot.text
        lines = _wrap(draw, label, font, spec.width - 2 * margin, max_lines=max(1, spec.height // 2 // font.size))
        block = "\n".join(lines)
        box = draw.multiline_textbbox((margin, margin), block, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=SHADE)
        draw.multiline_text((margin, margin), block, font=font, fill=INK)
        stills.append(still)
    return stills


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int
) -> list[str]:
    """Greedy word wrap to ``width`` pixels, at most ``max_lines`` lines (ellipsis when cut)."""
    lines: list[str] = []
    current = ""
    for word in text.split() or [""]:
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip() + " …"
    return lines


def _shot_start_frames(shots: Sequence[Shot], frames: int) -> list[int]:
    """First frame of each shot, proportional to the shots' seconds."""
    total = sum(shot.seconds for shot in shots) or 1.0
    starts, elapsed = [], 0.0
    for shot in shots:
        starts.append(round(frames * elapsed / total))
        elapsed += shot.seconds
    return starts


def _animate(still: Image.Image, index: int, frames: int, fps: int, font: ImageFont.FreeTypeFont) -> Image.Image:
    """``still`` plus what moves: a bar sliding along the bottom and the time/frame counter."""
    image = still.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    bar_width, bar_height = max(8, width // 8), max(4, height // 24)
    x = round((width - bar_width) * index / max(1, frames - 1))
    draw.rectangle((x, height - 2 * bar_height, x + bar_width, height - bar_height), fill=BAR)
    counter = f"{index / fps:5.2f}s  #{index + 1}/{frames}"
    box = draw.textbbox((0, 0), counter, font=font)
    left, top = width - box[2] - 4, height - 2 * bar_height - box[3] - 4
    draw.rectangle((left - 2, top - 1, width - 2, top + box[3] + 1), fill=SHADE)
    draw.text((left, top), counter, font=font, fill=INK)
    return image


def _encode_tone(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, duration: int
) -> None:
    """Exactly ``duration`` seconds of a quiet sine, in AAC-sized frames."""
    period = array.array(
        "f", (TONE_LEVEL * math.sin(2 * math.pi * TONE_HZ * n / AUDIO_RATE) for n in range(AUDIO_FRAME))
    ).tobytes()
    total, sent = AUDIO_RATE * duration, 0
    while sent < total:
        count = min(AUDIO_FRAME, total - sent)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=count)
        frame.planes[0].update(period[: count * 4])
        frame.sample_rate, frame.pts = AUDIO_RATE, sent
        container.mux(stream.encode(frame))
        sent += count
    container.mux(stream.encode(None))
