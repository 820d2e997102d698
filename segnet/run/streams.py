"""Videos, cameras and network streams in: what an input URI names, lists of sources, and the feeds that
read them in background threads and hand their frames to the pipeline.

A file is read at the pipeline's pace and never loses a frame. A live source (a camera, a network stream, an
FFmpeg device) runs at its own pace: its reader keeps at most ``LIVE_BUFFER`` frames waiting, and when a newer
frame arrives while that many wait, the oldest is dropped and counted, so latency stays bounded when the
network cannot keep up. Several sources are read side by side and their frames are taken in turn from
whichever sources have one waiting, so the network sees them batched together and a slow or dead source
never holds up the others.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..image_io import READ_EXTENSIONS, decode_image, write_image
from ..options import Options
from .outputs import FrameOutput, local_path, plan_frames, scheme
from .pipeline import Job, timed

log = logging.getLogger(__name__)

LIVE_BUFFER = 2  # frames a live source keeps waiting; older ones are dropped
FILE_BUFFER = 8  # frames a file source decodes ahead
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtp", "udp", "http", "https")


@dataclass(frozen=True)
class Source:
    """One input as segnet reads it. ``kind``: ``path`` (images, a folder or a glob: the file runner's),
    ``video`` (a video file), ``live`` (camera, network stream, device), ``http`` (a video over HTTP: live
    when it has no duration), ``image-url`` or ``list`` (a text file of sources)."""

    spec: str  # as the user gave it
    kind: str
    url: str = ""  # what PyAV opens
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    name: str = ""  # how messages and frame names call it
    label: str = ""  # a file-name-safe short name (output sub-folders)


#: ``--input-codec``: the RTP payload type and encoding name an SDP tells FFmpeg (an RTP stream does not say
#: what it carries; jetson needs the same flag)
RTP_PAYLOADS = {"mpegts": (33, "MP2T"), "h264": (96, "H264"), "h265": (96, "H265"), "vp8": (96, "VP8"),
                "vp9": (96, "VP9"), "mjpeg": (26, "JPEG"), "mpeg4": (96, "MP4V-ES")}
#: a live stream has no header to wait for: probe briefly (5 s of probing is 5 s of latency)
LIVE_PROBE = {"analyzeduration": "1000000", "probesize": "1000000"}


def parse_source(spec: str | os.PathLike, base: Path | None = None, input_codec: str | None = None) -> Source:
    """What ``spec`` names, checked as far as it can be without opening it: unsupported kinds (CSI, WebRTC,
    unknown schemes) and missing cameras are UsageErrors. ``base``: the folder relative paths start from;
    ``input_codec``: what an ``rtp://`` source carries."""
    text = os.fspath(spec)
    kind = scheme(text)
    if kind == "csi":
        raise UsageError(f"{text}: MIPI CSI cameras are read through NVIDIA's Argus camera stack, which only "
                         "Jetson devices have (use jetson-inference there); give a V4L2 camera such as "
                         "/dev/video0 or a network stream instead")
    if kind == "webrtc":
        raise UsageError(f"{text}: WebRTC input is not supported: it needs the signalling and media server that "
                         "jetson-utils builds from GStreamer's webrtcbin, and FFmpeg (which segnet reads "
                         "through) has none; send the stream as rtsp:// or rtp:// instead")
    if kind == "v4l2":
        return _camera(text, text[len("v4l2://"):])
    if kind == "lavfi":
        graph = text[len("lavfi://"):]
        return Source(text, "live", graph, "lavfi", name=text, label="lavfi")
    if kind in NETWORK_SCHEMES:
        parts = urlsplit(text)
        stem = Path(parts.path).stem
        label = _safe(stem or f"{parts.hostname or 'stream'}-{parts.port or kind}")
        if kind in ("http", "https"):
            if Path(parts.path).suffix.lower() in READ_EXTENSIONS:
                return Source(text, "image-url", text, name=text, label=label)
            return Source(text, "http", text, name=text, label=label)
        if kind == "rtp":
            return _rtp(text, parts, input_codec, label)
        options = dict(LIVE_PROBE)
        if kind.startswith("rtsp"):
            options["rtsp_flags"] = "prefer_tcp"
        return Source(text, "live", text, options=options, name=text, label=label)
    if kind and kind != "file":
        raise UsageError(f"{text}: unknown source kind '{kind}://'; give a file, a folder, a glob, a camera "
                         "(/dev/video0, v4l2:///dev/video0), rtsp://, rtp://, udp://, http(s):// or lavfi://")
    path = Path(local_path(text))
    if base is not None and not path.is_absolute():
        path = base / path
    if str(path).startswith("/dev/video"):
        return _camera(text, str(path))
    suffix = path.suffix.lower()
    if suffix == ".txt" and path.is_file():
        return Source(text, "list", str(path), name=text, label=_safe(path.stem))
    if suffix == ".sdp" and path.is_file():
        return Source(text, "live", str(path), "sdp", {"protocol_whitelist": "file,udp,rtp,crypto,data"},
                      name=text, label=_safe(path.stem))
    from .video import is_video

    if is_video(path) and path.is_file():
        return Source(text, "video", str(path), name=path.name, label=_safe(path.stem))
    return Source(str(path) if base is not None else text, "path", str(path), name=text, label=_safe(path.stem))


def _rtp(text: str, parts, codec: str | None, label: str) -> Source:
    """An RTP stream, opened through an SDP made here: it names the port and what the packets carry, so
    FFmpeg binds at once (its own guess from the first packet reopens the port and loses frames) and
    dynamic payloads such as H.264 work. ``rtp://@:PORT`` listens on every interface, as jetson's does."""
    import base64

    try:
        port = parts.port
    except ValueError:
        port = None
    if not port:
        raise UsageError(f"{text}: give the port to receive on, rtp://@:PORT (or rtp://GROUP:PORT for multicast)")
    host = parts.hostname if parts.hostname not in (None, "", "@") else "0.0.0.0"
    payload, encoding = RTP_PAYLOADS[codec or "mpegts"]
    sdp = "\r\n".join(["v=0", f"o=- 0 0 IN IP4 {host}", "s=segnet", f"c=IN IP4 {host}", "t=0 0",
                        f"m=video {port} RTP/AVP {payload}", f"a=rtpmap:{payload} {encoding}/90000", ""])
    url = "data:application/sdp;base64," + base64.b64encode(sdp.encode()).decode()
    options = {**LIVE_PROBE, "protocol_whitelist": "data,udp,rtp"}
    return Source(text, "live", url, "sdp", options, name=text, label=label)


def _camera(spec: str, device: str) -> Source:
    if not Path(device).exists():
        raise UsageError(f"{spec}: no such camera ({device} does not exist)")
    return Source(spec, "live", device, "v4l2", name=spec, label=_safe(Path(device).name))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "source"


def read_list(path: Path, input_codec: str | None = None) -> list[tuple[Source, str | None]]:
    """A text file of sources: one per line, ``SOURCE [OUTPUT]`` (quoted if they hold spaces), ``#`` comments
    and blank lines ignored, relative paths from the list's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the list of sources ({exc})") from None
    entries: list[tuple[Source, str | None]] = []
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
        source = parse_source(words[0], path.parent, input_codec)
        if source.kind == "list":
            raise UsageError(f"{path}, line {number}: a list of sources cannot name another list")
        if source.kind in ("path", "image-url"):
            missing = source.kind == "path" and not Path(source.url).exists()
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


def fetch_image(url: str, timeout: float) -> np.ndarray:
    """An image over HTTP(S), decoded as image files are (so it gives the same pixels as the same file), at
    most ``SEGNET_MAX_URL_IMAGE_BYTES`` of it: a larger one fails before or while it streams."""
    import io

    import requests

    from ..options import limit

    most = int(limit("SEGNET_MAX_URL_IMAGE_BYTES") or 0)
    too_large = SegnetError(f"{url}: larger than {most:,} bytes, more than segnet fetches for an image (raise "
                            "SEGNET_MAX_URL_IMAGE_BYTES)")
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise SegnetError(f"{url}: HTTP {response.status_code} {response.reason}")
            if int(response.headers.get("Content-Length") or 0) > most:
                raise too_large
            data = io.BytesIO()
            for chunk in response.iter_content(1 << 16):
                data.write(chunk)
                if data.tell() > most:
                    raise too_large
    except requests.RequestException as exc:
        raise SegnetError(f"{url}: cannot fetch it ({type(exc).__name__})") from None
    if not data.tell():
        raise SegnetError(f"{url}: the server sent no data")
    data.seek(0)
    return decode_image(data, url)


# -- reading sources in the background ----------------------------------------------------------------------


@dataclass
class Waiting:
    number: int  # in the source, from 0 (a live source's dropped frames leave gaps)
    rgb: np.ndarray
    decoded: float  # seconds the reader spent decoding it
    time: float | None  # seconds in the source (files) or since its first frame (live)
    arrival: float  # time.monotonic() when it was read


class Feed:
    """One video, camera or stream source with its output, read by a background thread into a small buffer."""

    def __init__(self, number: int, source: Source, output: FrameOutput | None, options: Options):
        self.number, self.source, self.output = number, source, output
        self.loops = options.input_loop if source.kind == "video" else 1
        self.timeout = None if source.kind == "video" else options.input_timeout
        self.total: int | None = None
        self.live = source.kind == "live"
        self.buffer: deque[Waiting] = deque()
        self.read = self.dropped = self.taken = self.settled = 0
        self.ended = self.reported = False
        self.error: SegnetError | None = None
        self.first: float | None = None
        self.halt = threading.Event()  # stop this source only (its window was closed)
        self.thread: threading.Thread | None = None

    def start(self, wake: threading.Condition, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self._read, args=(wake, stop), daemon=True,
                                       name=f"segnet-source-{self.number}")
        self.thread.start()

    def _read(self, wake: threading.Condition, stop: threading.Event) -> None:
        from .video import Reader, TimedOut

        reader = Reader(self.source.url, self.source.name, format=self.source.format, options=self.source.options,
                        loops=self.loops, timeout=self.timeout, live=self.live)
        try:
            info = reader.open()
            if self.source.kind == "http" and info.duration is None:
                self.live = True  # a stream served over HTTP, not a file
            if self.output is not None:
                self.output.rate = info.rate
            for frame in reader.frames():
                if stop.is_set() or self.halt.is_set():
                    break
                now = time.monotonic()
                if self.first is None:
                    self.first = now
                stamp = frame.time if not self.live else now - self.first
                with wake:
                    if self.live and len(self.buffer) >= LIVE_BUFFER:
                        self.buffer.popleft()  # the network is behind: the oldest waiting frame goes
                        self.dropped += 1
                    while not self.live and len(self.buffer) >= FILE_BUFFER and not stop.is_set() \
                            and not self.halt.is_set():
                        wake.wait(0.1)
                    if self.halt.is_set():
                        break
                    self.buffer.append(Waiting(self.read, frame.rgb, frame.seconds, stamp, now))
                    self.read += 1
                    wake.notify_all()
        except TimedOut as exc:
            if not self.read:
                self.error = exc  # never sent anything: say so; after frames, silence is the end of it
            else:
                log.info("%s: no frame for %g s: ended", self.source.name, self.timeout)
        except SegnetError as exc:
            self.error = exc
        except Exception as exc:  # a bug: its traceback is shown, and the other sources go on
            log.error("the reader of %s failed", self.source.name, exc_info=True)
            self.error = SegnetError(f"{self.source.name}: {type(exc).__name__}: {exc}")
        finally:
            reader.close()
            with wake:
                self.ended = True
                wake.notify_all()

    @property
    def finished(self) -> bool:
        """Ended, and every frame it read has passed the sink."""
        return self.ended and not self.buffer and self.settled == self.taken


@dataclass(frozen=True)
class SourceEnded:
    """A video, camera or stream source has ended: all its frames are done and its output is closed.
    ``error``: why it stopped early (the run goes on with the other sources)."""

    source: str
    frames: int  # read from the source
    dropped: int  # of those, dropped because the network could not keep up
    error: SegnetError | None = None


@dataclass
class _Taken:
    feed: Feed
    frame: int
    time: float | None
    arrival: float


class Streams:
    """Frames of one or more videos, cameras and streams, each with its own output, as the runner's source."""

    def __init__(self, feeds: list[Feed], emit: Callable[[Any], None]):
        self.feeds, self.emit = feeds, emit
        self.several = True
        self.skipped = 0
        self.live = any(f.live for f in feeds)  # (a video over HTTP turns out live only once it is open)
        totals = [f.total for f in feeds]
        self.total: int | None = None if None in totals else sum(t for t in totals if t is not None)
        self.wake = threading.Condition()
        self.stop = threading.Event()
        self.taken: dict[int, _Taken] = {}

    def jobs(self) -> Iterator[Job]:
        for feed in self.feeds:
            feed.start(self.wake, self.stop)
        index = turn = 0
        while True:
            with self.wake:
                while True:
                    self._settle()
                    ready = [f for f in self.feeds[turn:] + self.feeds[:turn] if f.buffer and not _gone(f)]
                    if ready or all(f.ended and not f.buffer for f in self.feeds):
                        break
                    self.wake.wait(0.1)
                if not ready:
                    return
                feed = ready[0]  # in turn, among the sources that have a frame waiting
                turn = (feed.number + 1) % len(self.feeds)
                waiting = feed.buffer.popleft()
                self.wake.notify_all()
            # outputs number what they write without gaps (out_%04i.png), events name the source's frame
            target = feed.output.target(feed.taken) if feed.output is not None else None
            feed.taken += 1
            self.taken[index] = _Taken(feed, waiting.number, waiting.time, waiting.arrival)
            name = f"{feed.source.name} frame {waiting.number}"
            job = Job(index, name, functools.partial(_same, waiting.rgb), target)
            job.times["decode"] = waiting.decoded  # done by the source's reader, ahead of the pipeline
            yield job
            index += 1

    def _settle(self) -> None:
        """Close the output of, and report, every source that has finished (or whose window was closed)."""
        for feed in self.feeds:
            if feed.output is not None and feed.output.closed and not feed.ended:
                self.stop_feed(feed)
            if feed.finished and not feed.reported:
                feed.reported = True
                if feed.output is not None:
                    try:
                        feed.output.close()
                    except SegnetError as exc:
                        self._output_failed(feed, exc)
                self.emit(SourceEnded(feed.source.spec, feed.read, feed.dropped, feed.error))

    def _output_failed(self, feed: Feed, error: SegnetError) -> None:
        """An output that cannot be written (a full disk, a server gone): with one source the run fails with
        it; with several, that source stops with the error and the others go on."""
        if len(self.feeds) == 1:
            raise error
        feed.error = feed.error or error
        if feed.output is not None:
            feed.output.abort()
            feed.output.closed = True
        self.stop_feed(feed)

    def stop_feed(self, feed: Feed) -> None:
        """Stop reading one source (its preview window was closed); the frames it has waiting are dropped."""
        feed.halt.set()
        feed.dropped += len(feed.buffer)
        feed.buffer.clear()

    def write(self, job: Job, picture) -> None:
        """Called by the worker that drew the frame: picture files are written there, encoded frames wait for
        the sink, which encodes them in order."""
        if isinstance(job.target, Path):
            timed(job, "encode", write_image, picture, job.target)
        else:
            job.picture = picture

    def write_in_order(self, job: Job) -> None:
        taken = self.taken[job.index]
        output = taken.feed.output
        if job.picture is not None and output is not None and output.in_order and not output.closed:
            rate = output.rate
            pts = None
            if taken.feed.live and rate is not None and taken.time is not None:
                pts = round(taken.time * float(rate))  # live: frames keep their own times, gaps and all
            try:
                timed(job, "encode", output.write, job.picture, job.target, pts)
            except SegnetError as exc:
                with self.wake:
                    self._output_failed(taken.feed, exc)

    def details(self, job: Job) -> dict[str, Any]:
        taken = self.taken[job.index]
        return {"source": taken.feed.source.spec, "frame": taken.frame, "time": taken.time,
                "latency": time.monotonic() - taken.arrival, "dropped": taken.feed.dropped}

    def done(self, job: Job) -> None:
        taken = self.taken.pop(job.index)
        with self.wake:
            taken.feed.settled += 1
            self._settle()

    jobs_planned = True

    def wants_pictures(self) -> bool:
        return any(f.output is not None for f in self.feeds)

    @property
    def dropped(self) -> int:
        return sum(f.dropped for f in self.feeds)

    @property
    def failed_sources(self) -> int:
        return sum(f.error is not None for f in self.feeds)

    def finish(self) -> None:
        self.stop.set()
        with self.wake:
            self._settle()
        for feed in self.feeds:
            if not feed.reported:  # a feed whose frames never all came back (should not happen)
                feed.reported = True
                if feed.output is not None:
                    feed.output.close()

    def abort(self) -> None:
        """Ctrl-C or an error: readers stop. A live source has no end, so stopping it is how it ends: its
        output is finished properly; a file's output is incomplete and removed."""
        self.stop.set()
        with self.wake:
            self.wake.notify_all()
        for feed in self.feeds:
            if feed.output is None or feed.reported:
                continue
            feed.reported = True
            if feed.live:
                try:
                    feed.output.close()
                except SegnetError as exc:
                    log.error("%s", exc)
            else:
                feed.output.abort()


def _gone(feed: Feed) -> bool:
    return feed.output is not None and feed.output.closed


def _same(value):
    return value


def plan_streams(entries: Sequence[tuple[Source, str | os.PathLike | None]], output: str | os.PathLike | None,
                 options: Options, emit: Callable[[Any], None]) -> Streams:
    """The run of one or more videos, cameras and streams, every output checked now. A source without an
    output of its own writes to the run's ``output``; with several sources that must be a folder, and each
    source gets a sub-folder named after it. No two sources may share an output."""
    from .sources import output_kind
    from .video import probe

    several = len(entries) > 1
    if options.input_loop not in (0, 1) and not any(s.kind == "video" for s, _ in entries):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; "
                         f"{entries[0][0].spec} is not one")
    if several and output is not None and output_kind(output) != "folder" and any(o is None for _, o in entries):
        raise UsageError(f"{output}: {len(entries)} sources cannot share one output; give a folder (each source "
                         "gets a sub-folder) or an output for each source in the list (SOURCE OUTPUT)")
    feeds = []
    seen: dict[str, str] = {}
    labels: set[str] = set()
    for number, (source, own) in enumerate(entries):
        label, n = source.label, 1
        while label in labels:  # two cameras called video0 on different hosts: video0, video0-2
            n += 1
            label = f"{source.label}-{n}"
        labels.add(label)
        target = own if own is not None else output
        if several and own is None and output is not None:
            target = os.path.join(local_path(os.fspath(output)), label)
        if target is not None and not os.fspath(target).startswith("display://"):
            text = os.fspath(target)
            key = text if scheme(text) else os.path.abspath(local_path(text))
            if key in seen:
                raise UsageError(f"{seen[key]} and {source.spec} would both be written to {text}: give each "
                                 "source its own output")
            seen[key] = source.spec
        video_file = Path(source.url) if source.kind == "video" else None
        prefix = video_file.stem if video_file is not None and not several else label
        feed = Feed(number, source, plan_frames(target, prefix, options, video_file), options)
        if video_file is not None:
            _, count = probe(video_file)  # a file that is not a video fails here, before the network loads
            feed.total = None if count is None or feed.loops < 0 else count * max(feed.loops, 1)
        feeds.append(feed)
    return Streams(feeds, emit)
