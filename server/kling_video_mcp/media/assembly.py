"""Join clips into one H.264 MP4 with PyAV.

Two ways, chosen per film by :func:`join`:

* **Stream copy** (a plain cut between clips whose video has the same codec parameters: codec,
  frame size, pixel format, frame rate and decoder setup, the usual case of one provider and
  one mode): the compressed packets are remuxed with shifted timestamps and never decoded, so
  a minute of 4K takes seconds (benchmark figure 6).
* **Re-encode** (crossfades, or clips that differ): every frame is decoded, scaled to fit the
  first clip's frame size with black bars (never stretched), sampled at the first clip's frame
  rate, blended across crossfades and encoded with libx264.

Audio: ``keep`` copies the clips' sound when they all have the same audio parameters and the
film is a stream copy; otherwise it is decoded, resampled to the first sound's rate and
layout, and re-encoded as AAC, with silence where a clip has none. Across a crossfade the
sound cuts at the middle of the blend, each side in sync with its picture. ``mute`` (or no
clip with sound) makes a film without an audio track.

Everything here blocks: call it from a worker thread. ``progress`` callbacks run on that
thread and may raise to stop the work (the partial file is removed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kling_video_mcp.atomic import atomic_path
from kling_video_mcp.media.probe import AudioStream, Probe, UnreadableClip, VideoStream, read_clip

if TYPE_CHECKING:
    # PyAV is imported by each function that reads or writes video: this module is loaded at
    # server start (the task service names it) but used only when a film is made.
    import av
    from av.audio.frame import AudioFrame
    from av.video.frame import VideoFrame

Method = Literal["stream_copy", "re_encode"]
Progress = Callable[[float], None]
"""Called with the fraction done (0 to 1) now and then, from the worker thread."""

ENCODER_OPTIONS = {"preset": "veryfast", "crf": "18"}
"""libx264 settings for re-encoded films: visually lossless at sources' sizes (crf 18), and fast
enough for crossfades at 1080p in better than real time on two cores (benchmark figure 6)."""
AUDIO_BIT_RATE = 192_000
AAC_FRAME = 1024
"""Samples per AAC frame: the sound is encoded in chunks of this size."""
DEFAULT_RATE = Fraction(24)
"""Frames per second when the first clip states none (Kling renders 24 fps, docs/providers.md#common-fields)."""
PROGRESS_EVERY = 48
"""Frames or packets between progress callbacks."""


class JoinError(Exception):
    """The clips could not be joined (a file unreadable, no video stream, nothing decoded)."""


@dataclass(frozen=True)
class Joined:
    """What :func:`join` made."""

    method: Method
    rate: Fraction
    """The film's frame rate (frames per second)."""
    shot_starts: list[float]
    """Where each clip starts in the film, in seconds."""
    has_audio: bool


def _streams(path: Path) -> Probe:
    try:
        return read_clip(path)
    except UnreadableClip as exc:
        raise JoinError(str(exc)) from exc


def join(
    clips: Sequence[Path],
    destination: Path,
    *,
    crossfade_seconds: float = 0.0,
    keep_audio: bool = True,
    progress: Progress | None = None,
) -> Joined:
    """Join ``clips`` in order into an H.264 MP4 at ``destination`` (written atomically).

    ``crossfade_seconds`` 0 cuts; above 0, each join blends that long (the film is shorter by
    it once per join). A clip may appear more than once.

    Raises:
        JoinError: a clip cannot be read or decoded, or the film cannot be written.
    """
    import av

    probes = [_streams(path) for path in clips]
    videos = [found.video for found in probes]
    sounds = [found.audio for found in probes]
    copy_video = crossfade_seconds == 0 and videos[0].codec == "h264" and all(video == videos[0] for video in videos)
    first_sound = next((sound for sound in sounds if sound is not None), None) if keep_audio else None
    copy_audio = copy_video and first_sound is not None and all(sound == first_sound for sound in sounds)
    try:
        with atomic_path(destination) as partial, av.open(
            str(partial), mode="w", format="mp4", options={"movflags": "+faststart"}
        ) as output:
            if copy_video:
                joined = _copy(output, clips, first_sound, copy_audio, progress)
            else:
                joined = _reencode(output, clips, videos[0], first_sound, crossfade_seconds, progress)
    except av.error.FFmpegError as exc:
        raise JoinError(f"the film could not be made: {exc}") from exc
    return joined


# -- stream copy ------------------------------------------------------------------------


def _copy(
    output: av.container.OutputContainer,
    clips: Sequence[Path],
    sound: AudioStream | None,
    copy_audio: bool,
    progress: Progress | None,
) -> Joined:
    """Remux every clip's packets one after the other, each clip's timestamps shifted to follow the last."""
    import av

    with av.open(str(clips[0])) as first:
        rate = first.streams.video[0].average_rate or DEFAULT_RATE
        out_video = output.add_stream_from_template(first.streams.video[0])
        out_audio = output.add_stream_from_template(first.streams.audio[0]) if copy_audio else None
    encoder = _AudioEncoder(output, sound) if sound is not None and not copy_audio else None
    offset = Fraction(0)
    starts: list[float] = []
    last_dts: dict[int, Fraction] = {}
    """Per output stream, the last decoding time written, in seconds (clips may differ in time base)."""
    written = 0
    for index, path in enumerate(clips):
        starts.append(float(offset))
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            pairs = [(video, out_video)]
            if out_audio is not None:
                pairs.append((container.streams.audio[0], out_audio))
            # Per stream, in its own ticks so the loop below does integer sums only: the shift
            # that puts this clip after the last one, and the last decoding time written so far.
            targets = {source.index: target for source, target in pairs}
            shifts = {source.index: round(offset / source.time_base) for source, _ in pairs}
            floors = {
                source.index: math.floor(last_dts[target.index] / source.time_base) if target.index in last_dts else None
                for source, target in pairs
            }
            # A frame's length, for packets that state none (some muxers write 0).
            frame_ticks = round(1 / ((video.average_rate or DEFAULT_RATE) * video.time_base))
            end_ticks = 0
            for packet in container.demux(*(source for source, _ in pairs)):
                if packet.dts is None:
                    continue  # the demuxer's end-of-stream marker
                number = packet.stream_index
                is_video = number == video.index
                if is_video and packet.pts is not None:
                    end_ticks = max(end_ticks, packet.pts + (packet.duration or frame_ticks))
                shift = shifts[number]
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                previous = floors[number]
                if previous is not None and packet.dts <= previous:
                    if not is_video:
                        continue  # an audio priming packet overlapping the previous clip's last one
                    packet.dts = previous + 1  # keep decoding order strictly increasing
                floors[number] = packet.dts
                packet.stream = targets[number]
                output.mux(packet)
                written += 1
                if progress is not None and written % PROGRESS_EVERY == 0:
                    progress((index + 0.5) / len(clips))
            for source, target in pairs:
                if floors[source.index] is not None:
                    last_dts[target.index] = floors[source.index] * source.time_base
            end = offset + end_ticks * video.time_base
        if encoder is not None:
            encoder.add(path, skip=0.0, seconds=float(end - offset))
        offset = end
        if progress is not None:
            progress((index + 1) / len(clips))
    if encoder is not None:
        encoder.close()
    return Joined("stream_copy", rate, starts, out_audio is not None or encoder is not None)


# -- re-encode --------------------------------------------------------------------------


def _reencode(
    output: av.container.OutputContainer,
    clips: Sequence[Path],
    first: VideoStream,
    sound: AudioStream | None,
    crossfade_seconds: float,
    progress: Progress | None,
) -> Joined:
    """Decode, fit, resample, blend and encode every frame; see the module docstring."""
    from av.video.frame import PictureType

    rate = first.rate or DEFAULT_RATE
    width, height = first.width - first.width % 2, first.height - first.height % 2
    stream = output.add_stream("libx264", rate=rate, options=ENCODER_OPTIONS)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    encoder = _AudioEncoder(output, sound) if sound is not None else None
    blend_frames = round(crossfade_seconds * rate)
    counts = [_frame_count(path, rate) for path in clips]
    total = sum(counts) - blend_frames * (len(clips) - 1)
    starts: list[float] = []
    emitted = 0

    def emit(frame: VideoFrame) -> None:
        nonlocal emitted
        frame.pts, frame.time_base = emitted, 1 / rate
        frame.pict_type = PictureType.NONE  # the encoder picks frame types, not the source's decoder
        output.mux(stream.encode(frame))
        emitted += 1
        if progress is not None and emitted % PROGRESS_EVERY == 0:
            progress(emitted / total)

    # One clip is decoded at a time, two across a crossfade, in step: nothing is held in memory.
    current = _frames_at_rate(clips[0], rate, counts[0], (width, height))
    blended = 0  # frames of the current clip already blended into the previous one
    try:
        for index, (path, count) in enumerate(zip(clips, counts)):
            starts.append(float((emitted - blended) / rate))
            fade = blend_frames if index < len(clips) - 1 else 0
            if count < blended + fade + 1:
                raise JoinError(f"{path.name} is too short ({count} frames) for crossfades of {blend_frames} frames")
            for _ in range(count - blended - fade):
                emit(next(current))
            if index < len(clips) - 1:
                upcoming = _frames_at_rate(clips[index + 1], rate, counts[index + 1], (width, height))
                for number in range(fade):
                    emit(_blend(next(current), next(upcoming), (number + 1) / (fade + 1)))
                current.close()
                current = upcoming
            blended = fade
            if encoder is not None:
                lead = crossfade_seconds / 2 if index > 0 else 0.0
                trail = crossfade_seconds / 2 if fade else 0.0
                encoder.add(path, skip=lead, seconds=float(count / rate) - lead - trail)
    finally:
        current.close()
    output.mux(stream.encode(None))
    if encoder is not None:
        encoder.close()
    return Joined("re_encode", rate, starts, encoder is not None)


def _frame_count(path: Path, rate: Fraction) -> int:
    """Frames the clip fills at ``rate``, rounded up so that a film is never shorter than its clips."""
    return max(1, math.ceil(_streams(path).picture_seconds * rate - Fraction(1, 1000)))


def _frames_at_rate(path: Path, rate: Fraction, count: int, size: tuple[int, int]) -> Generator[VideoFrame]:
    """Exactly ``count`` frames of the clip at ``rate``, fitted to ``size``: for each output time,
    the source frame showing then (repeated or skipped as the rates differ; the last one held).
    The clip stays open until the generator is exhausted or closed."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fit = _Fitter(size)
        decoded = (fit(frame) for frame in container.decode(stream))
        current = next(decoded, None)
        if current is None:
            raise JoinError(f"no frame of {path.name} could be decoded")
        start = current.time or 0.0
        upcoming = next(decoded, None)
        half = 0.5 / float(rate)
        for number in range(count):
            moment = start + number / float(rate)
            while upcoming is not None and (upcoming.time or 0.0) <= moment + half:
                current, upcoming = upcoming, next(decoded, None)
            yield current


class _Fitter:
    """Frames scaled to fit ``size`` keeping their shape, centred on black, as yuv420p."""

    def __init__(self, size: tuple[int, int]) -> None:
        self._size = size
        self._graph: av.filter.Graph | None = None

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if (frame.width, frame.height) == self._size and frame.format.name == "yuv420p":
            return frame
        if self._graph is None:
            self._graph = self._build(frame)
        self._graph.push(frame)
        return self._graph.vpull()

    def _build(self, frame: VideoFrame) -> av.filter.Graph:
        import av

        width, height = self._size
        graph = av.filter.Graph()
        graph.link_nodes(
            graph.add_buffer(
                width=frame.width, height=frame.height, format=frame.format.name, time_base=frame.time_base or Fraction(1, 1000)
            ),
            graph.add("scale", f"{width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"),
            graph.add("pad", f"{width}:{height}:(ow-iw)/2:(oh-ih)/2:black"),
            graph.add("setsar", "1"),
            graph.add("format", "yuv420p"),
            graph.add("buffersink"),
        ).configure()
        return graph


def _blend(before: VideoFrame, after: VideoFrame, weight: float) -> VideoFrame:
    """``after`` mixed over ``before`` with ``weight`` (0 to 1), as a new yuv420p frame."""
    from av.video.frame import VideoFrame
    from PIL import Image

    mixed = Image.blend(before.to_image(), after.to_image(), weight)
    return VideoFrame.from_image(mixed).reformat(format="yuv420p")


# -- audio ------------------------------------------------------------------------------


class _AudioEncoder:
    """An AAC track built clip by clip: each clip's sound (or silence) for exactly its segment."""

    def __init__(self, output: av.container.OutputContainer, sound: AudioStream) -> None:
        self._output = output
        self._rate = sound.rate
        self._layout = sound.layout
        self._stream = output.add_stream("aac", rate=sound.rate, layout=sound.layout)
        self._stream.bit_rate = AUDIO_BIT_RATE
        self._written = 0

    def add(self, path: Path, *, skip: float, seconds: float) -> None:
        """``seconds`` of the clip's sound from ``skip`` seconds in, padded with silence."""
        import av

        wanted = round(seconds * self._rate)
        skipped = round(skip * self._rate)
        fifo = av.AudioFifo()
        with av.open(str(path)) as container:
            if container.streams.audio:
                resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self._rate)
                for frame in container.decode(container.streams.audio[0]):
                    self._fill(fifo, resampler.resample(frame))
                    if fifo.samples >= skipped + wanted:
                        break
                self._fill(fifo, resampler.resample(None))
        if skipped:
            fifo.read(min(skipped, fifo.samples))
        if fifo.samples < wanted:
            fifo.write(self._silence(wanted - fifo.samples))
        while wanted > 0:
            chunk = min(wanted, AAC_FRAME)
            self._encode(fifo.read(chunk))
            wanted -= chunk

    @staticmethod
    def _fill(fifo: av.AudioFifo, frames: list[AudioFrame]) -> None:
        for frame in frames:
            frame.pts = None  # the fifo checks continuity of stated timestamps; ours restart per clip
            fifo.write(frame)

    def _encode(self, frame: AudioFrame) -> None:
        frame.pts, frame.time_base = self._written, Fraction(1, self._rate)
        self._written += frame.samples
        self._output.mux(self._stream.encode(frame))

    def _silence(self, samples: int) -> AudioFrame:
        from av.audio.frame import AudioFrame

        frame = AudioFrame(format="fltp", layout=self._layout, samples=samples)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = self._rate
        return frame

    def close(self) -> None:
        self._output.mux(self._stream.encode(None))
