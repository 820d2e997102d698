"""What the run loop consumes: a feed of jobs and where their pictures go.

- ``ImageFeed``: image files (or one image URL) in, image files out; any thread or worker process that
  draws a picture writes it.
- ``FrameFeeds``: the frames of one or more videos, cameras and streams, each read by a background thread
  into a small buffer, each with its own ``FrameOutput``.

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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import SegnetError
from ..image_io import read_image
from ..options import Options
from ..util import redact
from .events import SourceEnded
from .inputs import InputKind, fetch_image
from .job import Job, timed, write_picture
from .outputs import FrameOutput, NetworkStream, VideoFile, without_existing

log = logging.getLogger(__name__)

LIVE_BUFFER = 2  # frames a live source keeps waiting; older ones are dropped
FILE_BUFFER = 8  # frames a file source decodes ahead


class Feed(Protocol):
    """The jobs of a run and where their pictures go, as the run loop and every executor see them."""

    total: int | None  # jobs, where known
    skipped: int  # left out by skip_existing
    several: bool  # a collection (folder, glob, video, streams) rather than one image
    live: bool
    sources: int  # videos, cameras and streams read side by side
    writes_files: bool  # ``put`` only writes image files to ``job.target``: any process may do it

    def bind(self, emit: Callable[[Any], None]) -> None:
        """Where ``SourceEnded`` events go (the run loop's ``on_event``)."""
        ...

    def jobs(self) -> Iterator[Job]: ...

    def wants_pictures(self) -> bool: ...

    def put(self, job: Job, picture: np.ndarray) -> None:
        """Called where the picture was drawn (any thread)."""
        ...

    def write_in_order(self, job: Job) -> None:
        """Called by the sink, in input order."""
        ...

    def details(self, job: Job) -> dict[str, Any]: ...

    def done(self, job: Job) -> None: ...

    @property
    def dropped(self) -> int: ...

    @property
    def failed_sources(self) -> int: ...

    def finish(self) -> None: ...

    def cancel(self) -> None:
        """Ctrl-C or SIGTERM: called before the executor waits for the work running, so that reads in flight
        stop at once."""
        ...

    def abort(self, interrupted: bool = False) -> None:
        """The run stopped early: ``interrupted`` by Ctrl-C or SIGTERM, else by an error."""
        ...


class ImageFeed:
    """Image files (or one image URL) in, image files out (or none)."""

    live = False
    dropped = failed_sources = 0
    sources = 1
    writes_files = True

    def __init__(self, inputs: Sequence[Path | str], outputs: list[Path | None], several: bool, skip_existing: bool,
                 timeout: float = 10.0):
        pairs = list(zip(inputs, outputs))
        self.pictures = any(o is not None for o in outputs)  # asked once, not a scan per image
        self.skipped = 0
        if skip_existing:
            pairs, self.skipped = without_existing(pairs)
        self.pairs, self.several, self.timeout = pairs, several, timeout
        self.total: int | None = len(pairs)
        self.cancelled = threading.Event()  # Ctrl-C or SIGTERM: fetches in flight stop
        self.fetched: np.ndarray | None = None

    def fetch_ahead(self) -> SegnetError | None:
        """A run of one image URL fetches it now, before the network loads, and keeps it for its job (it is
        not fetched again). Returns why it failed (connection refused, no answer, name not found, ...), so a
        dead URL is reported without loading the network."""
        if len(self.pairs) == 1 and isinstance(self.pairs[0][0], str) and self.fetched is None:
            try:
                self.fetched = fetch_image(self.pairs[0][0], self.timeout, self.cancelled)
            except SegnetError as exc:
                return exc
        return None

    def bind(self, emit: Callable[[Any], None]) -> None:
        pass

    def jobs(self) -> Iterator[Job]:
        for index, (item, target) in enumerate(self.pairs):
            if isinstance(item, Path):
                yield Job(index, str(item), functools.partial(read_image, item), target, path=item)
            elif self.fetched is not None:
                fetched, self.fetched = self.fetched, None
                yield Job(index, redact(str(item)), functools.partial(_same, fetched), target)
            else:
                yield Job(index, redact(item), functools.partial(fetch_image, item, self.timeout, self.cancelled),
                          target)

    def put(self, job: Job, picture) -> None:
        if job.target is not None:
            write_picture(job, picture)

    def write_in_order(self, job: Job) -> None:
        pass

    def details(self, job: Job) -> dict:
        return {"source": job.name}

    def done(self, job: Job) -> None:
        pass

    def wants_pictures(self) -> bool:
        return self.pictures

    def finish(self) -> None:
        pass

    def cancel(self) -> None:
        """Called before the executor waits for the work running: network reads stop at once."""
        self.cancelled.set()

    def abort(self, interrupted: bool = False) -> None:
        self.cancelled.set()


# -- reading frame sources in the background -------------------------------------------------------------------


@dataclass
class Waiting:
    number: int  # in the source, from 0 (a live source's dropped frames leave gaps)
    rgb: np.ndarray
    decoded: float  # seconds the reader spent decoding it
    time: float | None  # seconds in the source (files) or since its first frame (live)
    arrival: float  # time.monotonic() when it was read


class SourceReader:
    """One video, camera or stream with its output, read by a background thread into a small buffer."""

    def __init__(self, number: int, source: InputKind, output: FrameOutput | None, options: Options):
        self.number, self.source, self.output, self.options = number, source, output, options
        self.total: int | None = source.total
        self.live = source.live
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
        from .video import TimedOut

        reader = None
        try:
            reader = self.source.reader(self.options)
            info = reader.open()
            self.live = self.source.opened(info)  # a video over HTTP may turn out to be a stream
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
                        # the network is behind: the oldest waiting frame goes; until the run has taken its
                        # first frame, that one stays (the run starts at the source's first frame, however
                        # busy the machine is while it starts) and the one after it goes
                        del self.buffer[1 if self.taken == 0 else 0]
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
                log.info("%s: no frame for %g s: ended", self.source.name, self.options.input_timeout)
        except SegnetError as exc:
            self.error = exc
        except Exception as exc:  # a bug: its traceback is shown, and the other sources go on
            log.error("the reader of %s failed", self.source.name, exc_info=True)
            self.error = SegnetError(f"{self.source.name}: {type(exc).__name__}: {exc}")
        finally:
            if reader is not None:
                reader.close()
            with wake:
                self.ended = True
                wake.notify_all()

    @property
    def finished(self) -> bool:
        """Ended, and every frame it read has passed the sink."""
        return self.ended and not self.buffer and self.settled == self.taken


@dataclass
class _Taken:
    feed: SourceReader
    frame: int
    time: float | None
    arrival: float


class FrameFeeds:
    """Frames of one or more videos, cameras and streams, each with its own output. At most ``most_open``
    sources are read at once: live sources (which cannot wait) start at once, files take the places left in
    list order, each starting as another ends, so a list of 10,000 videos holds a few readers' memory."""

    writes_files = False

    def __init__(self, feeds: list[SourceReader], most_open: int | None = None):
        self.feeds = feeds
        self.most_open = max(most_open or len(feeds), sum(f.live for f in feeds), 1)
        self.queued: deque[SourceReader] = deque()
        self.emit: Callable[[Any], None] = _same
        self.several = True
        self.skipped = 0
        self.live = any(f.live for f in feeds)  # (a video over HTTP turns out live only once it is open)
        totals = [f.total for f in feeds]
        self.total: int | None = None if None in totals else sum(t for t in totals if t is not None)
        self.wake = threading.Condition()
        self.stop = threading.Event()
        self.taken: dict[int, _Taken] = {}
        self.sources = len(feeds)

    def bind(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit

    def jobs(self) -> Iterator[Job]:
        self.queued = deque(f for f in self.feeds if not f.live)
        for feed in self.feeds:
            if feed.live:
                feed.start(self.wake, self.stop)
        index = turn = 0
        while True:
            with self.wake:
                while True:
                    self._start_queued()
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

    def _start_queued(self) -> None:
        """Start files waiting their turn while fewer than ``most_open`` sources are open (a source is open
        until it has ended and its buffer is empty)."""
        while self.queued:
            open_now = sum(1 for f in self.feeds if f.thread is not None and not (f.ended and not f.buffer))
            if open_now >= self.most_open:
                return
            self.queued.popleft().start(self.wake, self.stop)

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
                self.emit(SourceEnded(feed.source.shown, feed.read, feed.dropped, feed.error))

    def _output_failed(self, feed: SourceReader, error: SegnetError) -> None:
        """An output that cannot be written (a full disk, a server gone): with one source the run fails with
        it; with several, that source stops with the error and the others go on."""
        if len(self.feeds) == 1:
            raise error
        feed.error = feed.error or error
        if feed.output is not None:
            feed.output.abort()
            feed.output.closed = True
        self.stop_feed(feed)

    def stop_feed(self, feed: SourceReader) -> None:
        """Stop reading one source (its preview window was closed); the frames it has waiting are dropped."""
        feed.halt.set()
        feed.dropped += len(feed.buffer)
        feed.buffer.clear()

    def put(self, job: Job, picture) -> None:
        """Called by the thread that drew the frame: picture files are written there, encoded frames wait for
        the sink, which encodes them in order."""
        if isinstance(job.target, Path):
            write_picture(job, picture)
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
        return {"source": taken.feed.source.shown, "frame": taken.frame, "time": taken.time,
                "latency": time.monotonic() - taken.arrival, "dropped": taken.feed.dropped}

    def done(self, job: Job) -> None:
        taken = self.taken.pop(job.index)
        with self.wake:
            taken.feed.settled += 1
            self._settle()

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

    def cancel(self) -> None:
        """Ctrl-C or SIGTERM: the readers stop now; ``abort`` then finishes or removes the outputs."""
        self.stop.set()

    def abort(self, interrupted: bool = False) -> None:
        """Ctrl-C, SIGTERM or an error: readers stop. A live source has no end, so stopping it is how it ends:
        its output is finished properly. So is a file's when the run was ``interrupted`` (as ffmpeg keeps what
        it encoded): a playable partial video of the frames done, said in a status line; after an error, a
        file's output is incomplete and removed. An interrupted network stream ends at once, its end sent only
        if the receiver takes it within ``sending.STOP_GRACE``."""
        self.stop.set()
        with self.wake:
            self.wake.notify_all()
        for feed in self.feeds:
            if feed.output is None or feed.reported:
                continue
            feed.reported = True
            if interrupted and isinstance(feed.output, NetworkStream):
                feed.output.abort()  # its end, if the receiver takes it at once: a stalled one holds nothing up
            elif feed.live or interrupted:
                try:
                    feed.output.close()
                except SegnetError as exc:
                    log.error("%s", exc)
                    continue
                if not feed.live and isinstance(feed.output, VideoFile):
                    _say_partial(feed, feed.output)
            else:
                feed.output.abort()


def _say_partial(feed: SourceReader, output: VideoFile) -> None:
    frames = output.file.written
    if not frames:
        log.info("%s: stopped before any frame was encoded: no video written", output.name)
        return
    of = f" of {feed.total}" if feed.total is not None else ""
    log.info("%s: stopped after %d%s frames: kept as a partial video of those frames", output.name, frames, of)


def _gone(feed: SourceReader) -> bool:
    return feed.output is not None and feed.output.closed


def _same(value):
    return value
