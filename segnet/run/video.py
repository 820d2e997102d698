"""Video through PyAV (the optional extra ``segnet[video]``): reading files, cameras and network streams
frame by frame, and encoding frames into files or network streams with a chosen codec and bitrate."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..options import limit
from ..util import atomic_path, describe_os_error, redact

log = logging.getLogger(__name__)

#: Video file extensions and the container PyAV writes for each (jetson writes mp4, mkv, avi and flv).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi", ".webm": "webm",
              ".flv": "flv", ".ts": "mpegts"}
VIDEO_EXTENSIONS = tuple(CONTAINERS)

#: ``--output-codec`` names and the FFmpeg encoders that make them, best first.
CODECS = {
    "h264": ("libx264", "h264"),
    "h265": ("libx265", "hevc"),
    "hevc": ("libx265", "hevc"),
    "vp8": ("libvpx",),
    "vp9": ("libvpx-vp9",),
    "av1": ("libsvtav1", "libaom-av1", "librav1e"),
    "mpeg4": ("mpeg4",),
    "mpeg2": ("mpeg2video",),
    "mjpeg": ("mjpeg",),
}
STREAM_BITRATE = 4_000_000  # jetson's default --bitrate


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:
        raise SegnetError("video needs PyAV: pip install 'segnet[video]' (or pip install av)") from None
    return av


# -- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """What opening an input told: its frame rate and, for files, how many frames it has."""

    rate: Fraction
    frames: int | None
    duration: float | None  # seconds; None for a live source


def probe(path: str | Path) -> tuple[Fraction, int | None]:
    """``(frame rate, frame count if the container knows it)`` of a video file."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            info = _describe(container)
            return info.rate, info.frames
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise SegnetError(f"{path}: not a video PyAV can read ({exc})") from None


def _describe(container) -> Opened:
    stream = container.streams.video[0]
    duration = container.duration / 1_000_000 if container.duration else None
    return Opened(Fraction(stream.average_rate or stream.guessed_rate or 25), stream.frames or None, duration)


@dataclass
class Frame:
    """One decoded frame: uint8 ``[H, W, 3]`` RGB, its time in the source in seconds (None: unknown), and the
    seconds spent decoding it (waiting for data not counted)."""

    rgb: np.ndarray
    time: float | None
    seconds: float = 0.0


class Reader:
    """Frames of one input opened through PyAV: a file (``loops`` times; -1 forever), a camera, a network
    stream or an FFmpeg device (``live``: decoded without frame threads, which hold frames back).
    ``timeout`` (seconds) bounds every wait for data, so a silent stream ends instead of hanging. ``open()``
    first (it probes the stream), then iterate ``frames()``."""

    def __init__(self, url: str, name: str, *, format: str | None = None, options: dict[str, str] | None = None,
                 loops: int = 1, timeout: float | None = None, live: bool = False):
        self.url, self.name, self.format, self.live = url, name, format, live
        self.options = options or {}
        self.loops, self.timeout = loops, timeout
        self.container: Any = None
        self.info: Opened | None = None

    def open(self) -> Opened:
        av = _av()
        try:
            self.container = av.open(self.url, format=self.format, options=self.options,
                                     timeout=None if self.timeout is None else (self.timeout, self.timeout))
            if not self.container.streams.video:
                raise SegnetError(f"{self.name}: has no video stream")
            self.info = _describe(self.container)
        except (av.FFmpegError, OSError) as exc:
            self.close()
            raise _error(f"{self.name}: cannot open it", exc, self.timeout) from None
        return self.info

    def frames(self) -> Iterator[Frame]:
        """Every frame in order (looping a file), each with its time in the source; after a loop, times go
        on from where the last pass ended."""
        av = _av()
        if self.container is None:
            self.open()
        played, offset = 0, 0.0
        stream = self.container.streams.video[0]
        # frame threads hold frames back (a frame per thread); a live source cannot wait for them
        stream.thread_type = "SLICE" if self.live else "AUTO"
        try:
            while True:
                last = None
                for frame, spent in self._decode(stream):
                    time = None if frame.time is None else frame.time + offset
                    last = time if time is not None else last
                    start = perf_counter()
                    rgb = frame.to_ndarray(format="rgb24")
                    yield Frame(rgb, time, spent + perf_counter() - start)
                played += 1
                if 0 <= self.loops <= played or last is None:
                    return
                rate = self.info.rate if self.info is not None else Fraction(25)
                offset = last + float(1 / rate)
                self.container.seek(0)
        except (av.FFmpegError, OSError) as exc:
            raise _error(f"{self.name}: cannot decode it", exc, self.timeout) from None
        finally:
            self.close()

    def _decode(self, stream) -> Iterator[tuple[Any, float]]:
        """The stream's frames, each with the seconds its packet took to decode; when reading stops with an
        error (a live stream's timeout), the frames the decoder still holds come out first, then the error.

        A live stream joined between keyframes cannot be decoded until the next one (H.264 sends its
        parameter sets with it): until the first frame, packets the decoder refuses are dropped, for at most
        ``SEGNET_KEYFRAME_WAIT`` seconds."""
        av = _av()
        joining = self.live  # no frame decoded yet
        dropped, since, wait = 0, 0.0, limit("SEGNET_KEYFRAME_WAIT") or 60
        try:
            for packet in self.container.demux(stream):
                start = perf_counter()
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    if not joining:
                        raise
                    since = since or start
                    if start - since > wait:
                        raise SegnetError(f"{self.name}: no keyframe within {wait:g} s (nothing before one can be "
                                          "decoded); raise SEGNET_KEYFRAME_WAIT") from None
                    dropped += 1
                    continue
                if joining and frames:
                    joining = False
                    if dropped:
                        log.info("%s: joined between keyframes: %d packets before the first one dropped (%.1f s)",
                                 self.name, dropped, start - since)
                spent = (perf_counter() - start) / max(len(frames), 1)
                for frame in frames:
                    yield frame, spent
        except Exception:
            with contextlib.suppress(Exception):
                for frame in stream.codec_context.decode(None):
                    yield frame, 0.0
            raise

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None


