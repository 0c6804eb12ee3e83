"""Preview proxies: a small H.264 copy of a clip that a chat view can play at once.

A Kling clip can be a 4K file of hundreds of MB; the screening room plays a proxy of at most
:data:`MAX_HEIGHT` lines (a few MB at most), fetched whole through ``resources/read`` over
stdio or streamed from ``/previews/`` over HTTP. The full-resolution file stays the clip.

Previews live in ``<output_dir>/.previews/[<owner folder>/]<task_id>.mp4``, beside the clips that
every worker shares: they are the server's cache, not the user's output, and can be rebuilt from
the clip at any time. Everything here blocks (PyAV):
call it from a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_video_mcp.atomic import atomic_path

log = logging.getLogger(__name__)

MAX_HEIGHT = 480
"""Frame height of a preview, at most (480p); the width follows the clip's aspect ratio."""
MAX_FPS = 30
"""Higher frame rates are halved until at most this: a preview need not be smooth, only watchable."""
CRF = 30
"""x264 constant-rate factor: softer than the original, fine in a chat-sized player, and a
fraction of its size (a 5 s 1080p test clip: 738 KB down to 61 KB)."""
AUDIO_BITRATE = 96_000
"""AAC bits per second of the preview's sound, when the clip has any."""
MAX_PREVIEW_SECONDS = 120.0
"""A clip longer than this (a long film) is previewed from a sample of this many seconds, so the
work a preview costs is bounded whatever the film's length (``KLING_MCP_MAX_FILM_SECONDS``)."""
SAMPLE_WINDOWS = 12
"""The sample's stretches, spread evenly over the film (10 s each): a silent trailer of it."""


def preview_path(previews_dir: Path, task_id: str) -> Path:
    """Where the preview of ``task_id`` lives (whether or not it exists yet)."""
    return previews_dir / f"{task_id}.mp4"


def _even(value: float) -> int:
    """H.264 in 4:2:0 needs even frame sizes."""
    return max(2, int(round(value / 2)) * 2)


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The preview's frame size: the clip's, scaled down (never up) to :data:`MAX_HEIGHT` lines."""
    if height <= MAX_HEIGHT:
        return _even(width), _even(height)
    return _even(width * MAX_HEIGHT / height), MAX_HEIGHT


def make_preview(clip: Path, destination: Path) -> Path:
    """Write a preview of ``clip`` to ``destination`` (atomically: readers never see half a file).

    Out: ``destination``, an MP4 with H.264 video (yuv420p, at most 480 lines, ``+faststart``
    so a browser can start playing before the end arrives) and AAC sound when the clip has any.
    A clip longer than :data:`MAX_PREVIEW_SECONDS` gets a silent preview of that length made of
    :data:`SAMPLE_WINDOWS` stretches spread over it; only about those stretches are decoded.

    Raises:
        av.error.FFmpegError or ValueError: the clip cannot be read.
    """
    import av

    destination.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of its own: the background maker and a view's first read may run at once.
    with atomic_path(destination) as partial:
        with av.open(str(clip)) as source, av.open(
            str(partial), "w", format="mp4", options={"movflags": "+faststart"}
        ) as target:
            if not source.streams.video:
                raise ValueError("no video stream")
            video_in = source.streams.video[0]
            rate = video_in.average_rate or Fraction(24)
            step = 1
            while rate / step > MAX_FPS:
                step *= 2
            width, height = preview_size(video_in.codec_context.width, video_in.codec_context.height)
            out_rate = rate / step
            video_out = target.add_stream("libx264", rate=out_rate, options={"crf": str(CRF), "preset": "veryfast"})
            video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
            windows = _sample_windows(float(source.duration or 0) / av.time_base)
            audio_in = source.streams.audio[0] if source.streams.audio and not windows else None
            audio_out = None
            if audio_in is not None:
                audio_out = target.add_stream("aac", rate=audio_in.codec_context.sample_rate or 48_000)
                audio_out.bit_rate = AUDIO_BITRATE
            streams = [video_in] + ([audio_in] if audio_in is not None else [])
            decoded = _sampled(source, video_in, windows) if windows else source.decode(*streams)
            for index, frame in _thinned(decoded, step):
                if isinstance(frame, av.VideoFrame):
                    scaled = frame.reformat(width=width, height=height, format="yuv420p")
                    scaled.pts = index
                    scaled.time_base = 1 / Fraction(out_rate)
                    target.mux(video_out.encode(scaled))
                elif audio_out is not None:
                    frame.pts = None
                    target.mux(audio_out.encode(frame))
            target.mux(video_out.encode(None))
            if audio_out is not None:
                target.mux(audio_out.encode(None))
    return destination


def _sample_windows(duration: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the stretches a preview of a clip ``duration`` long samples
    (none: the whole clip is previewed)."""
    if duration <= MAX_PREVIEW_SECONDS:
        return []
    length = MAX_PREVIEW_SECONDS / SAMPLE_WINDOWS
    return [(start, start + length) for start in (duration * index / SAMPLE_WINDOWS for index in range(SAMPLE_WINDOWS))]


def _sampled(source: Any, video: Any, windows: list[tuple[float, float]]) -> Iterator[Any]:
    """The video frames inside each window, reached by seeking to the keyframe before it."""
    for start, end in windows:
        source.seek(int(start / video.time_base), stream=video)
        for frame in source.decode(video):
            if frame.time is not None and frame.time >= end:
                break
            if frame.time is not None and frame.time >= start:
                yield frame


def _thinned(frames: Iterable[Any], step: int) -> Iterator[tuple[int, Any]]:
    """``(index, frame)``: every ``step``-th video frame numbered from 0, and every audio frame
    (index ``-1``)."""
    import av

    seen = kept = 0
    for frame in frames:
        if not isinstance(frame, av.VideoFrame):
            yield -1, frame
            continue
        if seen % step == 0:
            yield kept, frame
            kept += 1
        seen += 1


def ensure_preview(clip: Path, previews_dir: Path, task_id: str) -> Path:
    """The preview of ``task_id``, made from ``clip`` first if it is missing or older than the clip."""
    destination = preview_path(previews_dir, task_id)
    if destination.is_file() and destination.stat().st_mtime >= clip.stat().st_mtime:
        return destination
    made = make_preview(clip, destination)
    log.info("task %s: preview made (%d bytes)", task_id, made.stat().st_size)
    return made
