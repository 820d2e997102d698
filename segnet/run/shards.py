"""Device shards (issue 20): the device executor in several processes at once, each with its own CUDA context,
network and nvImageCodec, on image files taken from one list a chunk at a time.

    jobs ─▶ chunks ─┬─▶ this process:   device.run (its network, its codec) ─┐
                    ├─▶ shard process 0: device.run (its own of each)   ─────┼─▶ sink (this thread, in
                    └─▶ shard process 1: ...                            ─────┘   input order)

nvImageCodec's decoders, as threads of one process, decode about 480-800 of the GPU machine's street JPEGs a
second however many there are; as processes they scale (1280 a second from four; BENCHMARKS.md, issue 20,
run 10), and four whole processes, each on a quarter of a folder, ran it 1.4 times as fast as the best
single-process runner (run 11). So on a GPU the device executor runs in this process and in up to
``SHARDS - 1`` shard processes. This process starts at once, with the network it has loaded; each shard
process loads its own (a second or two) and asks for chunks while it has room, so shards that start late or
not at all cost the run nothing but their start. Chunks go to whoever asks next; the sink sees every job in
input order, failed ones too.

The shards write the files themselves (atomically, as the device executor does) and send back only each
job's error and times: a run that wants the ``Segmentation`` of each image (``--stats``, statistics files)
stays in one process. A shard that dies fails the images it held and the run goes on; Ctrl-C (or SIGTERM
turned into it) stops the shards after the chunks they hold (they ignore SIGINT, take SIGTERM as "no more
chunks", and their writes are atomic); a shard still starting then is ended at once. Shards start from the
fork server (``children``), never by forking this process.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..drawing import DrawSpec
from ..errors import SegnetError
from ..options import Options
from . import children, device
from .children import how_it_ended
from .job import Job

log = logging.getLogger(__name__)

#: Processes running the device executor at once, this one included (run 11, H200: four whole processes
#: beat two and eight).
SHARDS = 4
#: Runs of fewer images stay in one process: each shard's start (its network and codec, about two seconds on
#: the GPU machine, the GPU shared meanwhile) would cost more than its share saves.
MIN_IMAGES = 1024
#: Images a shard takes at a time (the device executor's batch).
CHUNK = device.BATCH
#: Chunks each process holds ahead (the device executor's depth): enough for one being decoded, one in the
#: network and one being encoded; more would leave the last shards to finish long after the others.
DEPTH = 3
#: nvImageCodec decoders per process (the device executor's ``decoders``): the processes are the parallelism.
DECODERS = 1
#: Seconds to wait for a shard to finish the chunks it holds once the run stops early.
STOP_TIMEOUT = 60.0


def count(options: Options, feed, worker_processes: int, records: bool) -> int:
    """Shard processes for this run beside this one: ``SHARDS - 1`` for ``MIN_IMAGES`` or more image files
    (not URLs), none where the run wants no worker processes (``worker_processes`` 0: ``--processes 0``, or a
    machine with few cores) or wants each image's result here (``records``: ``--stats``, a statistics file)."""
    pairs = getattr(feed, "pairs", None)
    if not worker_processes or records or options.stats or pairs is None or len(pairs) < MIN_IMAGES:
        return 0
    if not all(isinstance(item, Path) for item, _ in pairs):
        return 0
    return min(SHARDS - 1, worker_processes)


