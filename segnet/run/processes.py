"""The process executor: worker processes decode, pre-process, draw, encode and write image files on
every core, while this process only runs the network (issue 16).

    jobs ─▶ worker processes: load + prepare ──▶ this process: inference, batch_size at a time
                                                        │ scores and class map (a few kB) back to the
                                                        ▼ worker that holds the image
            worker processes: draw + encode + write ──▶ sink (this thread, in input order)

Worker threads (``threads.run``) contend for the GIL: decoding, drawing and encoding are Python and
numpy code that holds it for part of its time, so on a many-core machine threads reach a fraction of the
cores. Processes do not share a GIL. Each image is decoded and drawn by the same worker, so the decoded
image travels once, to this process, which needs it for the network and for the ``Segmentation`` it hands
the sink.

Decoded images travel through shared memory: each worker writes an image into one of its own slots
(``multiprocessing.shared_memory``, reused while big enough) and sends only the slot's name; this process
copies it into the batch it runs and so frees the slot. Where ``/dev/shm`` has no room the image goes
through the pipe instead. Only the class map (a few hundred bytes) goes back to the worker.

The runner's guarantees hold: at most ``depth`` images are in flight (memory stays flat on any number of
inputs); the sink sees every job in input order, failed ones too; a bad image is that job's error and the
run goes on; Ctrl-C (or SIGTERM turned into it) and any failure stop the workers after the task each is
running, and since every write is atomic, nothing is left half-written. Workers ignore SIGINT and take
SIGTERM as "stop after this task", so a signal to the whole process group cannot cut a write short; they
stop by themselves when this process dies. Batches are formed in input order, as in ``threads.run``, so
results do not depend on which worker was faster.

Workers start from a fork server (spawn where there is none), never by forking this process, which may
hold CUDA and onnxruntime threads.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..drawing import DrawSpec
from ..errors import SegnetError
from ..options import Options, check_processes, cores
from . import children
from .children import how_it_ended
from .job import Job, draw_job, prepare_job, timed, timed_together, write_picture

log = logging.getLogger(__name__)

#: ``processes`` left to segnet: on machines with more cores than this, one worker process per core but one
#: (which this process, running the network, keeps); threads otherwise. On the 2-core CPU machines
#: onnxruntime already keeps both cores busy with the network, and threads lose nothing to process start-up
#: (BENCHMARKS.md, issue 16).
AUTO_MIN_CORES = 4
#: Images in flight per worker process (loading, waiting for the network, drawing).
DEPTH_PER_WORKER = 6
#: Seconds to wait for a worker to finish the task it is running once asked to stop.
STOP_TIMEOUT = 60.0
#: Smallest shared-memory slot a worker makes (a 1024x512 RGB image is 1.5 MB).
SLOT_BYTES = 4 << 20
#: What the fork server imports once, so that every worker starts with it loaded.
PRELOAD = [__name__, "segnet.segmenter", "segnet.colorize", "segnet.image_io", "PIL.Image", "PIL.JpegImagePlugin",
           "PIL.PngImagePlugin"]


def count(options: Options, images: int | None) -> int:
    """How many worker processes a run of ``images`` image files gets: ``options.processes`` when given
    (at most ``options.most_processes()``: a UsageError above), else one per core but one on machines with more than
    ``AUTO_MIN_CORES`` cores, else none (threads); never more than there are images, and none for a single
    image (starting processes would cost more than it saves)."""
    check_processes(options)
    n = options.processes if options.processes is not None else (cores() - 1 if cores() > AUTO_MIN_CORES else 0)
    if images is not None:
        n = min(n, images) if images > 1 else 0
    return n


def prestart() -> None:
    """Start the fork server now (it imports segnet and Pillow in its own process), so that workers fork
    at once later: the runner calls this before it loads the network."""
    children.prestart(PRELOAD)


def run(segmenter, jobs: Iterable[Job], sink: Callable[[Job], None] | None = None, *, processes: int,
        drawing: DrawSpec | None = None, depth: int | None = None) -> dict:
    """Segment every job (``job.load`` must pickle: a ``functools.partial`` of a module function) with
    ``processes`` workers. ``drawing``: the picture each worker draws (``drawing.draw``) and writes to
    ``job.target`` (when not None); None: no pictures. ``sink(job)`` runs here, in input order, for
    every job. Returns ``{"kind", "workers", "cpu_seconds", "main_cpu_seconds"}``: CPU time of this process
