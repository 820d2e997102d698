"""The one run loop: ``run(inputs, output, options, on_event=...)`` plans the run once (``planning.py``),
loads the network, hands the feed's jobs to an executor and reports each job, in input order, as events.

Executors are strategies for where decoding, drawing and encoding run; they share the loop, its sink, its
timing helper (``job.timed``) and its events:

- ``threads``: worker threads in this process (small machines, videos and streams);
- ``processes``: worker processes (image files on machines with more than a few cores);
- ``device``: image files decoded and encoded by nvImageCodec, pictures drawn in the fused graph on a GPU;
- ``shards``: the device executor in this process and in shard processes with networks of their own (large
  folders);
- ``ray``: a Ray cluster (``options.ray``; the workers load the network).

It never prints: it hands ``Started``, ``ImageDone``, ``ImageFailed``, ``SourceEnded`` and ``Finished``
events to ``on_event`` (in input order, in the calling thread) and returns the ``Summary``. A failing image is
an ``ImageFailed`` event and the run goes on; a source that fails (a stream that never sends, a camera
unplugged) is a ``SourceEnded`` event with its error and the other sources go on; a problem with the run
itself (bad options, no inputs, an unwritable output, a model that cannot load) is a SegnetError raised
before any image is processed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..drawing import DrawSpec
from ..options import Options
from ..util import redact
from ..zoo.registry import DEFAULT_NETWORK
from . import processes as worker_processes
from .events import Event, Finished, ImageDone, ImageFailed, Started, Summary
from .feeds import Feed, FrameFeeds, ImageFeed
from .job import Job
from .planning import Inputs, plan
from .stats import StatsLog, wants_records
from .stats import record as stats_record


def run(inputs: Inputs | Feed, output: str | os.PathLike | None = None, options: Options | None = None, *,
        on_event: Callable[[Event], None] | None = None, segmenter=None, **given: Any) -> Summary:
    """Segment ``inputs`` and write each picture under ``output`` (None: write nothing). ``options`` and
    keyword options are ``segnet.Options``; ``segmenter`` reuses a loaded network instead of loading one.

    Inputs: an image, a folder, a quoted glob or a list of image paths; an image URL; a video file, a camera
    (``/dev/video0``, ``v4l2:///dev/video0``), a network stream (``rtsp://``, ``rtp://``, ``udp://``,
    ``http(s)://``) or an FFmpeg device (``lavfi://``); a ``.txt`` list of those, one per line, each with
    an optional output; or any kind added with ``register_input``. Outputs: an image, a folder, a numbered
    sequence (``out_%04i.png``), a video file, a network stream (``udp://``, ``rtp://``, ``rtsp://``),
    ``display://0``, or any kind added with ``register_output``. ``inputs`` may also be the feed that
    ``planning.plan(inputs, output, options)`` returned (``output`` is then ignored)."""
    if options is not None and not isinstance(options, Options):
        raise TypeError(f"options must be a segnet.Options, not {type(options).__name__} (Options(**values), or "
                        "give the options as keywords)")
    options = Options.create(options, **given)
    emit = on_event or (lambda event: None)
    feed: Feed = inputs if isinstance(inputs, (ImageFeed, FrameFeeds)) else plan(inputs, output, options)  # type: ignore[arg-type]
    feed.bind(emit)
    if isinstance(feed, ImageFeed):
        # every output is there (skip_existing), or a dead image URL: no network is loaded
        unreachable = feed.fetch_ahead()
        if not feed.pairs or unreachable is not None:
            if unreachable is not None:
                emit(ImageFailed(0, redact(str(feed.pairs[0][0])), unreachable))
            summary = Summary(0, int(unreachable is not None), feed.skipped, 0.0, feed.several)
            emit(Finished(summary))
            return summary
    processes = worker_processes.count(options, feed.total) if isinstance(feed, ImageFeed) else 0
    if processes and options.ray is None:
        worker_processes.prestart()  # workers' fork server starts while the network loads
    log_file = StatsLog(options.stats_file) if options.stats_file is not None else None
    try:
        if options.ray is not None:
            return Runner(None, feed, options, emit, log_file).run()
        if segmenter is not None:
            return Runner(segmenter, feed, options, emit, log_file, processes).run()
        from ..segmenter import Segmenter

        # the pictures, should the network run where it can draw them too (the fused graph on a GPU)
        drawing = DrawSpec.of_options(options) \
            if feed.wants_pictures() and options.image_codec != "cpu" and isinstance(feed, (ImageFeed, FrameFeeds)) \
            and (options.image_codec == "gpu" or not _small(feed)) else None
        with Segmenter(options=options, expected_images=feed.total, drawing=drawing) as loaded:
            return Runner(loaded, feed, options, emit, log_file, processes).run()
    finally:
        if log_file is not None:
            log_file.close()


def _small(feed: Feed) -> bool:
    """Too few images to pay for the GPU codec's and the drawing graph's start (about 2 s on the GPU machine
    against 1.5 s for a whole one-image run: BENCHMARKS.md, issue 20)."""
    from ..backends import QUICK_START_BELOW

    return feed.total is not None and feed.total < QUICK_START_BELOW


class Runner:
    """Feeds a plan's jobs to an executor and reports each result, in input order. ``segmenter`` None: the
    network runs elsewhere (Ray)."""

    def __init__(self, segmenter, feed: Feed, options: Options, emit: Callable[[Event], None],
                 log_file: StatsLog | None = None, processes: int = 0):
        self.segmenter, self.feed, self.options, self.emit = segmenter, feed, options, emit
        self.log_file, self.processes = log_file, processes
        self.records = wants_records(options)
        self.failed = self.done = 0

    def sink(self, job: Job) -> None:
        """Every job, in input order, whichever executor ran it: its events and statistics. A job the run
        stops on (Ctrl-C, SIGTERM, an output that fails the run) is not done: the feed's ``abort`` ends the
        outputs then, where ``done`` would finish them as if the source had ended (and wait on them)."""
        try:
            self.report(job)
        finally:
            job.result = job.picture = None  # keep memory flat
        self.feed.done(job)

    def report(self, job: Job) -> None:
        feed, options = self.feed, self.options
        if job.error is None:
            feed.write_in_order(job)  # a video: its frames are encoded in order, here
        if job.error is not None:
            self.failed += 1
            self.emit(ImageFailed(job.index, job.name, job.error))
            return
        self.done += 1
        details = feed.details(job)
        stats, data = job.table, job.record
        if job.result is not None:
            stats = job.result.stats() if options.stats and not options.stats_json else None
            if self.records:
                data = stats_record(job.result, details["source"], details.get("frame"), details.get("time"))
        if data is not None and self.log_file is not None:
            self.log_file.write(data)
        self.emit(ImageDone(job.index, job.name, job.target, job.result, stats, dict(job.times), record=data,
                            **details))

    def started(self) -> Started:
        feed, segmenter, options = self.feed, self.segmenter, self.options
        if segmenter is None:
            network = options.model.stem if options.model else options.network or DEFAULT_NETWORK
            return Started(feed.total, feed.skipped, True, network, options.input_size, None,
                           f"Ray ({options.ray or 'RAY_ADDRESS, or a local instance'})")
        return Started(feed.total, feed.skipped, feed.several, segmenter.name, segmenter.input_size,
                       segmenter.num_classes, segmenter.description, feed.live, feed.sources)

    def run(self) -> Summary:
        feed, options = self.feed, self.options
        self.emit(self.started())
        start = time.perf_counter()
        drawing = DrawSpec.of_options(options) if feed.wants_pictures() else None
        try:
            self.execute(feed, drawing)
            feed.finish()
        except BaseException as exc:
            feed.abort(interrupted=isinstance(exc, KeyboardInterrupt))  # SIGTERM too: the CLI raises a subclass
            raise
        summary = Summary(self.done, self.failed, feed.skipped, time.perf_counter() - start, feed.several,
                          ray=self.segmenter is None, dropped=feed.dropped, sources_failed=feed.failed_sources)
        self.emit(Finished(summary))
        return summary

    def execute(self, feed: Feed, drawing: DrawSpec | None) -> dict:
        """The executor for this run: Ray when asked; the device executor for image files where the network
        draws on the GPU and nvImageCodec decodes and encodes there (``image_codec``); worker processes for
        image files on many cores; threads otherwise."""
        if self.segmenter is None:
            from . import ray

            return ray.run(feed.jobs(), self.sink, self.options)
        codec = self.device_codec(feed, drawing)
        if codec is not None:
            from . import device, shards

            count = shards.count(self.options, feed, self.processes, self.records)
            if count:
                return shards.run(self.segmenter, feed.jobs(), self.sink, codec=codec, options=self.options,
                                  drawing=drawing, shards=count, total=feed.total)
            return device.run(self.segmenter, feed.jobs(), self.sink, codec=codec,
                              resident=device.RESIDENT and not (self.records or self.options.stats))
        if self.processes and feed.writes_files:
            return worker_processes.run(self.segmenter, feed.jobs(), self.sink, processes=self.processes,
                                        drawing=drawing)
        from . import threads

        # Live frames wait in the shortest queue the pipeline has: every frame it holds ahead of the network,
        # or holds back after drawing, is a frame interval of latency (a batch still fills: it takes one
        # frame after another).
        return threads.run(self.segmenter, feed.jobs(), self.sink, drawing=drawing, put=feed.put,
                           workers=self.options.workers, depth=1 if feed.live else None,
                           cancel=feed.cancel)

    def device_codec(self, feed: Feed, drawing: DrawSpec | None):
        """nvImageCodec's codec (``gpu_codec.GpuCodec``) when the device executor runs this feed: image files
        with pictures, drawn inside the graph (``draws_on_device``), and the GPU codec there (``auto``) or
        asked for (``gpu``: files it cannot take go through the CPU codecs, and one line says why). Where it
        may start on a GPU, the function that starts it in the background (about a second): the executor
        begins on the CPU codecs and calls it once its first batch has run (``device._Codecs``)."""
        mode = self.options.image_codec
        if mode == "cpu" or drawing is None or not feed.writes_files or not self.segmenter.draws_on_device:
            return None
        from .. import gpu_codec

        return gpu_codec.for_run(mode)
