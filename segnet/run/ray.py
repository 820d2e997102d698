"""Segmenting many images on a Ray cluster with Ray Data (``pip install 'segnet[ray]'``).

``SegmentBatch`` is the stage a user puts into their own ``Dataset.map_batches``; ``run`` is the run loop's
Ray executor (``segnet-console --ray``): the same jobs as the single-machine executors, so the same files,
drawn by the same ``drawing.draw``.

    CPU actors:  paths ─▶ [actor: read ─▶ segment ─▶ draw ─▶ write] ─▶ (index, error) rows to the driver
    GPU actors:  paths ─▶ [CPU tasks: read] ─▶ [GPU actor: segment] ─▶ [CPU tasks: draw ─▶ write] ─▶ ...

On CPUs one actor per core does everything, so no decoded image crosses the object store. On GPUs the
network takes about a millisecond and decoding, colouring and encoding about twenty, so those run as CPU
tasks beside the GPU actors, which keep one CPU each and leave the rest of the node to the tasks.

The network is loaded lazily, once per actor, on the worker (never on the driver): pretrained networks
are downloaded into each node's models folder and TensorRT engines are built and cached there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..drawing import DrawSpec, draw
from ..errors import SegnetError, option
from ..options import Options
from .job import Job
from .stats import line as stats_line
from .stats import record as stats_record
from .stats import wants_records

log = logging.getLogger(__name__)

INSTALL = "pip install 'segnet[ray]'"

#: Images per batch: CPU actors take a few (load balancing on small folders), GPU stages more.
CPU_BATCH = 8
GPU_BATCH = 32

_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # what failed rows carry in image columns
_NO_MAP = np.zeros((0, 0), np.uint8)


def import_ray():
    """``ray`` with Ray Data, or a SegnetError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise SegnetError(f"running on Ray needs Ray Data: {INSTALL}") from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse a Ray address (``host:port`` or ``ray://host:port``) where nothing answers within
    ``SEGNET_RAY_CONNECT_TIMEOUT`` seconds: ``ray.init`` itself waits on such an address for many minutes.
    ``auto``, ``local`` and an empty address (a local instance) need no check."""
    import socket

    from ..options import limit

    match = re.fullmatch(r"(?:ray://)?\[?([^\s/\[\]]+?)\]?:(\d{1,5})/?", address.strip())
    if match is None:
        return
    host, port = match[1], int(match[2])
    timeout = limit("SEGNET_RAY_CONNECT_TIMEOUT")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        raise SegnetError(f"cannot reach the Ray cluster at {address}: no answer within {timeout:g} s (wait longer "
                          "with SEGNET_RAY_CONNECT_TIMEOUT)") from None
    except OSError as exc:
        reason = "host not found" if isinstance(exc, socket.gaierror) else (exc.strerror or str(exc)).lower()
        raise SegnetError(f"cannot reach the Ray cluster at {address}: {reason}; start it (ray start --head) or "
                          "give its address") from None


class SegmentBatch:
    """For ``Dataset.map_batches(SegmentBatch, fn_constructor_kwargs=...)``: segments each row's image
    with one network per actor, loaded lazily on the worker.

    Rows give the image as ``image`` (uint8 ``[H, W, 3]``), ``bytes`` (an encoded file, as
    ``ray.data.read_binary_files`` gives it) or ``path``; ``path`` also names the image in error messages.
    Rows that come with a non-empty ``error`` (an earlier stage failed them) pass through untouched.

    Each row gets ``class_map`` (uint8 ``[gh, gw]``, empty when failed) and ``error`` ("" or what went
    wrong with that image: a failing image never stops the job), with ``stats`` the ``--stats`` table, and
    with ``records`` the statistics as a JSON ``record`` (``--json``).
    With ``visualize``, the picture is written atomically to the row's ``output`` (or to
    ``output_dir / <input file name>``) and ``output`` says where; a row whose ``output`` is empty gets
    none. Without an ``output`` column or ``output_dir``, pictures are returned in ``picture``. With
    ``defer_render`` the picture is left to a later ``render_batch`` stage: rows keep their ``image``
    and get the class ``colors``.

    ``options`` (an ``Options`` or a dict of them) and keyword options are ``segnet.Options``: ``network``,
    ``model``, ``labels``, ``colors``, ``backend``, ``alpha``, ``filter_mode``, ``ignore_class``, ...
    """

    def __init__(self, options: Options | dict[str, Any] | None = None, *, visualize=None,
                 output_dir: str | os.PathLike | None = None, stats: bool = False,
                 defer_render: bool = False, records: bool = False, **given):
        from ..options import visualize as check_visualize

        if isinstance(options, dict):
            given = {**options, **given}
            options = None
        self.options = Options.create(options, **given)
        self.visualize = check_visualize("visualize", visualize) if visualize else None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.stats, self.records = stats, records
        self.defer_render = defer_render
        self.drawing = DrawSpec(self.visualize, self.options.filter_mode) if self.visualize else None
        self._segmenter: Any = None

    def __getstate__(self) -> dict:  # a loaded network never travels: each worker loads its own
        return {**self.__dict__, "_segmenter": None}

    @property
    def segmenter(self):
        if self._segmenter is None:
            from ..segmenter import Segmenter

            self._segmenter = Segmenter(options=self.options)  # a failure here fails the job: no image can run
        return self._segmenter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        segmenter = self.segmenter
        n = _rows(batch)
        errors = _column(batch, "error", n, "")
        names = _column(batch, "path", n, None)
        sources = batch.get("image", batch.get("bytes", batch.get("path")))
        if sources is None:
            raise SegnetError("SegmentBatch needs an 'image', 'bytes' or 'path' column, got "
                              f"{', '.join(batch) or 'none'}")
        targets = _targets(batch, names, self.output_dir)
        render = self.visualize and not self.defer_render
        class_maps, tables, images, records = [_NO_MAP] * n, [""] * n, [_NO_IMAGE] * n, [""] * n
        pictures: list[np.ndarray | None] = [None] * n
        for i in range(n):
            if errors[i]:
                continue
            try:
                images[i] = _as_image(sources[i], names[i] or f"row {i}")
                result = segmenter(images[i])
                class_maps[i] = result.class_map
                tables[i] = result.stats() if self.stats else ""
                if self.records:
                    records[i] = stats_line(stats_record(result, names[i] or f"row {i}"))
                if render and self.drawing is not None and targets[i] is not False:
                    picture = draw(result.image, result.class_map, result.colors,
                                   self.drawing.with_region(result.region))
                    pictures[i] = _deliver(picture, targets[i])
            except Exception as exc:  # one image fails, not the job
                errors[i], images[i] = _describe(exc), _NO_IMAGE
        out = {k: v for k, v in batch.items() if k not in ("bytes", "image", "error")}
        out.update(class_map=_objects(class_maps), error=_objects(errors))
        if self.stats:
            out["stats"] = _objects(tables)
        if self.records:
            out["record"] = _objects(records)
        if self.defer_render:  # only the images a later stage will draw travel on
            images = [_NO_IMAGE if target is False else image for image, target in zip(images, targets)]
            out.update(image=_objects(images), colors=np.repeat(segmenter.colors[None], n, axis=0))
        elif self.visualize:
            out.update(_delivered(targets, pictures))
        return out


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A CPU stage before GPU actors: ``path`` or ``bytes`` -> ``image`` (and ``error`` for bad files)."""
    n = _rows(batch)
    errors = _column(batch, "error", n, "")
    names = _column(batch, "path", n, None)
    sources: Any = batch.get("bytes", batch.get("path"))
    images = [_NO_IMAGE] * n
    for i in range(n):
        if not errors[i]:
            try:
                images[i] = _as_image(sources[i], names[i] or f"row {i}")
            except Exception as exc:
                errors[i] = _describe(exc)
    out = {k: v for k, v in batch.items() if k not in ("bytes", "error")}
    out.update(image=_objects(images), error=_objects(errors))
    return out