def run(segmenter, jobs: Iterable[Job], sink: Callable[[Job], None] | None, *, codec, options: Options,
        drawing: DrawSpec | None, shards: int, total: int | None) -> dict:
    """``device.run`` here and in ``shards`` shard processes (each loading the network as ``options`` and
    ``drawing`` say, for ``total`` images), on chunks of ``jobs`` (image files: ``job.path``, written to
    ``job.target``). ``sink(job)`` runs here, in input order, for every job. Returns ``{"kind", "workers",
    "cpu_seconds", "main_cpu_seconds", "images_by_shard"}`` (this process first), this process's
    ``resident_batches`` (``device.run``'s) as ``resident_batches_here``, and the seconds from the shards'
    start to each one's first request for a chunk (``shard_ready_s``)."""
    from . import processes as worker_processes

    cpu_start = time.process_time()
    ctx = children.context(worker_processes.PRELOAD)
    results = ctx.Queue()
    # read now, and given to the shards: tools and tests change them
    size, depth, decoders, resident = CHUNK, DEPTH, DECODERS, device.RESIDENT
    state = _State(iter(jobs), shards, size)
    inboxes: list = []
    procs: list = []
    dispatcher = threading.Thread(target=_dispatch, args=(state, results, inboxes, procs), daemon=True,
                                  name="segnet-shards")
    spawned = time.monotonic()
    try:
        for number in range(shards):
            inbox = ctx.Queue()
            sizes = (size, depth, decoders, resident)
            proc = ctx.Process(target=_shard, name=f"segnet-shard-{number}",
                               args=(number, options, drawing, total, sizes, inbox, results))
            children.start(proc)
            inboxes.append(inbox)
            procs.append(proc)
        dispatcher.start()

        def own() -> Iterator[Job]:
            while True:
                chunk = state.take(None)
                if chunk is None:
                    return
                yield from chunk

        def mine(job: Job) -> None:
            state.finish(job)
            state.flush(sink)

        here = device.run(segmenter, own(), mine, codec=codec, batch=size, depth=depth, decoders=decoders,
                          cpu_decoders=0, resident=resident)
        while state.flush(sink, wait=True):
            pass
    finally:
        state.stop()
        _stop(procs, inboxes, state)
        if dispatcher.ident is not None:
            dispatcher.join(STOP_TIMEOUT)
        results.cancel_join_thread()
    main_cpu = time.process_time() - cpu_start
    log.debug("images run by this process and by each shard process: %s",
              ", ".join(str(state.taken[n]) for n in (None, *range(shards))))
    return {"kind": "shards", "workers": 1 + shards, "cpu_seconds": main_cpu + sum(state.cpu.values()),
            "main_cpu_seconds": main_cpu, "images_by_shard": [state.taken[None], *(state.taken[n]
                                                                                    for n in range(shards))],
            "resident_batches_here": here["resident_batches"],
            "shard_ready_s": [round(state.ready[n] - spawned, 2) if n in state.ready else None for n in range(shards)]}


class _State:
    """The chunks handed out (to this process, ``None``, and to shard ``n``), in input order, and which of
    their jobs are done. Every method takes the lock: the dispatcher thread and this one share it."""

    def __init__(self, jobs: Iterator[Job], shards: int, chunk: int):
        self.jobs, self.chunk = jobs, chunk
        self.lock = threading.Condition()
        self.order: deque[Job] = deque()  # handed out, not yet sunk
        self.finished: set[int] = set()
        self.held: dict[int, dict[int, Job]] = {n: {} for n in range(shards)}  # each shard's jobs not yet done
        self.taken: dict[int | None, int] = {None: 0, **dict.fromkeys(range(shards), 0)}
        self.cpu: dict[int, float] = {}
        self.asked: set[int] = set()  # shards that have started (and asked for a chunk)
        self.ready: dict[int, float] = {}  # when each shard first asked (time.monotonic())
        self.stopping = False
        self.broken: BaseException | None = None  # what ended the dispatcher, should anything

    def take(self, shard: int | None) -> list[Job] | None:
        """The next chunk, for this process (None) or a shard; None once there are no more."""
        with self.lock:
            if self.stopping:
                return None
            chunk = [job for _, job in zip(range(self.chunk), self.jobs)]
            if not chunk:
                self.stopping = True
                return None
            self.order.extend(chunk)
            self.taken[shard] += len(chunk)
            if shard is not None:
                self.held[shard].update((job.index, job) for job in chunk)
            return chunk

    def finish(self, job: Job, shard: int | None = None) -> None:
        with self.lock:
            if shard is not None:
                self.held[shard].pop(job.index, None)
            self.finished.add(job.index)
            self.lock.notify_all()

    def done_by_shard(self, shard: int, index: int, error, times: dict, cpu: dict) -> None:
        with self.lock:
            job = self.held[shard].get(index)
            if job is None:  # already failed: the shard was found dead
                return
            job.error = error
            job.times.update(times)
            job.cpu.update(cpu)
        self.finish(job, shard)

    def lose(self, shard: int, why: str) -> None:
        """Shard ``shard`` is gone: the images it held fail with ``why``."""
        with self.lock:
            for job in list(self.held[shard].values()):
                job.error = job.error or SegnetError(f"shard process {shard} {why} while this image was in it")
                self.finish(job, shard)

    def flush(self, sink: Callable[[Job], None] | None, wait: bool = False) -> bool:
        """Hand the done jobs at the head of the order to ``sink`` (here, in input order). ``wait``: for the
        head, when it is not done yet. Returns whether any job is still out."""
        while True:
            with self.lock:
                if wait:
                    while self.order and self.order[0].index not in self.finished and self.broken is None:
                        self.lock.wait(0.5)
                if self.broken is not None:
                    raise RuntimeError(f"the shards' dispatcher failed: {self.broken!r}") from self.broken
                if not self.order or self.order[0].index not in self.finished:
                    return bool(self.order)
                job = self.order.popleft()
                self.finished.discard(job.index)
            if sink is not None:
                sink(job)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.stopping, self.broken = True, exc
            self.lock.notify_all()


