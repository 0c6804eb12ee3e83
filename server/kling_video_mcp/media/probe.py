"""The one probe of a clip: what its container and streams say, read once with PyAV.

Downloads check a clip with it, companions and the results report its :class:`ClipFacts`
(:func:`probe`), and assemblies compare clips' stream parameters and picture lengths with it
(:func:`read_clip`). PyAV loads on
first use, and everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_video_mcp.models import ClipFacts

END_TOLERANCE_SECONDS = 0.5
"""How far short of its announced length a video stream's packets may end (audio can run longer)."""


class UnreadableClip(ValueError):
    """The file is not a readable video: PyAV cannot open it, or it has no video stream."""


@dataclass(frozen=True)
class VideoStream:
    """The first video stream's codec parameters: equal ones can be joined without re-encoding."""

    codec: str
    width: int
    height: int
    pix_fmt: str | None
    rate: Fraction | None
    """Average frames per second, if the stream states it."""
    extradata: bytes | None


@dataclass(frozen=True)
class AudioStream:
    """The first audio stream's codec parameters."""

    codec: str
    rate: int
    """Samples per second."""
    layout: str
    extradata: bytes | None


@dataclass(frozen=True)
class Probe:
    """What one clip's container and streams say."""

    duration_seconds: float
    """The container's length (its longest stream), in seconds."""
    picture_seconds: Fraction
    """How long the picture lasts, in seconds (the sound may run a little longer)."""
    video: VideoStream
    audio: AudioStream | None

    @property
    def facts(self) -> ClipFacts:
        """The facts results show: duration (seconds, to the ms), frame size, fps, codec, sound."""
        rate = self.video.rate
        return ClipFacts(
            duration_seconds=round(self.duration_seconds, 3),
            width=self.video.width,
            height=self.video.height,
            fps=round(float(rate), 3) if rate else None,
            video_codec=self.video.codec,
            has_audio=self.audio is not None,
        )


def probe(path: Path) -> ClipFacts:
    """``path``'s facts as results show them (see :attr:`Probe.facts`).

    Raises:
        UnreadableClip: see :func:`read_clip`.
    """
    return read_clip(path).facts


def read_clip(path: Path) -> Probe:
    """Read ``path``'s container and first video and audio streams (headers only, no decoding).

    Raises:
        UnreadableClip: PyAV cannot read the file, or it has no video stream (the message says which).
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableClip(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            context = stream.codec_context
            rate = stream.average_rate
            video = VideoStream(context.name, context.width, context.height, context.pix_fmt, rate, context.extradata)
            audio = None
            if container.streams.audio:
                sound = container.streams.audio[0].codec_context
                audio = AudioStream(sound.name, sound.sample_rate, sound.layout.name, sound.extradata)
            if stream.duration is not None and stream.time_base is not None:
                picture = stream.duration * stream.time_base
            elif stream.frames and rate:
                picture = Fraction(stream.frames) / rate
            else:
                picture = Fraction(container.duration or 0, av.time_base)
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = float(stream.frames / rate) if rate and stream.frames else 0.0
    except av.error.FFmpegError as exc:
        raise UnreadableClip(f"{path.name} cannot be read: {exc}") from exc
    return Probe(duration_seconds=float(duration), picture_seconds=picture, video=video, audio=audio)


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