def render_batch(batch: dict[str, np.ndarray], visualize, filter_mode: str = "linear",
                 output_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """A CPU stage after ``SegmentBatch(defer_render=True)``: ``image``, ``class_map`` and ``colors`` ->
    the picture (``drawing.draw``), written or returned as ``SegmentBatch`` does it."""
    drawing = DrawSpec(visualize, filter_mode)
    n = _rows(batch)
    errors = _column(batch, "error", n, "")
    targets = _targets(batch, _column(batch, "path", n, None), output_dir)
    pictures: list[np.ndarray | None] = [None] * n
    for i in range(n):
        if errors[i] or targets[i] is False:
            continue
        try:
            picture = draw(batch["image"][i], batch["class_map"][i], batch["colors"][i], drawing)
            pictures[i] = _deliver(picture, targets[i])
        except Exception as exc:
            errors[i] = _describe(exc)
    out = {k: v for k, v in batch.items() if k not in ("image", "colors", "error")}
    out.update(error=_objects(errors), **_delivered(targets, pictures))
    return out


def run(jobs: Iterable[Job], sink: Callable[[Job], None], options: Options) -> dict:
    """The Ray executor: segment the image files of ``jobs`` (each names its ``path``, and its ``target``:
    where its picture goes, None for none) on a Ray cluster, each worker drawing through ``drawing.draw``
    and writing as the single-machine run does. ``sink(job)`` runs here, in input order, with ``job.error``
    set for a failed image, else ``job.table``/``job.record`` (the statistics, made on the workers).

    ``options.ray`` is ``ray.init``'s address (``"auto"``, ``"ray://head:10001"``, ...); empty: ``RAY_ADDRESS``
    or a running local cluster, else a new local instance, shut down again at the end. ``ray_actors``
    defaults to every CPU of the cluster (``ray_gpus=0``) or every GPU (``ray_gpus`` per actor). Paths must
    mean the same files on every node (shared storage).
    """
    jobs = list(jobs)
    if any(job.path is None for job in jobs):
        raise SegnetError(f"{option('ray')} runs image files; give a folder, a glob or image paths")
    if not jobs:
        return {"kind": "ray", "workers": 0}
    loaded = sys.modules.get("ray")
    if loaded is None or not loaded.is_initialized():
        check_reachable(options.ray or os.environ.get("RAY_ADDRESS") or "")
    ray = import_ray()
    started = not ray.is_initialized()
    detail = log.isEnabledFor(logging.DEBUG)  # Ray's own lines and the workers' logs only with -v
    for name in ("ray", "ray.data"):  # a failure reaches the user as our one-line error, not as Ray's report
        logging.getLogger(name).setLevel(logging.INFO if detail else logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        if not detail:
            stack.enter_context(_without_ray_log_lines())
        _run(ray, jobs, sink, options, started, detail)
    return {"kind": "ray", "workers": options.ray_actors or 0}


def _run(ray, jobs: list[Job], sink, options: Options, started: bool, detail: bool) -> None:
    if started:
        address = options.ray or None
        try:
            ray.init(address=address, logging_level=logging.INFO if detail else logging.ERROR,
                     log_to_driver=detail)
        except ConnectionError as exc:
            raise SegnetError(f"cannot reach the Ray cluster{f' at {address}' if address else ''}: {exc}") \
                from None
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.raise_original_map_exception
    context.enable_progress_bars = log.isEnabledFor(logging.INFO) and sys.stderr.isatty()
    context.raise_original_map_exception = True  # a SegnetError from a worker stays one
    inputs = [job.path for job in jobs if job.path is not None]
    outputs = [job.target for job in jobs]
    try:
        dataset, absolute = _plan(ray, inputs, outputs, options)
        pending: dict[int, Job] = {}
        following = 0
        try:
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                tables = batch["stats"] if options.stats else [None] * _rows(batch)
                records = batch["record"] if wants_records(options) else [None] * _rows(batch)
                for index, error, table, record in zip(batch["index"], batch["error"], tables, records):
                    i = int(index)
                    job = jobs[i]
                    if error:
                        job.error = SegnetError(_as_given(error, absolute[i], inputs[i], outputs[i]))
                    else:
                        job.table = table or None
                        job.record = {**json.loads(record), "source": job.name} if record else None
                    pending[i] = job
                    while following in pending:  # in input order, as rows arrive in any order
                        sink(pending.pop(following))
                        following += 1
        except Exception as exc:
            cause = _segnet_cause(exc)
            if cause is None:
                raise
            raise SegnetError(str(cause).split("\n")[0]) from None  # Ray Data appends retry advice
    finally:
        context.enable_progress_bars, context.raise_original_map_exception = saved
        if started:
            ray.shutdown()


#: A line of Ray's C++ core log: ``[2026-12-01 21:29:08,935 E 429 429] core_worker.cc:2465: ...``
_RAY_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] ")


@contextlib.contextmanager
def _without_ray_log_lines():
    """Standard error with the lines Ray's C++ core writes straight to the file descriptor left out (its
    "E ... core_worker" notice comes on healthy runs); everything else passes through unchanged."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (a notebook): nothing to filter
        yield
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def forward():
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(1 << 16):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line + b"\n" for line in lines if not _RAY_LOG_LINE.match(line)]
                if kept:
                    os.write(saved, b"".join(kept))
            if pending and not _RAY_LOG_LINE.match(pending):
                os.write(saved, pending)

    thread = threading.Thread(target=forward, daemon=True, name="segnet-ray-stderr")
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        thread.join(timeout=5)
        os.close(saved)


def _plan(ray, inputs, outputs, options: Options):
    """The Ray Data pipeline for ``run_folder``, and each row's input and output as the workers see them
    (absolute paths)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0)
    actors, num_gpus, stats, visualize = options.ray_actors, options.ray_gpus, options.stats, options.visualize
    records = wants_records(options)
    paths = {key: os.path.abspath(getattr(options, key)) for key in ("model", "labels", "colors", "models_dir",
                                                                    "engine_cache") if getattr(options, key)}
    worker = Options.create(options, **paths)  # workers do not share the driver's working directory
    absolute = [(os.path.abspath(p), "" if o is None else os.path.abspath(o)) for p, o in zip(inputs, outputs)]
    rows = [{"index": i, "path": a, "output": o} for i, (a, o) in enumerate(absolute)]
    if num_gpus:
        actors = actors or int(gpus // num_gpus)
        if actors < 1:
            raise SegnetError(f"the Ray cluster has {gpus:g} GPUs, not enough for one actor of {num_gpus:g}")
        if cpus <= actors:  # each GPU actor holds one CPU; without one more the read tasks never run
            raise SegnetError(f"the Ray cluster has {cpus} CPUs for {actors} GPU actors: it needs at least "
                              "one more for reading and writing images (or ask for fewer actors)")
        batch = GPU_BATCH
    else:
        actors = actors or max(cpus, 1)  # reading and writing happen inside the actors: no other stage
        if actors > cpus:  # a fixed pool Ray cannot place waits forever
            raise SegnetError(f"the Ray cluster has {cpus} CPUs, fewer than the {actors} actors asked for")
        batch = CPU_BATCH
        # several actors share each node's cores: onnxruntime's default of one thread per core in every
        # actor oversubscribes them (two actors ran slower than one), so each actor gets one thread
        if not worker.threads:
            worker = Options.create(worker, threads=1)
    actors = max(1, min(actors, len(inputs)))
    batch = max(1, min(batch, math.ceil(len(inputs) / (4 * actors))))  # a few batches per actor at least
    # Blocks of about a batch each balance small folders; past 64 per actor, bigger blocks keep the driver light.
    dataset = ray.data.from_items(rows, override_num_blocks=min(math.ceil(len(rows) / batch), 64 * actors))
    pool = ray.data.ActorPoolStrategy(size=actors)
    render = {"visualize": visualize} if any(o is not None for o in outputs) else {}
    if not num_gpus:
        return dataset.map_batches(
            SegmentBatch, fn_constructor_kwargs={"options": worker, "stats": stats, "records": records, **render},
            batch_size=batch, compute=pool, num_cpus=1, udf_modifying_row_count=False), absolute
    dataset = dataset.map_batches(decode_batch, batch_size=batch, num_cpus=1, udf_modifying_row_count=False)
    dataset = dataset.map_batches(
        SegmentBatch, fn_constructor_kwargs={"options": worker, "stats": stats, "records": records,
                                             "defer_render": bool(render)},
        batch_size=batch, compute=pool, num_gpus=num_gpus, udf_modifying_row_count=False)  # Ray adds 1 CPU
    if render:
        dataset = dataset.map_batches(
            render_batch, fn_kwargs={**render, "filter_mode": worker.filter_mode},
            batch_size=batch, num_cpus=1, udf_modifying_row_count=False)
    return dataset, absolute


def _as_given(message: str, absolute: tuple[str, str], source: Path, target: Path | None) -> str:
    """A worker's message with the paths as the user gave them (workers get them made absolute)."""
    message = message.replace(absolute[0], str(source))
    return message.replace(absolute[1], str(target)) if target is not None else message


def _segnet_cause(exc: BaseException) -> SegnetError | None:
    """The SegnetError a worker raised, from the exception a failed Ray job gives the driver (a
    ``RayTaskError`` that is also an instance of its cause's type, but reads as a remote traceback)."""
    seen: set[int] = set()
    found = None
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, SegnetError):
            found = cause  # the innermost one is the worker's own
        cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
    return found


