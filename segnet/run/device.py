"""The device executor (issue 20): image files whose pixels stay with the GPU's codec and the network.

    read + decode a batch ─▶ network + class map + picture ─▶ encode a batch ─▶ write files ─▶ sink (in input
    (nvImageCodec, or CPU      (the fused graph, this thread)   (nvImageCodec,    (a pool)      order, here)
     threads: a worker thread)                                  a worker thread)

JPEGs are decoded and encoded by ``gpu_codec.GpuCodec`` (any file or picture it refuses goes through the CPU
codecs, per image), and the picture is drawn inside the fused graph (``Segmenter.draw_batch``). A run that
wants no per-image result (``resident``) keeps the pixels on the GPU: decoded into device memory, copied into
the network's bound input there, and encoded from the picture buffer the graph drew into
(``Segmenter.draw_on_device``); no copies to the host and back (1.42 times the images a second in one
process, 1.17 times in shards, on the H100 of BENCHMARKS.md's run 12a). Batches of
``batch`` images overlap: some are decoded while the one before them runs through the network and the ones
before that are encoded and written; the encoder hands a batch's files to the writers and goes on (each write
is synced). The sink sees every job in input order, failed ones too; memory stays flat (at most ``depth``
batches decoding and as many being written, the CPU decoders adding the batches they hold); on Ctrl-C queued
work is cancelled and running writes finish (they are atomic).

nvImageCodec's decoders, as threads of one process, share its library instance: on the GPU machine's
progressive street JPEGs they decode about 480-800 images/s however many there are (BENCHMARKS.md, issue 20,
runs 4-10), and do their Huffman stage on CPU threads. So the cores they leave idle decode too: while every
decoder has a batch, the next batch goes to ``cpu_decoders`` threads that decode it image by image with the
CPU codecs (Pillow lets go of the GIL while it decodes), and the network takes the batches in input order
whoever decoded them. nvImageCodec takes about a second to start: given the codec still to start (a Future
of it, or the function that starts it), the run begins at once on the CPU codecs (the writers encode with
Pillow) and the codec joins when it is there.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import SegnetError
from ..options import cores
from .job import Job, timed, timed_together

log = logging.getLogger(__name__)

#: Images decoded, run and encoded together.
BATCH = 32
#: Batches in flight (decoding, in the network, encoding).
DEPTH = 6
#: Batches decoded at once (each by its own codec; nvImageCodec's JPEG decoding does its Huffman stage on
#: CPU threads of its own).
DECODERS = 3
#: Threads decoding with the CPU codecs beside the GPU's decoders (None: one per core, less CPU_RESERVED);
#: none when the codec is not on a GPU (then it is the CPU codec already).
CPU_DECODERS: int | None = None
#: Whether runs that want no per-image result (``Segmentation``) keep the pixels on the device from decoding to
#: encoding (``run``'s ``resident``): no copies to the host and back between the codec and the network.
RESIDENT = True
#: Cores left to the rest of the run when CPU_DECODERS is None: the network's thread, the encoder's, the
#: writers and the GPU decoders' Huffman threads.
CPU_RESERVED = 4


def run(segmenter, jobs: Iterable[Job], sink: Callable[[Job], None] | None = None, *, codec,
        batch: int | None = None, depth: int | None = None, writers: int = 8, decoders: int | None = None,
        cpu_decoders: int | None = None, resident: bool = False) -> dict:
    """Segment every job (image files: ``job.path``; pictures to ``job.target`` or none) with ``codec``
    decoding and encoding and the segmenter drawing (``segmenter.draw_batch``). ``sink(job)`` runs here, in
    input order, for every job. ``codec``: a ``GpuCodec``, a Future of one still starting, or a function that
    starts one and returns its Future (called once the first batch has run: ``_Codecs``); the run begins
    without it (CPU threads decode and the writers encode with Pillow until it is there). ``decoders``:
    batches decoded at once, each by its own codec (one decoder is used by one thread at a time;
    nvImageCodec's JPEG decoding does its Huffman stage on CPU threads). ``cpu_decoders``: threads decoding
    with the CPU codecs the batches that come while every codec is busy (default ``CPU_DECODERS``, for a
    codec on a GPU, or still starting, only). ``resident``: the pixels stay on the device from decoding to
    encoding (``_infer``), and the jobs get no ``result`` (for runs that want none). Returns ``{"kind",
    "workers", "cpu_seconds", "main_cpu_seconds", "resident_batches"}`` (batches whose pixels stayed on the
    device)."""
    cpu_start = time.process_time()
    batch, depth, decoders = batch or BATCH, depth or DEPTH, decoders or DECODERS  # read now: tools change them
    codecs = _Codecs(codec, decoders)
    if cpu_decoders is None:
        on_gpu = codecs.starting or getattr(codec, "on_gpu", False)
        cpu_decoders = (CPU_DECODERS if CPU_DECODERS is not None else max(0, cores() - CPU_RESERVED)) if on_gpu else 0
    if not cpu_decoders:
        codecs.start()  # nothing else decodes: the batches wait for it
    chunks = _chunks(iter(jobs), batch)
    # the CPU's share: a batch being decoded and the next one queued, so that its threads never wait
    cpu_batches = 1 + -(-cpu_decoders // batch) if cpu_decoders else 0
    depth += cpu_batches
    reader = ThreadPoolExecutor(decoders + cpu_batches, thread_name_prefix="segnet-decode")
    cpu_pool = ThreadPoolExecutor(cpu_decoders, thread_name_prefix="segnet-decode-cpu") if cpu_decoders else None
    encoder = ThreadPoolExecutor(1, thread_name_prefix="segnet-encode")  # one codec, one thread
    files = ThreadPoolExecutor(max(1, writers), thread_name_prefix="segnet-write")  # each write is synced
    decoding: deque[tuple[list[Job], Future]] = deque()
    writing: deque[tuple[list[Job], Future | None]] = deque()
    on_codecs: list[Future] = []  # batches a codec decodes or waits for
    on_cpu: list[Future] = []  # batches the CPU threads decode
    on_device = 0  # batches whose pixels stayed on the device

    def decode(chunk: list[Job]) -> Future:
        """The batch to a codec while one is free or the CPU threads have enough, else to the CPU threads."""
        on_codecs[:] = [f for f in on_codecs if not f.done()]
        on_cpu[:] = [f for f in on_cpu if not f.done()]
        if cpu_pool is None or len(on_codecs) < codecs.ready or len(on_cpu) >= cpu_batches:
            on_codecs.append(reader.submit(_decode, codecs.free, chunk, resident))
            return on_codecs[-1]
        on_cpu.append(reader.submit(_decode_on_cpu, cpu_pool, chunk, resident))
        return on_cpu[-1]

    def fill():
        while len(decoding) < depth:
            chunk = next(chunks, None)
            if chunk is None:
                return
            decoding.append((chunk, decode(chunk)))

    def drain(limit: int):
        while len(writing) > limit:
            chunk, future = writing.popleft()
            for written in future.result() if future is not None else ():
                written.result()
            for job in chunk:
                if sink is not None:
                    sink(job)

    try:
        fill()
        while decoding:
            chunk, future = decoding.popleft()
            groups = future.result()
            fill()
            on_device += _infer(segmenter, groups, resident)
            codecs.start()  # after the first batch: see _Codecs
            targets = [job for job in chunk if job.error is None and job.target is not None]
            writing.append((chunk, encoder.submit(_write, codecs.encoder, files, targets) if targets else None))
            drain(depth)
        drain(0)
    finally:
        for pool in (reader, cpu_pool, encoder, files):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        codecs.settled()
    cpu = time.process_time() - cpu_start
    return {"kind": "device", "workers": 2 + max(1, writers) + cpu_decoders, "cpu_seconds": cpu,
            "main_cpu_seconds": cpu, "resident_batches": on_device}


class _Codecs:
    """The run's codecs: ``free`` holds those no thread is using (``ready`` of them in all, once started) and
    ``encoder`` the one that encodes (None: the writers encode with Pillow). ``codec`` may be a codec, a
    Future of one still starting, or a function that starts one and returns that Future (``start`` calls
    it: the executor does after the first batch has run through the network, whose first run of a batch
    shape captures a CUDA graph, which CUDA calls of other threads, as the codec's start makes, would break).
    A codec still starting joins when it is there, with ``decoders - 1`` more like it on a GPU; one that fails
    to start leaves a CPU stand-in, so that batches waiting for a codec still decode."""

    def __init__(self, codec, decoders: int):
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = 0
        self.encoder = None
        self.decoders = decoders
        self.added = threading.Event()  # every codec is in ``free``
        self.starter: Callable[[], Future] | None = None
        self.starting = not hasattr(codec, "read_images")  # a Future, or the function that starts one
        if isinstance(codec, Future):
            codec.add_done_callback(self._arrived)
        elif self.starting:
            self.starter = codec
        else:
            self._add(codec)

    def start(self) -> None:
        """Start the codec now, if it is still to be started."""
        starter, self.starter = self.starter, None
        if starter is not None:
            starter().add_done_callback(self._arrived)

    def settled(self, timeout: float = 60.0) -> None:
        """Wait for a codec still starting (its thread is in CUDA and nvJPEG calls: a run that ends before it
        is there must not end the process under it); one never started is not waited for."""
        if self.starter is None:
            self.added.wait(timeout)

    def _arrived(self, started: Future) -> None:
        try:
            codec = started.result()
        except BaseException as exc:  # noqa: BLE001  (any failure: the run goes on with the CPU codecs)
            from ..gpu_codec import CpuCodec

            log.info("JPEG decoding and encoding stay on the CPU: the GPU codec did not start (%s)", exc)
            codec = CpuCodec()
        self._add(codec)

    def _add(self, codec) -> None:
        more = [codec.twin() for _ in range(self.decoders - 1)] if getattr(codec, "on_gpu", False) else []
        for each in (codec, *more):
            self.free.put(each)
        self.encoder = codec
        self.ready = 1 + len(more)
        self.added.set()


def _chunks(jobs: Iterator[Job], size: int) -> Iterator[list[Job]]:
    while True:
        chunk = [job for _, job in zip(range(size), jobs)]
        if not chunk:
            return
        yield chunk


def _decode(free: queue.SimpleQueue, chunk: list[Job], resident: bool) -> list[tuple[list[Job], Any]]:
    """The chunk's images by a codec no other thread is using, grouped by size (``_grouped``). The time is
    shared out."""
    with timed_together(chunk, "decode"):
        codec = free.get()
        try:
            paths = [job.path for job in chunk]
            images = codec.read_images(paths, on_device=True) if resident else codec.read_images(paths)
        finally:
            free.put(codec)
        return _grouped(chunk, images, resident)


def _decode_on_cpu(pool: ThreadPoolExecutor, chunk: list[Job], resident: bool) -> list[tuple[list[Job], Any]]:
    """The chunk's images decoded by the CPU codecs, one image per thread of ``pool``, grouped (``_grouped``)."""
    from ..gpu_codec import read_on_cpu

    with timed_together(chunk, "decode"):
        return _grouped(chunk, list(pool.map(read_on_cpu, [job.path for job in chunk])), resident)


def _grouped(chunk: list[Job], images: list, resident: bool) -> list[tuple[list[Job], Any]]:
    """The chunk's decoded images by size, with the jobs they belong to: stacked here into one host array
    each (``[N, H, W, 3]``; the network's thread only runs them), or with ``resident`` a ``DeviceBatch`` each
    (the GPU's images stay on the device). A file that could not be read (its ``SegnetError`` in its image's
    place) has the error set on its job."""
    from ..gpu_codec import DeviceBatch

    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (job, image) in enumerate(zip(chunk, images)):
        if isinstance(image, SegnetError):
            job.error = image
        else:
            by_shape.setdefault(tuple(image.shape), []).append(i)
    return [([chunk[i] for i in indices], DeviceBatch([images[i] for i in indices]) if resident
             else np.stack([images[i] for i in indices])) for indices in by_shape.values()]


def _infer(segmenter, groups: list[tuple[list[Job], Any]], resident: bool) -> int:
    """Network, class map and picture for each decoded image, a batch of one size at a time. A resident
    batch (``DeviceBatch``) is copied into the network's input on the device and its pictures stay there
    (``Segmenter.draw_on_device``), its jobs getting no result; where the backend cannot, its host copy runs
    like any other batch. Returns how many batches stayed on the device."""
    on_device = 0
    for group, batch in groups:
        with timed_together(group, "inference"):
            try:
                pictures = segmenter.draw_on_device(batch) if resident else None
                if pictures is not None:
                    on_device += 1
                    for job, picture in zip(group, pictures.views()):
                        job.picture = picture
                else:
                    host = batch.host() if resident else batch
                    for job, (result, picture) in zip(group, segmenter.draw_batch(host)):
                        job.result, job.picture = None if resident else result, picture
            except SegnetError as exc:
                for job in group:
                    job.error = exc
            finally:
                if resident:
                    batch.release()
    return on_device


def _write(codec, files: ThreadPoolExecutor, jobs: list[Job]) -> list[Future]:
    """Encode the JPEG pictures in one call (the GPU's), then hand every file to the pool to write; any other
    format, any picture the codec refuses, and every picture while there is no codec yet (None), is written
    by ``image_io.write_image`` there. Returns the writes, not waiting for them: the encoder goes on with the
    next batch while these are written (each write is synced, and waiting for a batch's writes had the
    encoder, and so the network's thread, waiting on the disk; BENCHMARKS.md, issue 20, run 10)."""
    from ..gpu_codec import on_host, write_file

    with timed_together(jobs, "encode"):
        data = {} if codec is None else codec.jpeg_data([job.picture for job in jobs], [job.target for job in jobs])
        device = {id(job.picture.batch): job.picture.batch for job in jobs if hasattr(job.picture, "batch")}
        if device:  # pictures left on the device: those the writers encode come back, then the buffers go
            for i, job in enumerate(jobs):
                if i not in data:
                    job.picture = on_host(job.picture)
            for pictures in device.values():
                pictures.release()

    def put(index: int, job: Job) -> None:
        error = timed(job, "write", write_file, job.picture, job.target, data.get(index))
        job.picture = None
        if error is not None:
            job.error = error

    return [files.submit(put, i, job) for i, job in enumerate(jobs)]