def _dispatch(state: _State, results, inboxes: list, procs: list) -> None:
    """This process's side of the shards: chunks to those that ask, their results to ``state``, and the
    images of any that dies failed. Ends when every shard has ended."""
    alive = set(range(len(procs)))

    def handle(message: tuple) -> None:
        kind, number = message[0], message[1]
        if kind == "want":
            with state.lock:
                state.asked.add(number)
                state.ready.setdefault(number, time.monotonic())
            chunk = state.take(number)
            inboxes[number].put(None if chunk is None else [(j.index, j.name, j.path, j.target) for j in chunk])
        elif kind == "done":
            state.done_by_shard(number, *message[2:])
        elif kind == "failed":
            log.info("shard process %d did not start: %s", number, message[2])
        elif kind == "exit":
            state.cpu[number] = message[2]
            alive.discard(number)
            state.lose(number, how_it_ended(procs[number]))  # nothing, unless it ended holding images

    def received(timeout: float | None) -> tuple | None:
        """The next message (None: none came), or ``EOFError`` once the queue is closed: the run is over."""
        try:
            return results.get(timeout=timeout) if timeout else results.get_nowait()
        except queue.Empty:
            return None
        except (OSError, ValueError) as exc:
            raise EOFError from exc

    checked = time.monotonic()
    try:
        while alive:
            if time.monotonic() - checked > 0.5:  # every half second, busy or not
                checked = time.monotonic()
                dead = [n for n in alive if not procs[n].is_alive()]
                if dead:  # what they sent before dying is in the queue already: it counts first
                    while (message := received(None)) is not None:
                        handle(message)
                    for number in dead:
                        alive.discard(number)
                        state.lose(number, how_it_ended(procs[number]))
            message = received(0.5)
            if message is not None:
                handle(message)
    except EOFError:
        return
    except BaseException as exc:  # a bug here must end the run, not leave it waiting
        state.fail(exc)


def _stop(procs: list, inboxes: list, state: _State) -> None:
    """No more chunks; wait for the shards to finish those they hold and end. A shard still starting (it has
    not asked for a chunk) is ended at once: it has nothing to write, and its start may take seconds more."""
    for inbox in inboxes:
        inbox.put(None)
        inbox.cancel_join_thread()
    deadline = time.monotonic() + STOP_TIMEOUT
    for number, proc in enumerate(procs):
        while proc.is_alive() and time.monotonic() < deadline:
            with state.lock:
                starting = number not in state.asked  # so it holds nothing either
            if starting:
                proc.kill()
            proc.join(0.1)
        if proc.is_alive():
            log.warning("shard process %d did not stop; killing it", number)
            proc.kill()
        proc.join()


def _shard(number: int, options: Options, drawing: DrawSpec | None, total: int | None,
           sizes: tuple[int, int, int, bool], inbox, results) -> None:
    """A shard process: its own network and codec, ``device.run`` on the chunks it asks for (``sizes``: the
    run's chunk size, depth, decoders and whether the pixels stay on the device), each job's error and times
    back."""
    from .. import gpu_codec
    from ..segmenter import Segmenter
    from .processes import _picklable

    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # no more chunks: the writes held finish
    children.die_with_parent()
    cpu = time.process_time()
    try:
        try:
            segmenter = Segmenter(options=options, expected_images=total, drawing=drawing)
        except BaseException as exc:  # noqa: BLE001  (any failure: the run goes on without this shard)
            results.put(("failed", number, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        with segmenter:
            codec = gpu_codec.for_run(options.image_codec)
            if codec is None or not segmenter.draws_on_device:
                results.put(("failed", number, "the network does not draw on the device here"))
                return

            def chunks() -> Iterator[Job]:
                while not stopping.is_set():
                    results.put(("want", number))
                    chunk = inbox.get()
                    if chunk is None:
                        return
                    for index, name, path, target in chunk:
                        yield Job(index, name, _unused, target, path=path)

            def report(job: Job) -> None:
                results.put(("done", number, job.index, _picklable(job.error), job.times, job.cpu))

            chunk, depth, decoders, resident = sizes
            device.run(segmenter, chunks(), report, codec=codec, batch=chunk, depth=depth, decoders=decoders,
                       cpu_decoders=0, resident=resident)
    finally:
        results.put(("exit", number, time.process_time() - cpu))


def _unused():
    raise AssertionError("the device executor reads job.path")
