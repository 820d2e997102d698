"""The pipelined runner for many inputs: loading and rendering in worker threads (or worker processes,
``processes.py``) overlap inference.

    loader threads ─▶ [bounded] ─▶ inference (this thread, batch_size at a time) ─▶ render threads
                                                                                  ─▶ sink (in input order)

At most ``depth`` images are being loaded and ``depth + batch_size`` rendered at any time, so memory stays
flat on any number of inputs. Results reach ``sink`` in input order. On Ctrl-C, queued work is cancelled
and work already running finishes (writes are atomic), so no half-written file is left behind.

Every stage is timed twice per job: wall time (``job.times``) and the CPU time of the thread that ran it
(``job.cpu``), from which ``segnet-bench`` derives the throughput the machine's cores allow.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SegnetError


@dataclass
class Job:
    """One input: ``load()`` returns the image (a path, PIL image or uint8 array) or raises SegnetError."""

    index: int
    name: str
    load: Callable[[], Any]
    target: Any = None  # where the result goes (a path, a frame number); the caller's business
    result: Any = None  # the Segmentation once done
    error: SegnetError | None = None
    times: dict[str, float] = field(default_factory=dict)  # seconds per stage
    picture: Any = None  # a rendered frame waiting for an in-order encoder
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage (of the thread that ran it)
    payload: Any = None  # the prepared image on its way from a worker process to the network


def timed(job: Job, stage: str, fn, *args):
    """``fn(*args)``, its duration added to ``job.times[stage]`` and the CPU time of this thread to
    ``job.cpu[stage]``."""
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return fn(*args)
    finally:
        job.times[stage] = job.times.get(stage, 0.0) + time.perf_counter() - start
        job.cpu[stage] = job.cpu.get(stage, 0.0) + time.thread_time() - cpu


def prepare_job(segmenter, job: Job):
    """Load and prepare ``job``'s image; None with ``job.error`` set when it cannot be read."""
    try:
        image = timed(job, "decode", job.load)
        return timed(job, "preprocess", segmenter.prepare, image)
    except SegnetError as exc:
        job.error = exc
        return None


def _render(segmenter, render, job: Job, prepared, scores: np.ndarray, class_map: np.ndarray | None) -> Job:
    try:
        job.result = timed(job, "classmap", segmenter.finish, prepared, scores, class_map)
        if render is not None:
            render(job)
    except SegnetError as exc:
        job.error = exc
    return job


def _done(job: Job) -> Future:
    future: Future = Future()
    future.set_result(job)
    return future


def run(segmenter, jobs: Iterable[Job], render: Callable[[Job], None] | None = None,
        sink: Callable[[Job], None] | None = None, *, workers: int = 2, depth: int | None = None,
        processes: int = 0, draw: tuple[str, ...] | None = None) -> dict:
    """Segment every job. ``render(job)`` runs in a worker thread after the class map is made (draw,
    encode, write); ``sink(job)`` runs in this thread, in input order, for every job, failed ones too
    (``job.error`` set). Jobs are dropped after the sink so memory stays bounded.

    ``processes`` > 0 runs loading and rendering in that many worker processes instead (``processes.py``):
    ``render`` is then replaced by drawing ``draw`` (the ``visualize`` modes; None: no picture) and
    writing it to ``job.target``, and every ``job.load`` must pickle. Returns ``{"kind", "workers",
    "cpu_seconds", "main_cpu_seconds"}``: how the run was spread, the CPU time it took (all threads and
    processes) and the part of it spent in this process."""
    if processes > 0:
        from . import processes as worker_processes

        return worker_processes.run(segmenter, jobs, sink, processes=processes, draw=draw, depth=depth)
    cpu_start = time.process_time()
    depth = depth or max(2 * workers, segmenter.batch_size)
    jobs = iter(jobs)
    loading: deque[tuple[Job, Future]] = deque()
    rendering: deque[Future] = deque()
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="segnet")

    def fill():
        while len(loading) < depth:
            job = next(jobs, None)
            if job is None:
                return
            loading.append((job, pool.submit(prepare_job, segmenter, job)))

    def drain(limit: int):
        while len(rendering) > limit:
            job = rendering.popleft().result()
            if sink is not None:
                sink(job)

    try:
        fill()
        while loading:
            batch: list[tuple[Job, Any]] = []
            while loading and len(batch) < segmenter.batch_size:
                job, future = loading.popleft()
                batch.append((job, future.result()))
                fill()
            ready = [(job, prepared) for job, prepared in batch if prepared is not None]
            results: Iterator = iter(())
            if ready:
                start, cpu = time.perf_counter(), time.thread_time()
                results = iter(segmenter.infer_maps([prepared.tensor for _, prepared in ready]))
                share = (time.perf_counter() - start) / len(ready)  # the batch's time, shared out
                cpu_share = (time.thread_time() - cpu) / len(ready)
                for job, _ in ready:
                    job.times["inference"] = share
                    job.cpu["inference"] = cpu_share
            for job, prepared in batch:  # in input order; failed loads pass straight to the sink
                rendering.append(_done(job) if prepared is None else
                                 pool.submit(_render, segmenter, render, job, prepared, *next(results)))
            drain(depth)
        drain(0)
    finally:
        # Ctrl-C or an error: queued work is cancelled; running work finishes its atomic write.
        pool.shutdown(wait=True, cancel_futures=True)
    cpu = time.process_time() - cpu_start
    return {"kind": "threads", "workers": max(1, workers), "cpu_seconds": cpu, "main_cpu_seconds": cpu}
