"""Running many images: a file, a folder, a glob or a video through the pipeline, reported as events.

``run(inputs, output, options, on_event=...)`` is what ``segnet-console`` calls, and what a library user
calls to segment a folder or a video. It never prints: it hands ``Started``, ``ImageDone``,
``ImageFailed`` and ``Finished`` events to ``on_event`` (in input order, in the calling thread) and
returns the ``Summary``. A failing image is an ``ImageFailed`` event and the run goes on; a problem with
the run itself (bad options, no inputs, an unwritable output, a model that cannot load) is a SegnetError
raised before any image is processed.
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
from .sources import FileSource, VideoSource, expand_inputs, plan_outputs, without_existing


@dataclass(frozen=True)
class Started:
    """The network is loaded and the first image is about to start."""

    total: int | None  # images (or frames) to process; None when a video does not say
    skipped: int  # left out by skip_existing
    several: bool  # a folder, glob or video rather than one image
    network: str
    input_size: tuple[int, int] | None  # None: each image's own (symbolic sizes), or not known here (Ray)
    num_classes: int | None  # None: not known here (on Ray the network is loaded by the workers only)
    backend: str


@dataclass(frozen=True)
class ImageDone:
    index: int
    name: str
    target: Any  # the output path, a video frame number, or None
    result: Any  # the Segmentation (None on Ray, where results stay on the workers)
    stats: str | None = None  # the class table, when options.stats
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


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

    @property
    def images_per_second(self) -> float:
        return self.done / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Finished:
    summary: Summary


Event = Started | ImageDone | ImageFailed | Finished
Inputs = str | os.PathLike | Sequence[str | os.PathLike]


def run(inputs: Inputs, output: str | os.PathLike | None = None, options: Options | None = None, *,
        on_event: Callable[[Event], None] | None = None, segmenter=None, **given: Any) -> Summary:
    """Segment ``inputs`` (an image, a folder, a quoted glob, a video, or a list of image paths) and write
    each picture under ``output`` (a file, a folder, a video; None: write nothing). ``options`` and
    keyword options are ``segnet.Options``; ``segmenter`` reuses a loaded network instead of loading one."""
    from . import video

    options = Options.create(options, **given)
    emit = on_event or (lambda event: None)
    files, several = expand_inputs(inputs)
    if options.ray is not None:
        if any(video.is_video(p) for p in files):
            raise UsageError(f"{option('ray')} runs image folders; run videos without it")
        return _run_ray(files, plan_outputs(files, several, output), options, emit)
    if not several and video.is_video(files[0]):
        source: FileSource | VideoSource = VideoSource(files[0], output)
    else:
        source = FileSource(files, plan_outputs(files, several, output), several, options.skip_existing)
        if not source.pairs:  # every output is there already (skip_existing): nothing needs the network
            summary = Summary(0, 0, source.skipped, 0.0, several)
            emit(Finished(summary))
            return summary
    if isinstance(source, FileSource) and worker_processes.count(options, source.total):
        worker_processes.prestart()  # workers' fork server starts while the network loads
    if segmenter is not None:
        return Runner(segmenter, source, options, emit).run()
    from ..segmenter import Segmenter

    with Segmenter(options=options) as loaded:
        return Runner(loaded, source, options, emit).run()


class Runner:
    """Feeds a source through the pipeline and reports each result, in input order."""

    def __init__(self, segmenter, source, options: Options, emit: Callable[[Event], None]):
        self.segmenter, self.source, self.options, self.emit = segmenter, source, options, emit
        self.failed = self.done = 0

    def render(self, job: pipeline.Job) -> None:
        if self.source.wants_pictures():
            picture = pipeline.timed(job, "colorize", job.result.render, self.options.visualize)
            self.source.write(job, picture)

    def sink(self, job: pipeline.Job) -> None:
        if job.error is None:
            self.source.write_in_order(job)  # a video: its frames are encoded in order, here
        if job.error is not None:
            self.failed += 1
            self.emit(ImageFailed(job.index, job.name, job.error))
        else:
            self.done += 1
            stats = job.result.stats() if self.options.stats else None
            self.emit(ImageDone(job.index, job.name, job.target, job.result, stats, dict(job.times)))
        job.result = job.picture = None  # keep memory flat

    def run(self) -> Summary:
        segmenter = self.segmenter
        self.emit(Started(self.source.total, self.source.skipped, self.source.several, segmenter.name,
                          segmenter.input_size, segmenter.num_classes, segmenter.description))
        start = time.perf_counter()
        try:
            # image files: their CPU stages may run in worker processes (every core); videos: threads
            processes = (worker_processes.count(self.options, self.source.total)
                         if isinstance(self.source, FileSource) else 0)
            draw = self.options.visualize if self.source.wants_pictures() else None
            pipeline.run(segmenter, self.source.jobs(), self.render, self.sink, workers=self.options.workers,
                         processes=processes, draw=draw)
            self.source.finish()
        except BaseException:
            self.source.abort()
            raise
        summary = Summary(self.done, self.failed, self.source.skipped, time.perf_counter() - start,
                          self.source.several)
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
    done, failed = segnet_ray.run_folder(inputs, outputs, options, on_event=emit)
    summary = Summary(done, failed, skipped, time.perf_counter() - start, True, ray=True)
    emit(Finished(summary))
    return summary


__all__ = ["Event", "Finished", "ImageDone", "ImageFailed", "Runner", "Started", "Summary", "run"]
