"""One unit of work (an image, or a video frame) on its way through a run, and the one timing helper every
executor uses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SegnetError


@dataclass
class Job:
    """One input: ``load()`` returns the image (a path, PIL image or uint8 array) or raises SegnetError."""

    index: int
    name: str
    load: Callable[[], Any]
    target: Any = None  # where the picture goes (a path, a frame number); the feed's business
    result: Any = None  # the Segmentation once done (None on Ray, where results stay on the workers)
    error: SegnetError | None = None
    times: dict[str, float] = field(default_factory=dict)  # seconds per stage
    picture: Any = None  # a drawn frame waiting for an in-order encoder
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage (of the thread that ran it)
    payload: Any = None  # the prepared image on its way from a worker process to the network
    path: Path | None = None  # the image file it reads, when it reads one (Ray reads it on the cluster)
    table: str | None = None  # the --stats table, when an executor made it where the result stayed (Ray)
    record: dict[str, Any] | None = None  # likewise, the statistics as data


def timed(job: Job, stage: str, fn, *args):
    """``fn(*args)``, its duration added to ``job.times[stage]`` and the CPU time of this thread to
    ``job.cpu[stage]``."""
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return fn(*args)
    finally:
        job.times[stage] = job.times.get(stage, 0.0) + time.perf_counter() - start
        job.cpu[stage] = job.cpu.get(stage, 0.0) + time.thread_time() - cpu


@contextlib.contextmanager
def timed_together(jobs: Sequence[Job], stage: str) -> Iterator[None]:
    """``timed`` for work done for several jobs at once (a batch through the network, a batch decoded): the
    block's wall and CPU time, shared out equally, added to each job's ``stage``."""
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        if jobs:
            wall, used = (time.perf_counter() - start) / len(jobs), (time.thread_time() - cpu) / len(jobs)
            for job in jobs:
                job.times[stage] = job.times.get(stage, 0.0) + wall
                job.cpu[stage] = job.cpu.get(stage, 0.0) + used


def prepare_job(segmenter, job: Job):
    """Load and prepare ``job``'s image; None with ``job.error`` set when it cannot be read."""
    try:
        image = timed(job, "decode", job.load)
        return timed(job, "preprocess", segmenter.prepare, image)
    except SegnetError as exc:
        job.error = exc
        return None


def draw_job(job: Job, image, class_map, colors, drawing, region, put: Callable[[Job, Any], None]) -> None:
    """What every executor does once a class map is there: draw the picture with ``drawing.draw`` (timed
    as ``colorize``; ``region``: the image's letterbox part of the grid, None for all) and hand it to ``put``
    (the feed's writer: a file, or the in-order encoder)."""
    from ..drawing import draw

    picture = timed(job, "colorize", draw, image, class_map, colors, drawing.with_region(region))
    put(job, picture)


def write_picture(job: Job, picture) -> None:
    """``put`` for image files: the picture written atomically to ``job.target`` (timed as ``encode``)."""
    from ..image_io import write_image

    timed(job, "encode", write_image, picture, job.target)
