"""Figure 6: the final cut. Six 10 s 1080p clips joined by stream copy, and with crossfades.

The clips are H.264 (libx264 ``veryfast``, crf 18, yuv420p, 24 fps) with AAC sound, made
once from FFmpeg's ``testsrc2`` pattern (detailed and moving everywhere, so the codecs work
as on real footage rather than on a flat placeholder) and copied to six files. Each run
calls :func:`kling_video_mcp.media.assembly.join`, the code the server runs on its worker
thread, and alternates with its baseline in the same process:

* stream copy beside a bare PyAV demux of the same six files (every packet read, nothing
  written): the floor any remux stands on;
* crossfades beside a bare PyAV transcode of the same frames with the same libx264 settings
  (decode, encode, write; no fitting, blending, or sound): the codecs' own cost.

Speeds are film seconds per wall-clock second ("× real time"), medians of the rounds.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from bench.report import Row, ratio_text
from bench.sizes import Size
from bench.stats import median
from kling_video_mcp.media.assembly import ENCODER_OPTIONS, join

COPY_TARGET = 50.0
CROSSFADE_TARGET = 1.0
CROSSFADE_SECONDS = 0.5
RATE = 24
AUDIO_RATE = 48_000


def make_clip(path: Path, seconds: int, height: int) -> None:
    """An H.264 + AAC clip of ``seconds`` at ``height`` p (16:9) from FFmpeg's test sources."""
    width = height * 16 // 9
    picture = f"testsrc2=size={width}x{height}:rate={RATE}:duration={seconds}"
    tone = f"sine=frequency=440:sample_rate={AUDIO_RATE}:duration={seconds}"
    with av.open(str(path), "w", format="mp4") as output:
        video = output.add_stream("libx264", rate=RATE, options=ENCODER_OPTIONS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = output.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        with av.open(picture, format="lavfi") as source:
            for frame in source.decode(video=0):
                frame = frame.reformat(format="yuv420p")
                frame.pict_type = av.video.frame.PictureType.NONE
                output.mux(video.encode(frame))
        output.mux(video.encode(None))
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        with av.open(tone, format="lavfi") as source:
            for frame in source.decode(audio=0):
                for converted in resampler.resample(frame):
                    output.mux(audio.encode(converted))
        output.mux(audio.encode(None))


def bare_demux(clips: list[Path]) -> None:
    for path in clips:
        with av.open(str(path)) as container:
            for _ in container.demux():
                pass


def bare_transcode(clips: list[Path], destination: Path) -> None:
    with av.open(str(destination), "w", format="mp4") as output:
        stream = None
        emitted = 0
        for path in clips:
            with av.open(str(path)) as container:
                source = container.streams.video[0]
                source.thread_type = "AUTO"
                if stream is None:
                    stream = output.add_stream("libx264", rate=RATE, options=ENCODER_OPTIONS)
                    stream.width, stream.height, stream.pix_fmt = source.width, source.height, "yuv420p"
                for frame in container.decode(source):
                    frame.pts, frame.time_base = emitted, Fraction(1, RATE)
                    frame.pict_type = av.video.frame.PictureType.NONE
                    output.mux(stream.encode(frame))
                    emitted += 1
        assert stream is not None
        output.mux(stream.encode(None))


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread (the codecs' own threads too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Speeds:
    """Film seconds per wall-clock second, and per CPU second spread over every core, of ours and the baseline."""

    wall: tuple[float, float]
    cores: tuple[float, float]


def speeds(rounds: int, film_seconds: float, ours: Callable[[], None], baseline: Callable[[], None]) -> Speeds:
    """Medians of ours and of the baseline, run alternately."""
    wall: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[float]] = {"ours": [], "baseline": []}
    for _ in range(rounds):
        for kind, work in (("ours", ours), ("baseline", baseline)):
            started, used = time.perf_counter(), cpu_seconds()
            work()
            wall[kind].append(time.perf_counter() - started)
            cpu[kind].append(cpu_seconds() - used)
    cores = os.cpu_count() or 1
    return Speeds(
        wall=(film_seconds / median(wall["ours"]), film_seconds / median(wall["baseline"])),
        cores=(film_seconds * cores / median(cpu["ours"]), film_seconds * cores / median(cpu["baseline"])),
    )


def run(size: Size) -> list[Row]:
    count, seconds, height, rounds = size.assembly_clips, size.assembly_clip_seconds, size.assembly_height, size.assembly_rounds
    with tempfile.TemporaryDirectory(prefix="bench-assembly-") as scratch:
        work = Path(scratch)
        make_clip(work / "clip-0.mp4", seconds, height)
        clips = [work / "clip-0.mp4"] + [shutil.copyfile(work / "clip-0.mp4", work / f"clip-{n}.mp4") for n in range(1, count)]
        film = work / "film.mp4"
        copy = speeds(rounds, count * seconds, lambda: join(clips, film), lambda: bare_demux(clips))
        faded_seconds = count * seconds - CROSSFADE_SECONDS * (count - 1)
        fade = speeds(
            rounds,
            faded_seconds,
            lambda: join(clips, film, crossfade_seconds=CROSSFADE_SECONDS),
            lambda: bare_transcode(clips, work / "bare.mp4"),
        )
    label = f"{count} × {seconds} s {height}p H.264 + AAC, median of {rounds}"
    cores = os.cpu_count()
    return [
        Row("6", f"final cut by stream copy ({label})", f"{copy.wall[0]:.0f}× real time",
            f"{copy.wall[1]:.0f}× (bare PyAV demux of the same packets)", ratio_text(*copy.wall),
            f"≥ {COPY_TARGET:.0f}× real time", copy.wall[0] >= COPY_TARGET),
        Row("6", f"final cut with {CROSSFADE_SECONDS} s crossfades ({label})", f"{fade.wall[0]:.2f}× real time",
            f"{fade.wall[1]:.2f}× (bare PyAV decode + libx264 encode, same settings)", ratio_text(*fade.wall),
            f"≥ {CROSSFADE_TARGET:.0f}× real time", fade.wall[0] >= CROSSFADE_TARGET),
        Row("6", f"crossfades, from CPU time over {cores} cores (what an idle machine allows)",
            f"{fade.cores[0]:.2f}× real time", f"{fade.cores[1]:.2f}× (the same bare transcode)", ratio_text(*fade.cores)),
    ]  # fmt: skip