and the workers, and of this process alone."""
    batch_size = segmenter.batch_size
    depth = depth or max(DEPTH_PER_WORKER * processes, 2 * batch_size + processes)
    ctx = children.context(PRELOAD)
    results = ctx.Queue()
    stop = ctx.Event()
    detached = segmenter.detached()
    workers: list = []
    tasks: list = []
    cpu_start = time.process_time()
    worker_cpu: dict[int, float] = {}
    state = _State(processes)
    slots = _Attached()
    dead: set[int] = set()  # workers that died or stopped: their images failed, the others go on
    try:
        for number in range(processes):
            inbox = ctx.Queue()
            worker = ctx.Process(target=_work, args=(number, detached, drawing, inbox, results, stop),
                                 name=f"segnet-worker-{number}")
            children.start(worker)
            workers.append(worker)
            tasks.append(inbox)
        source = iter(jobs)
        order: deque[Job] = deque()  # dispatched, not yet sunk
        waiting: deque[Job] = deque()  # dispatched, not yet through the network

        def fill():
            while len(order) < depth:
                job = next(source, None)
                if job is None:
                    return
                alive = [w for w in range(processes) if w not in dead]
                if not alive:
                    raise SegnetError(f"every worker process died ({how_it_ended(workers[0])}); the run cannot go on")
                w = min(alive, key=state.outstanding.__getitem__)
                _send(tasks[w], ("load", job.index, job.load))
                state.dispatch(job, w)
                order.append(job)
                waiting.append(job)

        def sink_done():
            while order and state.done(order[0]):
                job = order.popleft()
                state.forget(job)
                if sink is not None:
                    sink(job)

        def receive():
            """One message from a worker; then whatever it finished goes to the sink and new work out."""
            message = _get(results, workers, dead)
            if message[0] in ("exit", "died"):
                number = message[1]
                if message[0] == "exit":
                    worker_cpu[number] = message[2]
                if number not in dead:  # its images fail; the others go on
                    dead.add(number)
                    lost = SegnetError(f"worker process {number} {how_it_ended(workers[number])} while this image was "
                                       "in it")
                    state.lose(number, lost)
                    _unlink_slots(workers[number].pid)
            elif message[1] not in dead:  # what a dead worker sent before dying is already failed
                state.handle(message)
            sink_done()
            fill()

        fill()
        while order:
            batch: list[Job] = []
            while waiting and len(batch) < batch_size:
                job = waiting[0]
                while not state.loaded(job):
                    receive()
                waiting.popleft()
                if job.error is None:
                    batch.append(job)
                else:
                    state.finished(job)  # through, in its turn: the sink may have it
            for job in [j for j in batch if j.error is not None]:  # its worker died while the batch formed
                batch.remove(job)
                state.finished(job)
            if batch:
                _infer(segmenter, batch, slots)  # the slots are copied: the workers may reuse them
                for job in batch:
                    w = state.owner[job.index]
                    if w in dead:
                        job.error = job.error or SegnetError(f"worker process {w} {how_it_ended(workers[w])} while "
                                                             "this image was in it")
                        state.finished(job)
                    elif job.error is not None or drawing is None or job.target is None:
                        _send(tasks[w], ("drop", job.index))
                        state.finished(job)
                    else:
                        _send(tasks[w], ("render", job.index, job.result.class_map, job.target))
                        state.rendering(job)
            while order and not waiting and not state.done(order[0]):
                receive()  # everything is through the network: wait for the pictures
            sink_done()
            fill()
    finally:
        _stop(workers, tasks, results, stop, worker_cpu)
        slots.close()
    main_cpu = time.process_time() - cpu_start
    return {"kind": "processes", "workers": processes, "cpu_seconds": main_cpu + sum(worker_cpu.values()),
            "main_cpu_seconds": main_cpu}


class _State:
    """Where each dispatched job is: its worker, and whether it is loaded and done."""

    def __init__(self, processes: int):
        self.outstanding = [0] * processes  # tasks given to each worker and not yet answered
        self.owner: dict[int, int] = {}
        self.jobs: dict[int, Job] = {}
        self.phase: dict[int, str] = {}  # loading, loaded (or failed), rendering, done

    def dispatch(self, job: Job, worker: int) -> None:
        self.jobs[job.index], self.owner[job.index], self.phase[job.index] = job, worker, "loading"
        self.outstanding[worker] += 1

    def loaded(self, job: Job) -> bool:
        return self.phase[job.index] != "loading"

    def done(self, job: Job) -> bool:
        return self.phase[job.index] == "done"

    def rendering(self, job: Job) -> None:
        self.phase[job.index] = "rendering"
        self.outstanding[self.owner[job.index]] += 1

    def finished(self, job: Job) -> None:
        self.phase[job.index] = "done"

    def forget(self, job: Job) -> None:
        del self.jobs[job.index], self.owner[job.index], self.phase[job.index]

    def lose(self, worker: int, error: SegnetError) -> None:
        """``worker`` died: every image it held fails with ``error``."""
        for index, owner in self.owner.items():
            phase = self.phase[index]
            if owner == worker and phase != "done":
                job = self.jobs[index]
                job.error, job.payload = job.error or error, None
                self.phase[index] = "done" if phase == "rendering" else "failed"

    def handle(self, message: tuple) -> None:
        kind, worker, index = message[:3]
        if kind == "crashed":
            _, _, _, error, trace = message
            raise RuntimeError(f"a worker process failed: {error!r}\n{trace}") from (
                error if isinstance(error, BaseException) else None)
        job = self.jobs[index]
        self.outstanding[worker] -= 1
        times, cpu, error = message[-3:]
        _merge(job, times, cpu)
        job.error = error
        if kind == "loaded":
            job.payload = message[3]
            self.phase[index] = "failed" if error is not None else "loaded"
        else:  # rendered
            self.phase[index] = "done"


def _merge(job: Job, times: dict, cpu: dict) -> None:
    for stage, seconds in times.items():
        job.times[stage] = job.times.get(stage, 0.0) + seconds
    for stage, seconds in cpu.items():
        job.cpu[stage] = job.cpu.get(stage, 0.0) + seconds


def _infer(segmenter, batch: list[Job], slots: _Attached) -> None:
    """The network on the batch's images, then each job's ``Segmentation`` (its class map from the graph
    when pre-processing is fused, else made here). The images are copied out of the workers' slots: into
    the batch the network runs (which the ``Segmentation`` keeps), and the pixels too when the network
    input is not the image itself."""
    from ..segmenter import Prepared

    with timed_together(batch, "inference"):
        arrays = [slots.read(job.payload) for job in batch]
        if arrays[0][1] is None and len({rgb.shape for rgb, _ in arrays}) == 1:
            stacked = np.stack([rgb for rgb, _ in arrays])  # fused: the images are the network input
            prepared = [Prepared(rgb, rgb, region)
                        for rgb, (_, _, region) in zip(stacked, (j.payload for j in batch))]
            inputs: Any = stacked
        else:
            prepared = [Prepared(rgb.copy(), rgb if tensor is None else tensor, job.payload[2])
                        for (rgb, tensor), job in zip(arrays, batch)]
            inputs = [p.tensor for p in prepared]
        results = segmenter.infer_maps(inputs)
        for job in batch:
            job.payload = None
    for job, p, (scores, class_map) in zip(batch, prepared, results):
        try:
            job.result = timed(job, "classmap", segmenter.finish, p, scores, class_map)
        except SegnetError as exc:
            job.error = exc


def _send(inbox, task: tuple) -> None:
    """Pickled here, so a task that cannot travel fails in this thread rather than in the queue's."""
    inbox.put(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))


