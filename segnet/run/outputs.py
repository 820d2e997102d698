"""Where the frames of a video, camera or stream go: a video file, a network stream, a preview window, or
picture files (a folder or a numbered sequence). Each is checked before any frame is processed; encoders
and windows open with the first frame."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..image_io import image_format, write_image
from ..options import Options

#: Network outputs and the container each carries its video in.
NETWORK = {"udp": "mpegts", "rtp": "rtp_mpegts", "rtsp": "rtsp"}


def scheme(text: str) -> str:
    """The URI scheme of an input or output (``""`` for a plain path; a Windows drive letter is a path)."""
    head, sep, _ = text.partition("://")
    return head.lower() if sep and len(head) > 1 and head.replace("+", "").isalnum() else ""


def local_path(text: str) -> str:
    """``file:///x/y.mp4`` -> ``/x/y.mp4``; anything else as it is."""
    if scheme(text) == "file":
        parts = urlsplit(text)
        return unquote(parts.netloc + parts.path)
    return text


class PictureFiles:
    """Each frame as a picture file: ``<folder>/<name>-000000.png`` or a numbered sequence. Written by the
    worker that draws the frame, in any order."""

    in_order = False

    def __init__(self, folder: Path | None = None, prefix: str = "", sequence: Path | None = None):
        self.folder, self.prefix, self.sequence = folder, prefix, sequence
        self.closed = False
        self.rate: Fraction | None = None

    def target(self, frame: int) -> Path:
        from .sources import sequence_name

        if self.sequence is not None:
            return sequence_name(self.sequence, frame)
        assert self.folder is not None
        return self.folder / f"{self.prefix}-{frame:06d}.png"

    def write(self, picture: np.ndarray, target: Path, pts: int | None) -> None:
        write_image(picture, target)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Encoded:
    """Frames encoded in order into a video file (atomic: nothing until it is complete) or a network stream."""

    in_order = True

    def __init__(self, target: str, codec: str | None, bitrate: int | None):
        from . import video

        self.name = target
        self.kind = scheme(target)
        self.closed = False
        self.rate: Fraction | None = None
        if self.kind in NETWORK:
            container = NETWORK[self.kind]
            self.settings = video.EncoderSettings(video.encoder_for(codec, container), bitrate, live=True)
            # rtsp muxes the same codecs as MPEG-TS holds; the RTSP server is only reached with the first frame
            video.check_writable(self.settings, "mpegts" if container == "rtsp" else container, target)
            self.container = container
            self.options = {"rtsp_transport": "tcp"} if container == "rtsp" else {}
            self.file: Any = None
        else:
            self.file = video.VideoWriter(target, Fraction(25), codec, bitrate)
            self.file.check()
        self.encoder: Any = None

    def target(self, frame: int) -> int:
        return frame

    def write(self, picture: np.ndarray, target: Any, pts: int | None) -> None:
        from . import video

        if picture.ndim != 3:
            raise SegnetError(f"{self.name}: only colour pictures can be encoded as video")
        rate = self.rate or Fraction(25)
        if self.file is not None:
            self.file.rate = rate
            self.file.write(picture, pts)
            return
        if self.encoder is None:
            self.encoder = video.Encoder(self.name, self.container, rate, self.settings, self.options)
        self.encoder.write(picture, pts)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        elif self.encoder is not None:
            self.encoder.close()

    def abort(self) -> None:
        if self.file is not None:
            self.file.abort()
        elif self.encoder is not None:
            self.encoder.abort()


