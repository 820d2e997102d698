"""What a run reads: one class per kind of input, chosen from a registry by URI scheme or, for paths, by
what the file is (jetson-utils' ``videoSource::Create`` does the same by protocol).

    image files, folders, globs   ImageFiles      a .txt list of sources     SourceList
    an image URL (http(s)://x.jpg) ImageURL        a video file               VideoFile
    a camera (/dev/video0, v4l2://) Camera         a video over http(s)://    HTTPVideo
    rtsp://, udp://                 NetworkStream  rtp://                     RTPStream
    a .sdp file                     SDPStream      lavfi:// (FFmpeg devices)  FFmpegDevice

Image kinds are read by the image-file feed (decoded where they are drawn, in threads or worker
processes). Frame kinds (``frames = True``) give a ``FrameReader`` that a background thread reads
(``feeds.py``). A new kind of input is one class and one ``register_input(scheme, cls)`` call.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..image_io import READ_EXTENSIONS, decode_image
from ..options import Options
from ..util import redact
from .uris import local_path, safe_label, scheme, split_url
from .video import Frame, Opened

log = logging.getLogger(__name__)

__all__ = ["Frame", "FrameReader", "InputKind", "Opened", "parse_input", "read_list", "register_input"]


@runtime_checkable
class FrameReader(Protocol):
    """The frames of one input: ``open()`` first (its rate, frame count and duration; ``duration`` None for
    a live source), then ``frames()`` in order, then ``close()``. A wait that times out raises
    ``video.TimedOut``; a source that cannot be read raises SegnetError."""

    def open(self) -> Opened: ...

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class InputKind:
    """One input as segnet reads it, made from the string that names it (``spec``, what is opened).
    ``name``: how messages and frame names call it; ``shown``: the spec as events, records and files show
    it; both without the password or tokens a URL may carry (``util.redact``), made so once, here.
    ``label``: a file-name-safe short name (output sub-folders)."""

    frames: ClassVar[bool] = True  # read as frames by a background reader; False: image files
    live: bool = False  # runs at its own pace (a camera, a stream): frames are dropped, not waited for
    total: int | None = None  # frames it holds, where known before reading

    def __init__(self, spec: str, name: str | None = None, label: str | None = None):
        self.spec = spec
        self.shown = redact(spec)
        self.name = redact(name or spec)
        self.label = label or safe_label(Path(split_url(spec).path).stem or self.shown)

    def reader(self, options: Options) -> FrameReader:
        raise NotImplementedError(f"{type(self).__name__} is not read as frames")

    def opened(self, info: Opened) -> bool:
        """Whether the source turned out live once open (a video over HTTP without a duration)."""
        return self.live


#: Inputs named by a URI scheme: ``factory(spec, options) -> InputKind``.
INPUT_KINDS: dict[str, Callable[[str, Options], InputKind]] = {}


def register_input(scheme_name: str, factory: Callable[[str, Options], InputKind]) -> None:
    """Make ``SCHEME://...`` inputs ``factory(spec, options)`` (an ``InputKind`` subclass, say)."""
    INPUT_KINDS[scheme_name.lower()] = factory


#: a live stream has no header to wait for: probe briefly (5 s of probing is 5 s of latency)
LIVE_PROBE = {"analyzeduration": "1000000", "probesize": "1000000"}


class _PyAV(InputKind):
    """A frame input opened through PyAV (``video.Reader``)."""

    url: str
    format: str | None = None
    av_options: dict[str, str] = {}

    def reader(self, options: Options) -> FrameReader:
        from .video import Reader

        return Reader(self.url, self.name, format=self.format, options=self.av_options, loops=1,
                      timeout=options.input_timeout, live=self.live)


class ImageFiles(InputKind):
    """An image file, a folder of images or a glob (or a list of image paths)."""

    frames = False

    def __init__(self, spec: str, path: Path):
        super().__init__(spec, spec, safe_label(path.stem))
        self.path = path

    def expand(self) -> tuple[list[Path], bool]:
        return expand_inputs(self.spec)


class ImageURL(InputKind):
    """One image fetched over HTTP(S): a URL whose path ends in an image extension."""

    frames = False

    def __init__(self, spec: str, options: Options | None = None):
        super().__init__(spec)


class SourceList(InputKind):
    """A text file of sources, one per line with an optional output."""

    frames = False

    def __init__(self, spec: str, path: Path):
        super().__init__(spec, spec, safe_label(path.stem))
        self.path = path