def _as_image(source, name: str) -> np.ndarray:
    """A row's image: decoded array, encoded bytes or a path -> uint8 ``[H, W, 3]``."""
    from ..image_io import read_image
    from ..segmenter import as_rgb

    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), name)
    if isinstance(source, (str, os.PathLike)):
        return read_image(source)
    return as_rgb(source)


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    """An encoded image -> uint8 RGB, with ``read_image``'s one-line errors."""
    from ..image_io import decode_image

    if not data:
        raise SegnetError(f"{name}: the file is empty")
    return decode_image(io.BytesIO(data), name)


def _targets(batch, names: list, output_dir) -> list[Path | None | bool]:
    """Where each row's picture goes: its ``output``, else ``output_dir / <input file name>``; None: return
    it (the batch names no outputs at all); False: nowhere (an empty ``output``: not even rendered)."""
    if "output" not in batch and output_dir is None:
        return [None] * len(names)
    given = _column(batch, "output", len(names), "")
    return [Path(out) if out else Path(output_dir) / Path(name).name if output_dir is not None and name
            else False for out, name in zip(given, names)]


def _deliver(picture: np.ndarray, target: Path | bool | None) -> np.ndarray | None:
    """Write the picture to ``target`` (atomically) and return None, or return it when there is none."""
    from ..image_io import write_image

    if target is None:
        return picture
    assert not isinstance(target, bool)  # False (no output) is never rendered
    write_image(picture, target)
    return None


def _delivered(targets: list[Path | bool | None], pictures: list) -> dict[str, np.ndarray]:
    """The ``output`` column (where each picture was written, or "") and, for those returned, ``picture``."""
    out = {"output": _objects([str(t) if t else "" for t in targets])}
    if any(p is not None for p in pictures):
        out["picture"] = _objects([p if p is not None else _NO_IMAGE for p in pictures])
    return out


_reported = False


def _describe(exc: Exception) -> str:
    """One image's error message. A SegnetError says it all; anything else is a bug, whose traceback goes to
    the worker's log once per process."""
    global _reported
    if isinstance(exc, SegnetError):
        return str(exc)
    if not _reported:
        log.error("unexpected error in a Ray worker", exc_info=exc)
        _reported = True
    return f"{type(exc).__name__}: {exc}"


def _rows(batch: dict[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _column(batch, key: str, n: int, default) -> list:
    return list(batch[key]) if key in batch else [default] * n


def _objects(values: list) -> np.ndarray:
    """A column of arbitrary objects (ragged arrays, strings), element by element so numpy never merges
    equal-shaped arrays into one."""
    column = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        column[i] = v
    return column


__all__ = ["SegmentBatch", "decode_batch", "import_ray", "render_batch", "run"]