class Display:
    """A preview window (``display://0``) through OpenCV's highgui (``segnet[display]``). Closing the window
    (or pressing Esc or q in it) ends its source."""

    in_order = True

    def __init__(self, spec: str):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and os.name == "posix":
            raise UsageError(f"{spec}: there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                             "write a file or a stream instead")
        try:
            import cv2
        except ImportError:
            raise UsageError(f"{spec}: a preview window needs OpenCV: pip install 'segnet[display]'") from None
        if not hasattr(cv2, "imshow"):
            raise UsageError(f"{spec}: this OpenCV has no windows (opencv-python-headless?): "
                             "pip install 'segnet[display]'")
        self.cv2, self.title = cv2, f"segnet {spec}"
        self.closed = False
        self.opened = False
        self.rate: Fraction | None = None

    def target(self, frame: int) -> int:
        return frame

    def write(self, picture: np.ndarray, target: Any, pts: int | None) -> None:
        cv2 = self.cv2
        if self.closed:
            return
        if self.opened and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.closed = True  # the user closed it
            return
        frame = picture if picture.ndim == 2 else np.ascontiguousarray(picture[..., ::-1])  # OpenCV wants BGR
        cv2.imshow(self.title, frame)
        self.opened = True
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.closed = True

    def close(self) -> None:
        if self.opened:
            self.cv2.destroyWindow(self.title)
            self.opened = False

    def abort(self) -> None:
        self.close()


FrameOutput = PictureFiles | Encoded | Display


def plan_frames(output: str | os.PathLike | None, name: str, options: Options,
                source: Path | None = None) -> FrameOutput | None:
    """The output of one video, camera or stream, checked now: a folder (frames as ``<name>-000000.png``), a
    numbered sequence, a video file, a network stream (``udp://``, ``rtp://``: MPEG-TS; ``rtsp://``: pushed
    to an RTSP server) or ``display://N``. ``source``: the input file, which must not be overwritten."""
    from .sources import check_writable, output_kind, refuse_overwriting

    if output is None:
        return None
    text = local_path(os.fspath(output))
    kind = scheme(text)
    classes = "classes" in options.visualize
    if kind == "display":
        if classes:
            raise lossless_error(text)
        return Display(text)
    if kind == "webrtc":
        raise UsageError(f"{text}: WebRTC output is not supported: it needs the signalling and media server that "
                         "jetson-utils builds from GStreamer's webrtcbin, and FFmpeg has none; stream with rtsp:// "
                         "to an RTSP server (which can serve WebRTC, as MediaMTX does) instead")
    if kind in NETWORK:
        parts = urlsplit(text)
        if kind == "rtsp" and (parts.hostname in (None, "", "@") or "@:" in text):
            raise UsageError(f"{text}: segnet has no built-in RTSP server (jetson's rtsp://@:port); push to one "
                             "with rtsp://HOST:PORT/PATH, e.g. a MediaMTX server, which then serves viewers")
        if kind != "rtsp" and (not parts.hostname or parts.hostname == "@" or not parts.port):
            raise UsageError(f"{text}: give the receiver as {kind}://HOST:PORT")
        if classes:
            raise lossless_error(text)
        return Encoded(text, options.output_codec, options.bitrate)
    if kind:
        raise UsageError(f"{text}: unknown output kind '{kind}://'; give a path, a folder, udp://HOST:PORT, "
                         "rtp://HOST:PORT, rtsp://HOST:PORT/PATH or display://0")
    out = Path(text)
    what = output_kind(text)
    if what == "image":
        raise UsageError(f"{text}: the frames of a video cannot all be written to one picture; give a folder "
                         f"({out.stem}/), a numbered sequence ({out.stem}_%04i{out.suffix}) or a video file (.mp4)")
    if what == "video":
        if classes:
            raise lossless_error(text)
        if source is not None:
            refuse_overwriting([source], [out])
        check_writable(out.parent)
        return Encoded(text, options.output_codec, options.bitrate)
    if what == "sequence":
        image_format(out)
        if classes and out.suffix.lower() != ".png":
            raise lossless_error(text)
        check_writable(out.parent)
        return PictureFiles(sequence=out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{text}: not a folder (a file of that name exists)")
    check_writable(out)
    return PictureFiles(folder=out, prefix=name)


def lossless_error(text: str) -> UsageError:
    return UsageError(f"{text}: {option('visualize', 'classes')} writes class indices as lossless single-channel "
                      "PNG pictures; give a folder or a .png output (out.png, out_%04i.png)")