class VideoFile(_PyAV):
    """A video file, read at the pipeline's pace (never dropping a frame), ``input_loop`` times."""

    def __init__(self, spec: str, path: Path):
        super().__init__(spec, path.name, safe_label(path.stem))
        self.url = str(path)
        self.path = path

    def reader(self, options: Options) -> FrameReader:
        from .video import Reader

        return Reader(self.url, self.name, loops=options.input_loop, timeout=None)


class HTTPVideo(_PyAV):
    """A video over HTTP(S): a file when the server says how long it is, else a live stream."""

    def __init__(self, spec: str, options: Options | None = None):
        super().__init__(spec)
        self.url = spec

    def opened(self, info: Opened) -> bool:
        return info.duration is None


class Camera(_PyAV):
    """A V4L2 camera: ``/dev/video0`` or ``v4l2:///dev/video0``."""

    live = True
    format = "v4l2"

    def __init__(self, spec: str, device: str):
        if not Path(device).exists():
            raise UsageError(f"{redact(spec)}: no such camera ({device} does not exist)")
        super().__init__(spec, spec, safe_label(Path(device).name))
        self.url = device


class NetworkStream(_PyAV):
    """A live network stream: ``rtsp://`` (over TCP), ``udp://``."""

    live = True

    def __init__(self, spec: str, options: Options | None = None):
        parts = split_url(spec)
        super().__init__(spec, spec, safe_label(Path(parts.path).stem or f"{parts.hostname or 'stream'}-"
                                                                             f"{_port(parts) or scheme(spec)}"))
        self.url = spec
        self.av_options = dict(LIVE_PROBE)
        if scheme(spec).startswith("rtsp"):
            self.av_options["rtsp_flags"] = "prefer_tcp"


#: ``--input-codec``: the RTP payload type and encoding name an SDP tells FFmpeg (an RTP stream does not say
#: what it carries; jetson needs the same flag)
RTP_PAYLOADS = {"mpegts": (33, "MP2T"), "h264": (96, "H264"), "h265": (96, "H265"), "vp8": (96, "VP8"),
                "vp9": (96, "VP9"), "mjpeg": (26, "JPEG"), "mpeg4": (96, "MP4V-ES")}


class RTPStream(NetworkStream):
    """An RTP stream, opened through an SDP made here: it names the port and what the packets carry, so
    FFmpeg binds at once (its own guess from the first packet reopens the port and loses frames) and
    dynamic payloads such as H.264 work. ``rtp://@:PORT`` listens on every interface, as jetson's does."""

    format = "sdp"

    def __init__(self, spec: str, options: Options):
        import base64

        super().__init__(spec)
        parts = split_url(spec)
        port = _port(parts)
        if not port:
            raise UsageError(f"{self.shown}: give the port to receive on, rtp://@:PORT (or rtp://GROUP:PORT for "
                             "multicast)")
        host = parts.hostname if parts.hostname not in (None, "", "@") else "0.0.0.0"
        payload, encoding = RTP_PAYLOADS[options.input_codec or "mpegts"]
        sdp = "\r\n".join(["v=0", f"o=- 0 0 IN IP4 {host}", "s=segnet", f"c=IN IP4 {host}", "t=0 0",
                           f"m=video {port} RTP/AVP {payload}", f"a=rtpmap:{payload} {encoding}/90000", ""])
        self.url = "data:application/sdp;base64," + base64.b64encode(sdp.encode()).decode()
        self.av_options = {**LIVE_PROBE, "protocol_whitelist": "data,udp,rtp"}


class SDPStream(_PyAV):
    """A live stream described by a ``.sdp`` file."""

    live = True
    format = "sdp"

    def __init__(self, spec: str, path: Path):
        super().__init__(spec, spec, safe_label(path.stem))
        self.url = str(path)
        self.path = path
        self.av_options = {"protocol_whitelist": "file,udp,rtp,crypto,data"}


class FFmpegDevice(_PyAV):
    """An FFmpeg input device or filter graph: ``lavfi://testsrc=size=640x480:rate=30``."""

    live = True
    format = "lavfi"

    def __init__(self, spec: str, options: Options | None = None):
        super().__init__(spec, spec, "lavfi")
        self.url = spec[len("lavfi://"):]


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _refuse_csi(spec: str, options: Options) -> InputKind:
    raise UsageError(f"{redact(spec)}: MIPI CSI cameras are read through NVIDIA's Argus camera stack, which only "
                     "Jetson devices have (use jetson-inference there); give a V4L2 camera such as /dev/video0 or a "
                     "network stream instead")