def _get(results, workers: list, dead: set[int]) -> tuple:
    """The next message from a worker, or ``("died", number)`` for a worker found dead."""
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            for number, worker in enumerate(workers):
                if number not in dead and not worker.is_alive():
                    return ("died", number)


def _slot_prefix(pid: int) -> str:
    return f"segnet-{pid}-"


def _unlink_slots(pid: int | None) -> None:
    """Remove the shared-memory slots a dead worker left (``_Slots`` names them after its process id)."""
    if pid is None or not os.path.isdir("/dev/shm"):
        return
    for name in os.listdir("/dev/shm"):
        if name.startswith(_slot_prefix(pid)):
            with contextlib.suppress(OSError, ValueError):
                block = shared_memory.SharedMemory(name)
                block.close()
                block.unlink()


def _stop(workers: list, tasks: list, results, stop, worker_cpu: dict[int, float]) -> None:
    """Ask every worker to stop after its current task, wait for them (reading what they still send, so
    none blocks on a full pipe) and collect their CPU times; a worker that does not stop in time is killed."""
    stop.set()
    for inbox in tasks:
        inbox.put(None)
        inbox.cancel_join_thread()  # never block this process's exit on a worker that is gone
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        _drain(results, worker_cpu, 0.05)
        for w in workers:
            w.join(0)
    for w in workers:
        if w.is_alive():
            log.warning("worker process %s did not stop; killing it", w.name)
            w.kill()
        w.join()
    _drain(results, worker_cpu, 0)
    results.cancel_join_thread()


