"""Video files in and out through PyAV (the optional extra ``segnet[video]``): every frame, in order, at the
input's frame rate; H.264 out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegnetError
from ..util import atomic_path, writing

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:
        raise SegnetError("video needs PyAV: pip install 'segnet[video]' (or pip install av)") from None
    return av


def probe(path: str | Path) -> tuple[Fraction, int | None]:
    """``(frame rate, frame count if the container knows it)``."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return Fraction(stream.average_rate or stream.guessed_rate or 25), (stream.frames or None)
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise SegnetError(f"{path}: not a video PyAV can read ({exc})") from None


def frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame as uint8 ``[H, W, 3]`` RGB, in order."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise SegnetError(f"{path}: cannot decode video ({exc})") from None


class VideoWriter:
    """H.264 (yuv420p) into a temporary file beside ``path`` (``util.atomic_path``), synced and renamed into
    place by ``close()`` only, so an interrupted run leaves no partial video. The temporary file is made
    with the first frame: a run that fails before any frame leaves nothing. Odd sizes are padded by one
    edge pixel (yuv420p needs even)."""

    def __init__(self, path: str | Path, rate: Fraction, crf: int = 18):
        self.path = Path(path)
        self.rate, self.crf = rate, crf
        self.container: Any = None  # PyAV's output container and stream, made with the first frame
        self.stream: Any = None
        self._target: atomic_path | None = None  # where the video goes while it is being written
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        with writing(self.path):  # a full disk: one line naming the video, not PyAV's OSError
            self._write(rgb)

    def _write(self, rgb: np.ndarray) -> None:
        av = _av()
        if self.container is None:
            self._target = atomic_path(self.path, suffix=self.path.suffix)
            h, w = rgb.shape[:2]
            self.container = av.open(str(self._target.tmp), "w")
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(self.crf)}
        if rgb.shape[0] % 2 or rgb.shape[1] % 2:
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush and move the finished video into place (no frames: no file)."""
        if self.container is None:
            return
        try:
            with writing(self.path):
                for packet in self.stream.encode():
                    self.container.mux(packet)
                self.container.close()
            self.container = None
            if self._target is not None:
                self._target.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):  # closing a broken container: the error that led here counts
                self.container.close()
            self.container = None
        if self._target is not None:
            self._target.discard()