def _refuse_webrtc(spec: str, options: Options) -> InputKind:
    raise UsageError(f"{redact(spec)}: WebRTC input is not supported: it needs the signalling and media server that "
                     "jetson-utils builds from GStreamer's webrtcbin, and FFmpeg (which segnet reads through) has "
                     "none; send the stream as rtsp:// or rtp:// instead")


def _http(spec: str, options: Options) -> InputKind:
    if Path(split_url(spec).path).suffix.lower() in READ_EXTENSIONS:
        return ImageURL(spec)
    return HTTPVideo(spec)


for _name, _factory in (("csi", _refuse_csi), ("webrtc", _refuse_webrtc), ("v4l2", lambda s, o: Camera(s, s[7:])),
                        ("lavfi", FFmpegDevice), ("rtsp", NetworkStream), ("rtsps", NetworkStream),
                        ("udp", NetworkStream), ("rtp", RTPStream), ("http", _http), ("https", _http)):
    register_input(_name, _factory)


def parse_input(spec: str | os.PathLike, options: Options, base: Path | None = None) -> InputKind:
    """The kind of input ``spec`` names, checked as far as it can be without opening it: unsupported kinds
    (CSI, WebRTC, unknown schemes) and missing cameras are UsageErrors. ``base``: the folder relative paths
    start from (a list's)."""
    text = os.fspath(spec)
    kind = scheme(text)
    if kind and kind != "file":
        factory = INPUT_KINDS.get(kind)
        if factory is None:
            known = ", ".join(f"{k}://" for k in INPUT_KINDS if k not in ("csi", "webrtc"))
            raise UsageError(f"{redact(text)}: unknown source kind '{kind}://'; give a file, a folder, a glob, a "
                             f"camera (/dev/video0) or one of {known}")
        return factory(text, options)
    path = Path(local_path(text))
    if base is not None and not path.is_absolute():
        path = base / path
    if str(path).startswith("/dev/video"):
        return Camera(text, str(path))
    suffix = path.suffix.lower()
    if suffix == ".txt" and path.is_file():
        return SourceList(text, path)
    if suffix == ".sdp" and path.is_file():
        return SDPStream(text, path)
    from .video import is_video

    if is_video(path) and path.is_file():
        return VideoFile(text, path)
    return ImageFiles(str(path) if base is not None else text, path)