def _drain(results, worker_cpu: dict[int, float], timeout: float) -> None:
    while True:
        try:
            message = results.get(timeout=timeout) if timeout else results.get_nowait()
        except (queue.Empty, OSError, EOFError):
            return
        if message[0] == "exit":
            worker_cpu[message[1]] = message[2]
        timeout = 0


# -- shared memory ---------------------------------------------------------------------------------------

def _attach(name: str) -> shared_memory.SharedMemory:
    try:  # Python 3.13+: the worker that made the block owns it; this process only maps it
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
    except TypeError:
        return shared_memory.SharedMemory(name)


class _Attached:
    """This process's mappings of the workers' slots, by name."""

    def __init__(self):
        self.blocks: dict[str, shared_memory.SharedMemory] = {}

    def read(self, payload) -> tuple[np.ndarray, np.ndarray | None]:
        """The (pixels, network input or None) a worker sent: views of its slot, or the arrays themselves."""
        kind, parts = payload[0], payload[1]
        if kind == "inline":
            return parts
        arrays: list[Any] = []
        for part in parts:
            if part is None:
                arrays.append(None)
                continue
            name, offset, shape, dtype = part
            block = self.blocks.get(name)
            if block is None:
                block = self.blocks[name] = _attach(name)
            arrays.append(np.ndarray(shape, dtype, buffer=block.buf, offset=offset))
        return arrays[0], arrays[1]

    def close(self) -> None:
        for block in self.blocks.values():
            with contextlib.suppress(BufferError, OSError):
                block.close()
        self.blocks = {}