class TimedOut(SegnetError):
    """No data arrived within the input's timeout."""


def _error(what: str, exc: Exception, timeout: float | None) -> SegnetError:
    av = _av()
    if isinstance(exc, av.ExitError) and timeout is not None:  # how PyAV's timeout interrupts FFmpeg
        return TimedOut(redact(f"{what} (no data for {timeout:g} s)"))
    return SegnetError(redact(f"{what} ({_reason(exc)})"))


def _reason(exc: Exception) -> str:
    """An FFmpeg or OS error in a few words, without its errno number and repeated URL."""
    text = getattr(exc, "strerror", None)
    return text if isinstance(text, str) and text else str(exc)


def frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video file as uint8 ``[H, W, 3]`` RGB, in order."""
    for frame in Reader(str(path), str(path)).frames():
        yield frame.rgb


# -- writing -----------------------------------------------------------------------------------------------


def offered() -> list[str]:
    """The ``--output-codec`` names this PyAV's FFmpeg can encode."""
    av = _av()
    return [name for name, encoders in CODECS.items() if any(e in av.codecs_available for e in encoders)]


def encoder_for(codec: str | None, container: str | None) -> str:
    """The FFmpeg encoder for a ``--output-codec`` name (None: h264, or vp9 for WebM); a UsageError says which
    codecs this FFmpeg has when it lacks that one."""
    av = _av()
    name = codec or ("vp9" if container == "webm" else "h264")
    for encoder in CODECS.get(name, (name,)):
        if encoder in av.codecs_available:
            try:
                if av.codec.Codec(encoder, "w").type == "video":
                    return encoder
            except (av.FFmpegError, ValueError):
                continue
    raise UsageError(f"{option('output_codec', name)}: this PyAV's FFmpeg has no {name} video encoder; it has "
                     f"{', '.join(offered())}")


@dataclass(frozen=True)
class EncoderSettings:
    encoder: str
    bitrate: int | None
    live: bool  # a network stream: low latency, regular keyframes, jetson's bitrate by default


def check_writable(settings: EncoderSettings, container: str, target: str) -> None:
    """Encode one tiny frame into an in-memory ``container`` with these settings: a codec the container
    cannot hold, or an encoder that will not open, is a UsageError before any image is processed."""
    av = _av()
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=container) as out:
            stream = _add_stream(out, settings, Fraction(25), 64, 64)
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in [*stream.encode(frame), *stream.encode()]:
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise UsageError(f"{target}: cannot write {settings.encoder} video there ({_reason(exc)}); choose "
                         f"another {option('output_codec')} or output") from None