def read_list(path: Path, options: Options) -> list[tuple[InputKind, str | None]]:
    """A text file of sources: one per line, ``SOURCE [OUTPUT]`` (quoted if they hold spaces), ``#`` comments
    and blank lines ignored, relative paths from the list's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the list of sources ({exc})") from None
    entries: list[tuple[InputKind, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise UsageError(f"{path}, line {number}: {exc}") from None
        if not words:
            continue
        if len(words) > 2:
            raise UsageError(f"{path}, line {number}: give a source and at most one output, quoted if they hold "
                             "spaces")
        source = parse_input(words[0], options, path.parent)
        if isinstance(source, SourceList):
            raise UsageError(f"{path}, line {number}: a list of sources cannot name another list")
        if not source.frames:
            missing = isinstance(source, ImageFiles) and not source.path.exists()
            raise UsageError(f"{path}, line {number}: {words[0]}: " + (
                "no such file" if missing else "a list takes videos, cameras and streams; give images as a "
                "folder or a quoted glob"))
        output = words[1] if len(words) > 1 else None
        if output is not None and not scheme(output) and not Path(output).is_absolute():
            output = str(path.parent / output)
        entries.append((source, output))
    if not entries:
        raise UsageError(f"{path}: the list of sources is empty")
    return entries


def expand_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike],
                  recursive: bool = False) -> tuple[list[Path], bool]:
    """The input files of a path, folder or glob (or a list of those), and whether it names a collection
    (a folder, a glob or a list) rather than one file. Folders and globs take the images among their files;
    what they leave out is said in a status line. A folder's sub-folders are left out (and counted) unless
    ``recursive``; ``**`` in a glob matches any depth of folders."""
    if not isinstance(spec, (str, os.PathLike)):  # several paths (a glob the shell expanded): each as given alone
        files = [f for item in spec for f in expand_inputs(item, recursive)[0]]
        if not files:
            raise UsageError("no inputs: give an image, a folder or a glob")
        return files, True
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        if recursive:
            found = sorted(Path(folder, name) for folder, _, names in os.walk(path) for name in names)
            return _images_among([f for f in found if f.is_file()], text, "in this folder or below"), True
        entries = sorted(path.iterdir())
        folders = [f.name for f in entries if f.is_dir()]
        if folders:
            flag = option("recursive")
            shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
            log.info("%s: left out %d sub-folder(s) (%s); give %s to go into them", text, len(folders), shown,
                     flag if flag.startswith("-") else "recursive=True")
        return _images_among([f for f in entries if f.is_file()], text, "in this directory"), True
    if path.exists():
        return [path], False
    if glob.has_magic(text):
        matches = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
        if not matches:
            raise UsageError(f"{text}: no files match this pattern")
        return _images_among(matches, text, "matching this pattern"), True
    raise UsageError(f"{text}: no such file or directory")


def _images_among(files: list[Path], spec: str, where: str) -> list[Path]:
    images = [f for f in files if f.suffix.lower() in READ_EXTENSIONS]
    others = [f.name for f in files if f.suffix.lower() not in READ_EXTENSIONS]
    if not images:
        raise UsageError(f"{spec}: no images {where} ({', '.join(READ_EXTENSIONS)})")
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        log.info("%s: left out %d file(s) that are not images (%s)", spec, len(others), shown)
    return images


def fetch_image(url: str, timeout: float, cancel: threading.Event | None = None) -> np.ndarray:
    """An image over HTTP(S), decoded as image files are (so it gives the same pixels as the same file), at
    most ``SEGNET_MAX_URL_IMAGE_BYTES`` of it: a larger one fails before or while it streams. The whole fetch
    has a deadline (``SEGNET_URL_IMAGE_DEADLINE``), checked as each piece arrives, so a server that trickles
    fails it; ``cancel`` (set on Ctrl-C or SIGTERM) stops it at the next piece."""
    import io

    import requests
    import urllib3

    from ..options import limit

    most = int(limit("SEGNET_MAX_URL_IMAGE_BYTES") or 0)
    seconds = limit("SEGNET_URL_IMAGE_DEADLINE") or 60
    deadline = time.monotonic() + seconds
    shown = redact(url)
    too_large = SegnetError(f"{shown}: larger than {most:,} bytes, more than segnet fetches for an image (raise "
                            "SEGNET_MAX_URL_IMAGE_BYTES)")
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise SegnetError(f"{shown}: HTTP {response.status_code} {response.reason}")
            if int(response.headers.get("Content-Length") or 0) > most:
                raise too_large
            data = io.BytesIO()
            while True:
                chunk = response.raw.read1(1 << 16, decode_content=True)  # what has come, not a full 64 kB
                if not chunk:
                    break
                data.write(chunk)
                if data.tell() > most:
                    raise too_large
                if cancel is not None and cancel.is_set():
                    raise SegnetError(f"{shown}: stopped while fetching it")
                if time.monotonic() > deadline:
                    raise SegnetError(f"{shown}: not fetched within {seconds:g} s (the server sends too slowly; "
                                      "raise SEGNET_URL_IMAGE_DEADLINE)")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise SegnetError(f"{shown}: cannot fetch it: {_fetch_failure(exc, url, timeout)}") from None
    if not data.tell():
        raise SegnetError(f"{shown}: the server sent no data")
    data.seek(0)
    return decode_image(data, shown)


def _fetch_failure(exc: BaseException, url: str, timeout: float) -> str:
    """What went wrong with a fetch, in the words curl would use, not requests' class names. requests wraps
    urllib3's errors, which wrap the socket's (ConnectionError -> MaxRetryError.reason -> NewConnectionError ->
    ConnectionRefusedError), so the chain is walked for the cause."""
    import socket
    import ssl

    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS/certificate problem" + (f" ({_ssl_reason(exc)})" if _ssl_reason(exc) else "")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no answer in {timeout:g} s (the host did not take the connection)"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer in {timeout:g} s"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return "not a usable URL"
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            what = f"name not found ({split_url(url).hostname})"
            return what + (": no DNS server answered" if cause.errno == socket.EAI_AGAIN else "")
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "the server closed the connection"
        if isinstance(cause, ssl.SSLError):
            return "TLS/certificate problem"
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return f"no answer in {timeout:g} s"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        return "the connection dropped"
    return type(exc).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    pending: list = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop(0)
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        pending += [getattr(error, "reason", None), error.__cause__, error.__context__, *error.args]


def _ssl_reason(exc: BaseException) -> str:
    """The TLS library's own short reason: certificate verify failed, wrong version number, ..."""
    import ssl

    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason).lower().replace("_", " ")
    return ""
