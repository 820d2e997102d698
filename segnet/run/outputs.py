"""Where pictures go, every output checked before any image is processed.

- Image inputs (files, folders, globs, an image URL) write image files: one picture, a folder, or a
  numbered sequence (``plan_outputs``).
- Frame inputs (videos, cameras, streams) write through a ``FrameOutput``: picture files, a video file, a
  network stream or a window (``plan_frames``). Outputs named by a URI scheme come from a registry: a new
  kind is one class and one ``register_output`` call.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..image_io import image_format, write_image
from ..options import Options
from ..util import redact
from .uris import local_path, output_kind, scheme, sequence_name, split_url
from .writes import check_folder

log = logging.getLogger(__name__)

# -- image files ---------------------------------------------------------------------------------------------


def plan_outputs(inputs: list[Path], several: bool, output: str | os.PathLike | None,
                 classes: bool = False, base: Path | None = None) -> list[Path | None]:
    """Where each input image's picture goes, checked before any work: the format is writable and the folder
    accepts files (it is made once the whole plan is checked; that no output is an input or another output
    is ``writes.Paths.check``'s rule).

    A folder gets each picture under the input's name, in sub-folders mirroring the inputs' folders below
    their common folder (so ``"g*/x.jpg"`` cannot collide); a sequence numbers them in input order; one
    image file takes exactly one input. ``classes``: the pictures are class indices, which only lossless
    PNG keeps (a folder gets ``<name>.png``). ``base``: the folder whose tree a folder output mirrors (a
    folder input; default: the inputs' common folder)."""
    if output is None:
        return [None] * len(inputs)
    text = local_path(os.fspath(output))
    kind = output_kind(output)
    if kind == "video":
        raise UsageError(f"{text}: a video output needs a video input; give an image, a folder or a sequence "
                         "like out_%04i.jpg as output")
    if kind == "stream":
        raise UsageError(f"{text}: streams and windows take the frames of videos, cameras and network streams; "
                         "write pictures to a file or a folder")
    if classes and kind in ("image", "sequence") and Path(text).suffix.lower() != ".png":
        raise lossless_error(text)
    if kind == "image" and len(inputs) > 1:
        raise UsageError(f"{text}: {len(inputs)} inputs cannot all be written to one picture; give a folder "
                         f"({Path(text).stem}/) or a numbered sequence ({Path(text).stem}_%04i{Path(text).suffix})")
    out = Path(text)
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise UsageError(f"{text}: not a folder (a file of that name exists)")
        root = os.path.abspath(base) if base is not None else None
        if root is not None and all(os.path.abspath(p).startswith(root + os.sep) for p in inputs):
            # a folder's tree as it is seen from the folder (symlinked files keep their place in it)
            targets = [out / os.path.relpath(os.path.abspath(p), root) for p in inputs]
        else:
            top = Path(os.path.commonpath([p.resolve().parent for p in inputs]))
            targets = [out / p.resolve().relative_to(top) for p in inputs]
        if classes:
            targets = [t.with_suffix(".png") for t in targets]
    elif kind == "sequence":
        targets = [sequence_name(out, i) for i in range(len(inputs))]
    else:
        targets = [out]
    for t in {t.suffix.lower(): t for t in targets}.values():
        image_format(t)
    if kind == "folder":
        check_writable(out)  # the folder named; sub-folders mirroring the inputs' are made below it quietly
    for folder in dict.fromkeys(t.parent for t in targets):
        check_writable(folder)
    return list(targets)


def plan_url_output(url: str, output: str | os.PathLike | None, classes: bool) -> Path | None:
    """Where the picture of an image URL goes, by the rule for one image file; a folder takes the URL's file
    name."""
    if output is None:
        return None
    name = Path(unquote(urlsplit(url).path)).name or "image.png"
    stand_in = Path(tempfile.gettempdir(), f".segnet-url-{os.getpid()}", name)  # never a real file
    (target,) = plan_outputs([stand_in], False, output, classes)
    return target


def check_writable(folder: Path) -> None:
    """That pictures can be written into ``folder``; it is made once the whole plan is checked
    (``writes.Paths.create``)."""
    check_folder(folder)


def without_existing(pairs: Sequence[tuple[Path | str, Path | None]]) -> tuple[list, int]:
    """``skip_existing``: the (input, output) pairs whose output is not there yet, and how many were left."""
    kept = [(i, o) for i, o in pairs if o is None or not o.exists()]
    return kept, len(pairs) - len(kept)


def lossless_error(text: str) -> UsageError:
    return UsageError(f"{text}: {option('visualize', 'classes')} writes class indices as lossless single-channel "
                      "PNG pictures; give a folder or a .png output (out.png, out_%04i.png)")


# -- the frames of videos, cameras and streams ---------------------------------------------------------------


@runtime_checkable
class FrameOutput(Protocol):
    """Where the frames of one video, camera or stream go. ``target(n)`` says where frame ``n`` (counted
    without gaps) goes; ``write`` takes the drawn picture (uint8 ``[H, W, 3]``, or ``[H, W]`` class indices)
    with its presentation time in frames of ``rate`` (None: the next). ``in_order``: the sink writes the
    frames one after another (encoders, windows); otherwise the thread or process that drew a frame writes
    it. ``closed``: it takes no more frames (its window was closed). ``rate`` is set from the source before
    the first frame."""

    in_order: bool
    closed: bool
    rate: Fraction | None

    def target(self, frame: int) -> Any: ...

    def write(self, picture: np.ndarray, target: Any, pts: int | None) -> None: ...

    def close(self) -> None:
        """The source ended: finish the output (a video file is complete and in place)."""
        ...

    def abort(self) -> None:
        """The run stopped early: leave nothing half-written."""
        ...


#: Frame outputs named by a URI scheme: ``factory(spec, options) -> FrameOutput``. A factory whose
#: ``lossless`` attribute is true takes class-index pictures too (``--visualize classes``).
OUTPUT_KINDS: dict[str, Callable[[str, Options], FrameOutput]] = {}


def register_output(scheme_name: str, factory: Callable[[str, Options], FrameOutput]) -> None:
    """Make ``SCHEME://...`` outputs go to ``factory(spec, options)`` (a ``FrameOutput`` class, say)."""
    OUTPUT_KINDS[scheme_name.lower()] = factory


class PictureFiles:
    """Each frame as a picture file: ``<folder>/<name>-000000.png`` or a numbered sequence. Written by the
    thread or process that draws the frame, in any order."""

    in_order = False

    def __init__(self, folder: Path | None = None, prefix: str = "", sequence: Path | None = None):
        self.folder, self.prefix, self.sequence = folder, prefix, sequence
        self.closed = False
        self.rate: Fraction | None = None

    def target(self, frame: int) -> Path:
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


class VideoFile:
    """Frames encoded in order into a video file, atomically: nothing is there until it is complete."""

    in_order = True

    def __init__(self, spec: str, options: Options):
        from . import video

        self.name, self.closed = spec, False
        self.rate: Fraction | None = None
        self.file = video.VideoWriter(spec, Fraction(25), options.output_codec, options.bitrate)
        self.file.check()

    def target(self, frame: int) -> int:
        return frame

    def write(self, picture: np.ndarray, target: Any, pts: int | None) -> None:
        _colour_only(picture, self.name)
        self.file.rate = self.rate or Fraction(25)
        self.file.write(picture, pts)

    def close(self) -> None:
        self.file.close()

    def abort(self) -> None:
        self.file.abort()


#: Seconds one network operation of an RTSP output may stall (connecting, the handshake, a write).
STREAM_IO_TIMEOUT = 5
#: Network outputs and the container each carries its video in.
NETWORK = {"udp": "mpegts", "rtp": "rtp_mpegts", "rtsp": "rtsp"}


class NetworkStream:
    """Frames encoded in order and sent as a stream: ``udp://HOST:PORT`` and ``rtp://HOST:PORT`` (MPEG-TS),
    ``rtsp://HOST:PORT/PATH`` (pushed to an RTSP server). The receiver is reached with the first frame, by a
    process of its own (``sending.Sender``): a receiver that stops answering never holds up a signal."""

    in_order = True

    def __init__(self, spec: str, options: Options):
        from . import video

        kind, parts, shown = scheme(spec), split_url(spec), redact(spec)
        if kind == "rtsp" and (parts.hostname in (None, "", "@") or "@:" in spec):
            raise UsageError(f"{shown}: segnet has no built-in RTSP server (jetson's rtsp://@:port); push to one "
                             "with rtsp://HOST:PORT/PATH, e.g. a MediaMTX server, which then serves viewers")
        if kind != "rtsp" and (not parts.hostname or parts.hostname == "@" or not parts.port):
            raise UsageError(f"{shown}: give the receiver as {kind}://HOST:PORT")
        self.url, self.name, self.closed = spec, shown, False  # name: what messages say, without a password
        self.rate: Fraction | None = None
        self.container = NETWORK[kind]
        self.settings = video.EncoderSettings(video.encoder_for(options.output_codec, self.container),
                                              options.bitrate, live=True)
        # rtsp muxes the same codecs as MPEG-TS holds
        video.check_writable(self.settings, "mpegts" if kind == "rtsp" else self.container, shown)
        # a server that stops answering fails the output after STREAM_IO_TIMEOUT instead of hanging
        self.options = {"rtsp_transport": "tcp", "timeout": str(STREAM_IO_TIMEOUT * 1_000_000)} if kind == "rtsp" \
            else {}
        self.sender: Any = None

    def target(self, frame: int) -> int:
        return frame

    def write(self, picture: np.ndarray, target: Any, pts: int | None) -> None:
        from .sending import Sender

        _colour_only(picture, self.name)
        if self.sender is None:
            self.sender = Sender(self.url, self.container, self.rate or Fraction(25), self.settings, self.options,
                                 self.name)
        self.sender.write(picture, pts)

    def close(self) -> None:
        """Wait for the end of the stream: the receiver takes it, or fails within STREAM_IO_TIMEOUT."""
        if self.sender is not None:
            self.sender.close()

    def abort(self) -> None:
        """End the stream at once (Ctrl-C, SIGTERM, an error): a receiver that answers gets its end."""
        if self.sender is not None:
            self.sender.abort()


def _colour_only(picture: np.ndarray, name: str) -> None:
    if picture.ndim != 3:
        raise SegnetError(f"{name}: only colour pictures can be encoded as video")


class Display:
    """A preview window (``display://0``) through OpenCV's highgui (``segnet[display]``). Closing the window
    (or pressing Esc or q in it) ends its source."""

    in_order = True

    def __init__(self, spec: str, options: Options | None = None):
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


def _no_webrtc(spec: str, options: Options) -> FrameOutput:
    raise UsageError(f"{redact(spec)}: WebRTC output is not supported: it needs the signalling and media server that "
                     "jetson-utils builds from GStreamer's webrtcbin, and FFmpeg has none; stream with rtsp:// "
                     "to an RTSP server (which can serve WebRTC, as MediaMTX does) instead")


for _scheme in NETWORK:
    register_output(_scheme, NetworkStream)
register_output("display", Display)
register_output("webrtc", _no_webrtc)


def plan_frames(output: str | os.PathLike | None, name: str, options: Options,
                source: Path | None = None) -> FrameOutput | None:
    """The output of one video, camera or stream, checked now: a folder (frames as ``<name>-000000.png``), a
    numbered sequence, a video file, or a registered scheme (``udp://``, ``rtp://``, ``rtsp://``,
    ``display://N``, ...). ``source``: the input file (``writes.Paths`` keeps it from being overwritten)."""
    if output is None:
        return None
    text = local_path(os.fspath(output))
    kind = scheme(text)
    classes = "classes" in options.visualize
    if kind:
        factory = OUTPUT_KINDS.get(kind)
        if factory is None:
            known = ", ".join(f"{k}://" for k in OUTPUT_KINDS if k != "webrtc")
            raise UsageError(f"{redact(text)}: unknown output kind '{kind}://'; give a path, a folder, or one of "
                             f"{known}")
        if classes and not getattr(factory, "lossless", False):
            raise lossless_error(redact(text))
        return factory(text, options)
    out = Path(text)
    what = output_kind(text)
    if what == "image":
        raise UsageError(f"{text}: the frames of a video cannot all be written to one picture; give a folder "
                         f"({out.stem}/), a numbered sequence ({out.stem}_%04i{out.suffix}) or a video file (.mp4)")
    if what == "video":
        if classes:
            raise lossless_error(text)
        check_writable(out.parent)
        return VideoFile(text, options)
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