class _Slots:
    """A worker's shared-memory slots: one per image between loading and the network's copy of it."""

    def __init__(self):
        self.free: list[shared_memory.SharedMemory] = []
        self.used: dict[int, shared_memory.SharedMemory] = {}
        self.all: list[shared_memory.SharedMemory] = []

    def put(self, index: int, rgb: np.ndarray, tensor: np.ndarray | None) -> tuple:
        """The payload for this image: ``("shm", parts)`` naming a slot, or ``("inline", arrays)`` when
        shared memory has no room."""
        arrays = [a for a in (rgb, tensor) if a is not None]
        size = sum(-(-a.nbytes // 64) * 64 for a in arrays)
        block = next((b for b in self.free if b.size >= size), None)
        if block is None:
            block = self._new(size)
            if block is None:
                return ("inline", (rgb, tensor))
        else:
            self.free.remove(block)
        self.used[index] = block
        parts: list = []
        offset = 0
        for a in (rgb, tensor):
            if a is None:
                parts.append(None)
                continue
            np.ndarray(a.shape, a.dtype, buffer=block.buf, offset=offset)[...] = a
            parts.append((block.name, offset, a.shape, a.dtype.str))
            offset += -(-a.nbytes // 64) * 64
        return ("shm", parts)

    def _new(self, size: int) -> shared_memory.SharedMemory | None:
        size = max(size, SLOT_BYTES)
        try:
            if os.path.isdir("/dev/shm"):
                st = os.statvfs("/dev/shm")
                if st.f_bavail * st.f_frsize < 4 * size:  # tmpfs pages are only taken when written: keep room
                    return None
            name = f"{_slot_prefix(os.getpid())}{len(self.all)}-{secrets.token_hex(4)}"
            block = shared_memory.SharedMemory(name, create=True, size=size)
        except OSError:
            return None
        self.all.append(block)
        return block

    def release(self, index: int) -> None:
        block = self.used.pop(index, None)
        if block is not None:
            self.free.append(block)

    def close(self) -> None:
        for block in self.all:
            with contextlib.suppress(BufferError, OSError):
                block.close()
            with contextlib.suppress(OSError):
                block.unlink()


# -- the worker process --------------------------------------------------------------------------------

def _work(number: int, segmenter, drawing: DrawSpec | None, inbox, results, stop) -> None:
    """A worker's loop: load tasks give back the prepared image (kept here for drawing), render tasks
    draw, encode and write it; drop tasks forget it. Render tasks go first: the sink waits for them."""

    stopping = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: this process decides
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # stop after the current task
    children.die_with_parent()
    parent = multiprocessing.parent_process()
    kept: dict[int, Any] = {}
    slots = _Slots()
    pending: deque[tuple] = deque()
    try:
        while not stopping and not stop.is_set():
            while True:  # everything already sent, so that a render task can overtake the loads
                try:
                    raw = inbox.get(timeout=0.5) if not pending else inbox.get_nowait()
                except queue.Empty:
                    break
                if raw is None:
                    return
                pending.append(pickle.loads(raw))
            if not pending:
                if parent is not None and not parent.is_alive():
                    return
                continue
            task = next((t for t in pending if t[0] != "load"), pending[0])
            pending.remove(task)
            if stop.is_set():
                return
            kind, index = task[0], task[1]
            if kind == "load":
                job = Job(index, "", task[2])
                prepared = prepare_job(segmenter, job)
                payload = None
                if prepared is not None:
                    if drawing is not None:
                        kept[index] = prepared
                    tensor = None if prepared.tensor is prepared.rgb else prepared.tensor
                    payload = (*slots.put(index, prepared.rgb, tensor), prepared.region)
                results.put(("loaded", number, index, payload, job.times, job.cpu, _picklable(job.error)))
            elif kind == "render":
                slots.release(index)
                _, _, class_map, target = task
                job = Job(index, "", _nothing, target)
                try:
                    prepared = kept.pop(index)
                    draw_job(job, prepared.rgb, class_map, segmenter.colors, drawing, prepared.region, write_picture)
                except SegnetError as exc:
                    job.error = exc
                results.put(("rendered", number, index, job.times, job.cpu, _picklable(job.error)))
            else:  # drop
                slots.release(index)
                kept.pop(index, None)
    except BaseException as exc:  # a bug, not a bad image: the run stops with it
        results.put(("crashed", number, None, _picklable(exc), traceback.format_exc()))
    finally:
        slots.close()
        results.put(("exit", number, time.process_time()))
        if stopping or (parent is not None and not parent.is_alive()):
            results.cancel_join_thread()  # nobody may read it any more: never block the exit on a full pipe


def _picklable(error):
    """``error``, or a SegnetError with its message when it cannot travel between processes."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return SegnetError(str(error))


def _nothing() -> None:
    return None
