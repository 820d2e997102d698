"""Running many images: files, folders, globs, videos, cameras and network streams through the pipeline,
reported as events.

``run(inputs, output, options, on_event=...)`` is what ``segnet-console`` calls, and what a library user
calls to segment a folder, a video or a live stream. It never prints: it hands ``Started``, ``ImageDone``,
``ImageFailed``, ``SourceEnded`` and ``Finished`` events to ``on_event`` (in input order, in the calling
thread) and returns the ``Summary``. A failing image is an ``ImageFailed`` event and the run goes on; a
source that fails (a stream that never sends, a camera unplugged) is a ``SourceEnded`` event with its error
and the other sources go on; a problem with the run itself (bad options, no inputs, an unwritable output, a
model that cannot load) is a SegnetError raised before any image is processed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SegnetError, UsageError, option
from ..options import Options
from ..zoo.registry import DEFAULT_NETWORK
from . import pipeline
from . import processes as worker_processes
from .sources import FileSource, expand_inputs, plan_outputs, plan_url_output, without_existing
from .stats import StatsLog, wants_records
from .stats import record as stats_record
from .streams import SourceEnded


@dataclass(frozen=True)
class Started:
    """The network is loaded and the first image is about to start."""

    total: int | None  # images (or frames) to process; None when a video does not say, or for live sources
    skipped: int  # left out by skip_existing
    several: bool  # a folder, glob, video or stream rather than one image
    network: str
    input_size: tuple[int, int] | None  # None: each image's own (symbolic sizes), or not known here (Ray)
    num_classes: int | None  # None: not known here (on Ray the network is loaded by the workers only)
    backend: str
    live: bool = False  # a camera or network stream is among the sources
    sources: int = 1  # videos, cameras and streams read side by side


@dataclass(frozen=True)
class ImageDone:
    index: int
    name: str
    target: Any  # the output path, a video frame number, or None
    result: Any  # the Segmentation (None on Ray, where results stay on the workers)
    stats: str | None = None  # the class table, when options.stats
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    source: str | None = None  # the input as given: an image, or the video, camera or stream of a frame
    frame: int | None = None  # a frame's number in its source, from 0
    time: float | None = None  # a frame's time in its source, in seconds
    latency: float | None = None  # seconds from a frame's arrival to its result
    dropped: int = 0  # frames of this frame's source dropped so far (live sources the network was behind)
    record: dict[str, Any] | None = None  # the statistics as data (options.stats_json or options.stats_file)


@dataclass(frozen=True)
class ImageFailed:
    index: int
    name: str
    error: SegnetError


@dataclass(frozen=True)
class Summary:
    done: int
    failed: int
    skipped: int
    seconds: float
    several: bool
    ray: bool = False
    dropped: int = 0  # frames of live sources dropped because the network could not keep up
    sources_failed: int = 0  # videos, cameras or streams that stopped with an error

    @property
    def images_per_second(self) -> float:
        return self.done / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Finished:
    summary: Summary


Event = Started | ImageDone | ImageFailed | SourceEnded | Finished
Inputs = str | os.PathLike | Sequence[str | os.PathLike]


def run(inputs: Inputs, output: str | os.PathLike | None = None, options: Options | None = None, *,
        on_event: Callable[[Event], None] | None = None, segmenter=None, **given: Any) -> Summary:
    """Segment ``inputs`` and write each picture under ``output`` (None: write nothing). ``options`` and
    keyword options are ``segnet.Options``; ``segmenter`` reuses a loaded network instead of loading one.

    Inputs: an image, a folder, a quoted glob or a list of image paths; an image URL; a video file, a camera
    (``/dev/video0``, ``v4l2:///dev/video0``), a network stream (``rtsp://``, ``rtp://``, ``udp://``,
    ``http(s)://``) or an FFmpeg device (``lavfi://``); or a ``.txt`` list of those, one per line, each with
    an optional output. Outputs: an image, a folder, a numbered sequence (``out_%04i.png``), a video file, a
    network stream (``udp://``, ``rtp://``, ``rtsp://``) or ``display://0``."""
    options = Options.create(options, **given)
    emit = on_event or (lambda event: None)
    source = _plan(inputs, output, options, emit)
    if isinstance(source, tuple):
        return _run_ray(source[0], source[1], options, emit)
    if not source.jobs_planned:  # every output is there already (skip_existing): nothing needs the network
        summary = Summary(0, 0, source.skipped, 0.0, source.several)
        emit(Finished(summary))
        return summary
    if isinstance(source, FileSource) and worker_processes.count(options, source.total):
        worker_processes.prestart()  # workers' fork server starts while the network loads
    log_file = StatsLog(options.stats_file) if options.stats_file is not None else None
    try:
        if segmenter is not None:
            return Runner(segmenter, source, options, emit, log_file).run()
        from ..segmenter import Segmenter

        with Segmenter(options=options) as loaded:
            return Runner(loaded, source, options, emit, log_file).run()
    finally:
        if log_file is not None:
            log_file.close()


def _plan(inputs: Inputs, output, options: Options, emit):
    """What the run reads and where it writes, every part checked before the network is loaded."""
    from . import video
    from .outputs import local_path
    from .streams import parse_source, plan_streams, read_list

    classes = "classes" in options.visualize
    codec = options.input_codec
    if isinstance(inputs, (str, os.PathLike)):
        source = parse_source(inputs, input_codec=codec)
        entries = None
        if source.kind == "list":
            entries = read_list(Path(source.url), codec)
        elif source.kind in ("video", "live", "http"):
            entries = [(source, output)]
        elif source.kind == "image-url":
            _no_loop(options, source.spec)
            _no_ray(options, source.spec, "image URLs")
            return FileSource([source.url], [plan_url_output(source.url, output, classes)], False, False,
                              options.input_timeout)
    else:
        items = [parse_source(i, input_codec=codec) for i in inputs] if not isinstance(inputs, (str, bytes)) else []
        entries = [(s, None) for s in items] if items and any(s.kind != "path" for s in items) else None
        if entries is not None and len(entries) == 1:
            entries = [(entries[0][0], output)]
    spec = os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else "the inputs"
    if codec is not None and not any(s.spec.lower().startswith("rtp://") for s, _ in entries or []):
        raise UsageError(f"{option('input_codec', codec)} says what an rtp:// input carries; {spec} has no rtp:// "
                         "source (other sources say what they carry themselves)")
    if entries is not None:
        _no_ray(options, entries[0][0].spec)
        return plan_streams(entries, output, options, emit)
    # file:// names a path
    files, several = expand_inputs(local_path(os.fspath(inputs)) if isinstance(inputs, (str, os.PathLike))
                                   else [local_path(os.fspath(i)) for i in inputs])
    _no_loop(options, os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else str(files[0]))
    outputs = plan_outputs(files, several, output, classes)
    if options.ray is not None:
        if any(video.is_video(p) for p in files):
            raise UsageError(f"{option('ray')} runs image folders; run videos without it")
        return files, outputs
    return FileSource(files, outputs, several, options.skip_existing, options.input_timeout)


def _no_loop(options: Options, spec: str) -> None:
    if options.input_loop not in (0, 1):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; {spec} is not one")


def _no_ray(options: Options, spec: str, what: str = "videos") -> None:
    if options.ray is not None:
        raise UsageError(f"{option('ray')} runs image folders; run {what} without it ({spec})")


class Runner:
    """Feeds a source through the pipeline and reports each result, in input order."""

    def __init__(self, segmenter, source, options: Options, emit: Callable[[Event], None],
                 log_file: StatsLog | None = None):
        self.segmenter, self.source, self.options, self.emit = segmenter, source, options, emit
        self.log_file = log_file
        self.records = wants_records(options)
        self.failed = self.done = 0

    def render(self, job: pipeline.Job) -> None:
        if job.target is not None and self.source.wants_pictures():
            picture = pipeline.timed(job, "colorize", job.result.render, self.options.visualize)
            self.source.write(job, picture)

    def sink(self, job: pipeline.Job) -> None:
        try:
            if job.error is None:
                self.source.write_in_order(job)  # a video: its frames are encoded in order, here
            if job.error is not None:
                self.failed += 1
                self.emit(ImageFailed(job.index, job.name, job.error))
            else:
                self.done += 1
                details = self.source.details(job)
                stats = job.result.stats() if self.options.stats and not self.options.stats_json else None
                data = None
                if self.records:
                    data = stats_record(job.result, details["source"], details.get("frame"), details.get("time"))
                    if self.log_file is not None:
                        self.log_file.write(data)
                self.emit(ImageDone(job.index, job.name, job.target, job.result, stats, dict(job.times),
                                    record=data, **details))
        finally:
            job.result = job.picture = None  # keep memory flat
            self.source.done(job)

    def run(self) -> Summary:
        segmenter, source = self.segmenter, self.source
        self.emit(Started(source.total, source.skipped, source.several, segmenter.name, segmenter.input_size,
                          segmenter.num_classes, segmenter.description, source.live,
                          len(getattr(source, "feeds", ())) or 1))
        start = time.perf_counter()
        # Live frames wait in the shortest queue the pipeline has: every frame it holds ahead of the network,
        # or holds back after drawing, is a frame interval of latency (a batch still fills: it takes one
        # frame after another).
        depth = 1 if source.live else None
        try:
            # image files: their CPU stages may run in worker processes (every core); videos and streams: threads
            processes = worker_processes.count(self.options, source.total) if isinstance(source, FileSource) else 0
            draw = self.options.visualize if source.wants_pictures() else None
            pipeline.run(segmenter, source.jobs(), self.render, self.sink, workers=self.options.workers,
                         depth=depth, processes=processes, draw=draw)
            source.finish()
        except BaseException:
            source.abort()
            raise
        summary = Summary(self.done, self.failed, source.skipped, time.perf_counter() - start, source.several,
                          dropped=source.dropped, sources_failed=source.failed_sources)
        self.emit(Finished(summary))
        return summary


def _run_ray(inputs: list[Path], outputs: list[Path | None], options: Options, emit) -> Summary:
    """The same inputs and outputs as a local run, executed through Ray Data."""
    from . import ray as segnet_ray

    skipped = 0
    if options.skip_existing:
        kept, skipped = without_existing(list(zip(inputs, outputs)))
        inputs, outputs = [i for i, _ in kept], [o for _, o in kept]
    network = options.model.stem if options.model else options.network or DEFAULT_NETWORK
    emit(Started(len(inputs), skipped, True, network, options.input_size, None,
                 f"Ray ({options.ray or 'RAY_ADDRESS, or a local instance'})"))
    start = time.perf_counter()
    log_file = StatsLog(options.stats_file) if options.stats_file is not None else None

    def report(event) -> None:
        if log_file is not None and isinstance(event, ImageDone) and event.record is not None:
            log_file.write(event.record)
        emit(event)

    try:
        done, failed = segnet_ray.run_folder(inputs, outputs, options, on_event=report)
    finally:
        if log_file is not None:
            log_file.close()
    summary = Summary(done, failed, skipped, time.perf_counter() - start, True, ray=True)
    emit(Finished(summary))
    return summary


__all__ = ["Event", "Finished", "ImageDone", "ImageFailed", "Runner", "SourceEnded", "Started", "Summary", "run"]
