"""The thread executor: loading and drawing in worker threads overlap inference in this thread.

    loader threads ─▶ [bounded] ─▶ inference (this thread, batch_size at a time) ─▶ drawing threads
                                                                                 ─▶ sink (in input order)

Where the network draws on the device (``Segmenter.draws_on_device``: the fused graph that draws, on a GPU),
a batch of frames or images of one size is drawn there with the network (``draw_batch``), and the worker
threads only hand the pictures on (video frames to the in-order encoder, files to be written).

At most ``depth`` images are being loaded and ``depth + batch_size`` drawn at any time, so memory stays
flat on any number of inputs. Results reach ``sink`` in input order. On Ctrl-C, queued work is cancelled
and work already running finishes (writes are atomic), so no half-written file is left behind.

Every stage is timed twice per job (``job.timed``): wall time (``job.times``) and the CPU time of the thread
that ran it (``job.cpu``), from which ``segnet-bench`` derives the throughput the machine's cores allow.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..drawing import DrawSpec
from ..errors import SegnetError
from .job import Job, draw_job, prepare_job, timed, timed_together, write_picture


def _finish(segmenter, drawing: DrawSpec | None, put, job: Job, prepared, scores: np.ndarray,
            class_map: np.ndarray | None) -> Job:
    try:
        job.result = result = timed(job, "classmap", segmenter.finish, prepared, scores, class_map)
        if drawing is not None and job.target is not None:
            draw_job(job, result.image, result.class_map, result.colors, drawing, result.region, put)
    except SegnetError as exc:
        job.error = exc
    return job


def _put_drawn(put, job: Job, result, picture) -> Job:
    """A picture drawn with the network (``Segmenter.draw_batch``) handed to ``put``, as ``_finish`` hands
    the ones it draws."""
    job.result = result
    if job.target is not None:
        put(job, picture)
    return job


def _draw_batch(segmenter, drawing: DrawSpec | None,
                ready: list[tuple[Job, Any]]) -> Iterator[tuple[Any, Any]] | None:
    """``(Segmentation, picture)`` per ready job, drawn by the network in one batch where it draws these
    pictures (``drawing``) on the device (``draws_on_device``) and the images share a size; None otherwise
    (drawn in the workers)."""
    if drawing is None or drawing != segmenter.drawing or not segmenter.draws_on_device \
            or len({prepared.rgb.shape for _, prepared in ready}) != 1:
        return None
    return iter(segmenter.draw_batch(np.stack([prepared.rgb for _, prepared in ready])))


def _done(job: Job) -> Future:
    future: Future = Future()
    future.set_result(job)
    return future


def run(segmenter, jobs: Iterable[Job], sink: Callable[[Job], None] | None = None, *,
        drawing: DrawSpec | None = None, put: Callable[[Job, Any], None] = write_picture, workers: int = 2,
        depth: int | None = None, cancel: Callable[[], None] | None = None) -> dict:
    """Segment every job. With ``drawing``, each job with a target gets its picture drawn in a worker thread
    and handed to ``put(job, picture)`` there; ``sink(job)`` runs in this thread, in input order, for every
    job, failed ones too (``job.error`` set). Jobs are dropped after the sink so memory stays bounded.
    Returns ``{"kind", "workers", "cpu_seconds", "main_cpu_seconds"}``: how the run was spread and the CPU
    time it took (all threads)."""
    cpu_start = time.process_time()
    depth = depth or max(2 * workers, segmenter.batch_size)
    jobs = iter(jobs)
    loading: deque[tuple[Job, Future]] = deque()
    drawing_now: deque[Future] = deque()
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="segnet")

    def fill():
        while len(loading) < depth:
            job = next(jobs, None)
            if job is None:
                return
            loading.append((job, pool.submit(prepare_job, segmenter, job)))

    def drain(limit: int):
        while len(drawing_now) > limit:
            job = drawing_now.popleft().result()
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
            drawn: Iterator | None = None
            if ready:
                with timed_together([job for job, _ in ready], "inference"):
                    drawn = _draw_batch(segmenter, drawing, ready)  # the pictures drawn with the network
                    if drawn is None:
                        results = iter(segmenter.infer_maps([prepared.tensor for _, prepared in ready]))
            for job, prepared in batch:  # in input order; failed loads pass straight to the sink
                if prepared is None:
                    drawing_now.append(_done(job))
                elif drawn is not None:
                    drawing_now.append(pool.submit(_put_drawn, put, job, *next(drawn)))
                else:
                    drawing_now.append(pool.submit(_finish, segmenter, drawing, put, job, prepared, *next(results)))
            drain(depth)
        drain(0)
    except BaseException:
        if cancel is not None:  # before waiting for running work: a fetch must not hold the signal up
            cancel()
        raise
    finally:
        # Ctrl-C or an error: queued work is cancelled; running work finishes its atomic write.
        pool.shutdown(wait=True, cancel_futures=True)
    cpu = time.process_time() - cpu_start
    return {"kind": "threads", "workers": max(1, workers), "cpu_seconds": cpu, "main_cpu_seconds": cpu}