def _add_stream(container, settings: EncoderSettings, rate: Fraction, width: int, height: int):
    stream = container.add_stream(settings.encoder, rate=rate)
    stream.width, stream.height = width, height
    formats = [f.name for f in stream.codec_context.codec.video_formats or []]
    # 4:2:0 as every player expects; MJPEG wants its full-range variant
    stream.pix_fmt = next((f for f in formats if f in ("yuv420p", "yuvj420p")), formats[0] if formats else "yuv420p")
    options: dict[str, str] = {}
    encoder = settings.encoder
    if encoder == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its banner on stderr otherwise
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # so does SVT-AV1, unless told through its environment
    if settings.live:
        if encoder in ("libx264", "libx265"):
            options.update(preset="veryfast", tune="zerolatency")
        stream.codec_context.gop_size = max(1, round(float(rate)))  # a keyframe a second: late viewers join
        stream.bit_rate = settings.bitrate or STREAM_BITRATE
    elif settings.bitrate is not None:
        stream.bit_rate = settings.bitrate
    elif encoder in ("libx264", "libx265"):
        options["crf"] = "18" if encoder == "libx264" else "20"  # constant quality, near transparent
    elif encoder == "libvpx-vp9":
        options.update(crf="30", b="0")
    elif encoder != "libsvtav1":  # SVT-AV1 keeps a constant quality by default
        stream.bit_rate = STREAM_BITRATE
    stream.options = options
    return stream


class Encoder:
    """Frames into a PyAV container at ``url`` (a file path or a network URL), opened with the first frame
    (whose size it takes). Odd sizes are padded by one edge pixel (4:2:0 needs even)."""

    def __init__(self, url: str, container: str | None, rate: Fraction, settings: EncoderSettings,
                 options: dict[str, str] | None = None, name: str | None = None):
        self.url, self.format, self.rate, self.settings = url, container, rate, settings
        self.name = name or url  # what messages call it (a video file, not its temporary name)
        self.options = options or {}
        self.container: Any = None
        self.stream: Any = None
        self.count = 0
        self.packets = 0  # muxed: the frames the file holds once closed (a frame interrupted mid-write is not)
        self.last_pts = -1

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """Encode one frame; ``pts`` in frames of the rate (default: the next one)."""
        av = _av()
        if rgb.shape[0] % 2 or rgb.shape[1] % 2:
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        try:
            if self.container is None:
                self.container = av.open(self.url, "w", format=self.format, options=self.options)
                self.stream = _add_stream(self.container, self.settings, self.rate, rgb.shape[1], rgb.shape[0])
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.last_pts = max(self.last_pts + 1, self.count if pts is None else pts)
            self.count += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
                self.packets += 1
        except (av.FFmpegError, OSError) as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        """Flush the encoder and close the container (no frames: nothing was opened)."""
        av = _av()
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
                self.packets += 1
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise self._failed(exc) from None
        self.container = None

    def _failed(self, exc: Exception) -> SegnetError:
        """One line naming the output: a full disk, a refused connection, an encoder error."""
        reason = describe_os_error(exc) if isinstance(exc, OSError) and exc.errno else _reason(exc)
        return SegnetError(redact(f"cannot write {self.name}: {reason}"))

    def abort(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):  # closing a broken container: the error that led here counts
                self.container.close()
            self.container = None


class VideoWriter:
    """A video file, written into a temporary file beside ``path`` (``util.atomic_path``), synced and renamed
    into place by ``close()`` only, so an interrupted run leaves no partial video. The temporary file is
    made with the first frame: a run that fails before any frame leaves nothing."""

    def __init__(self, path: str | Path, rate: Fraction, codec: str | None = None, bitrate: int | None = None):
        self.path = Path(path)
        container = CONTAINERS.get(self.path.suffix.lower(), "mp4")
        self.settings = EncoderSettings(encoder_for(codec, container), bitrate, live=False)
        self.container_format = container
        self.rate = rate
        self._target: atomic_path | None = None
        self._encoder: Encoder | None = None
        self.written = 0  # frames in the finished file

    def check(self) -> None:
        check_writable(self.settings, self.container_format, str(self.path))

    @property
    def count(self) -> int:
        return self._encoder.count if self._encoder is not None else 0

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        if self._encoder is None:
            self._target = atomic_path(self.path, suffix=self.path.suffix)
            self._encoder = Encoder(str(self._target.tmp), self.container_format, self.rate, self.settings,
                                    name=str(self.path))
        self._encoder.write(rgb, pts)

    def close(self) -> None:
        """Flush and move the finished video into place (no frames: no file)."""
        if self._encoder is None:
            return
        try:
            self._encoder.close()
            if self._target is not None:
                self._target.commit()
        except BaseException:
            self.abort()
            raise
        self.written = self._encoder.packets
        self._encoder = None

    def abort(self) -> None:
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
        if self._target is not None:
            self._target.discard()
