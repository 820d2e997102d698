"""Where the time goes, and what the pipeline buys (``segnet-bench``, also ``tools/benchmark``).

In one run, on the same images and network: a plain sequential pipeline (decode, pre-process, inference,
class map, colorize, encode, one image after another) and the pipelined runner of ``segnet-console``
(worker threads or processes, batches). Prints per-stage milliseconds per image and images/s for both, the
network alone, and writes everything as JSON.

For the pipelined run it also prints what the machine allows: the CPU time each stage took per image (the
CPU time of the thread that ran it), the CPU time of the whole run (every thread and worker process), the
cores used, and the bound they imply, ``cores / CPU ms per image`` (or the network's own rate when that is
lower), so the gap between the measured rate and the bound is printed rather than guessed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from . import __version__
from .image_io import read_image, write_image
from .options import Options

STAGES = ("decode", "preprocess", "inference", "classmap", "colorize", "encode")
#: Options that change the loaded network (a compared run with other values loads its own)
NETWORK_FIELDS = ("network", "model", "backend", "precision", "batch_size", "threads", "tensorrt_flavour", "fuse",
                  "input_size")


def sequential(segmenter, paths, visualize, out_dir: Path, fmt: str) -> dict:
    """The plain pipeline: every stage of every image, one after another, in this thread."""
    times = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)
    start, cpu_start = time.perf_counter(), time.process_time()

    def clock(stage, fn, *args):
        t, c = time.perf_counter(), time.thread_time()
        value = fn(*args)
        times[stage] += time.perf_counter() - t
        cpu[stage] += time.thread_time() - c
        return value

    for i, path in enumerate(paths):
        image = clock("decode", read_image, path)
        prepared = clock("preprocess", segmenter.prepare, image)
        ((scores, class_map),) = clock("inference", segmenter.infer_maps, [prepared.tensor])
        result = clock("classmap", segmenter.finish, prepared, scores, class_map)
        picture = clock("colorize", result.render, visualize)
        clock("encode", write_image, picture, out_dir / f"seq{i}.{fmt}")
    return {"seconds": time.perf_counter() - start, "stage_seconds": times, "cpu_stage_seconds": cpu,
            "cpu_seconds": time.process_time() - cpu_start, "kind": "sequential", "workers": 1}


def pipelined(segmenter, paths, visualize, out_dir: Path, fmt: str, workers: int, processes: int = 0) -> dict:
    """The executors of ``segnet-console``: ``workers`` threads, or ``processes`` worker processes when > 0,
    drawing through ``drawing.draw`` and writing each picture."""
    from .drawing import DrawSpec
    from .run import processes as worker_processes
    from .run import threads
    from .run.job import Job

    times = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)

    def sink(job):
        if job.error is not None:
            raise job.error
        for stage, seconds in job.times.items():
            times[stage] += seconds
        for stage, seconds in job.cpu.items():
            cpu[stage] += seconds

    jobs = (Job(i, str(p), functools.partial(read_image, p), out_dir / f"pipe{i}.{fmt}", path=p)
            for i, p in enumerate(paths))
    drawing = DrawSpec(visualize, segmenter.filter_mode)
    start = time.perf_counter()
    if processes:
        stats = worker_processes.run(segmenter, jobs, sink, processes=processes, drawing=drawing)
    else:
        stats = threads.run(segmenter, jobs, sink, drawing=drawing, workers=workers)
    return {"seconds": time.perf_counter() - start, "stage_seconds": times, "cpu_stage_seconds": cpu, **stats}


def bound(run: dict, images: int, cores: int) -> dict:
    """What the cores allow for a run: its CPU milliseconds per image (in the stages, and in all), the
    images/s ``cores`` can give at that cost, the images/s the network allows when it runs one batch at a
    time in one thread, and how far the measured rate is below the lower of the two."""
    stage_ms = sum(run["cpu_stage_seconds"].values()) * 1000 / images
    all_ms = run["cpu_seconds"] * 1000 / images
    network_ms = run["stage_seconds"]["inference"] * 1000 / images
    cores_bound = cores * 1000 / max(stage_ms, 1e-9)
    network_bound = 1000 / max(network_ms, 1e-9)
    best = min(cores_bound, network_bound)
    rate = images / run["seconds"]
    return {"cores": cores, "cpu_ms_per_image_stages": stage_ms, "cpu_ms_per_image_all": all_ms,
            "cores_bound_images_per_s": cores_bound,
            "cores_bound_all_cpu_images_per_s": cores * 1000 / max(all_ms, 1e-9),
            "network_bound_images_per_s": network_bound, "bound_images_per_s": best,
            "limited_by": "cores" if cores_bound <= network_bound else "network", "gap": best / rate}


def network_only(segmenter, batch: int, runs: int, sample: Path) -> dict:
    """Median time of ``runs`` inference calls of ``batch`` inputs shaped like ``sample``'s (random values)."""
    like = segmenter.prepare(sample).tensor  # the model's size, or the image's for symbolic sizes
    rng = np.random.default_rng(0)
    if like.dtype == np.uint8:  # pre-processing in the graph: the image goes in
        tensors = [rng.integers(0, 256, like.shape, dtype=np.uint8)] * batch
    else:
        tensors = [rng.standard_normal(like.shape).astype(np.float32)] * batch
    for _ in range(3):
        segmenter.infer_maps(tensors)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter.infer_maps(tensors)
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples)
    return {"batch": batch, "median_ms_per_call": median * 1000, "ms_per_image": median * 1000 / batch}


def benchmark(paths: list[Path], options: Options, scratch: Path, *, fmt: str = "jpg",
              network_runs: int = 20, image_size: str | None = None, compare: Options | None = None,
              compare_label: str = "") -> dict:
    """Sequential and pipelined runs over ``paths`` with the same network, and the network alone, as one
    report (what ``segnet-bench`` prints and writes as JSON). Pictures are written into ``scratch``.
    ``compare``: also the pipelined runner with these options (another precision, kind or number of
    workers), in the same run; ``compare_label`` says how they differ."""
    from .run import processes as worker_processes
    from .segmenter import Segmenter

    if worker_processes.count(options, len(paths)) or compare is not None:
        worker_processes.prestart()  # as segnet-console does: the fork server starts while the networks load
    single_options = Options.create(options, batch_size=1)
    with Segmenter(options=single_options) as single, Segmenter(options=options) as batched:
        segmenter_info = {"network": single.name, "backend": single.description,
                          "input_size": list(single.input_size) if single.input_size else None,
                          "num_classes": single.num_classes}
        single(paths[0])  # warm-up
        batched.segment_batch(paths[: options.batch_size])
        seq = sequential(single, paths, options.visualize, scratch, fmt)
        processes = worker_processes.count(options, len(paths))
        pipe = pipelined(batched, paths, options.visualize, scratch, fmt, options.workers, processes)
        other = None
        if compare is not None:
            same_network = all(getattr(compare, f) == getattr(options, f) for f in NETWORK_FIELDS)
            with contextlib.nullcontext(batched) if same_network else Segmenter(options=compare) as second:
                if not same_network:
                    second.segment_batch(paths[: compare.batch_size])  # warm-up
                count = worker_processes.count(compare, len(paths))
                other = pipelined(second, paths, options.visualize, scratch, fmt, compare.workers, count)
                other["backend"] = second.description
        net = [network_only(single, 1, network_runs, paths[0])]
        if options.batch_size > 1:
            net.append(network_only(batched, options.batch_size, network_runs, paths[0]))
    by_precision = precisions(single_options, str(segmenter_info["backend"]), net[0], network_runs, paths[0])
    n = len(paths)
    cores = worker_processes.cores()
    pipe["bound"] = bound(pipe, n, cores)
    seq["bound"] = bound(seq, n, 1)
    extra = {}
    if other is not None:
        extra["other"] = {**other, "images_per_s": n / other["seconds"], "bound": bound(other, n, cores),
                          "options": compare_label}
    return {
        "segnet": __version__, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
        **segmenter_info, "images": n, "image_size": image_size or "as is", "batch_size": options.batch_size,
        "workers": pipe["workers"], "worker_kind": pipe["kind"], "cores": cores,
        "visualize": ",".join(options.visualize), "format": fmt,
        "sequential": {**seq, "images_per_s": n / seq["seconds"]},
        "pipelined": {**pipe, "images_per_s": n / pipe["seconds"]},
        "speedup": seq["seconds"] / pipe["seconds"], "network_only": net, "network_by_precision": by_precision,
        **extra,
    }


#: The precisions the network alone is timed in on onnxruntime's CPU provider, whichever one the run used.
CPU_PRECISIONS = ("fp32", "int8")


def precisions(options: Options, description: str, measured: dict, runs: int, sample: Path) -> dict:
    """The network alone (batch 1) in each of ``CPU_PRECISIONS`` when the run is on onnxruntime: the one the run
    used is ``measured``, the others are opened and timed here. A precision the model cannot run (no INT8 copy)
    gives its one-line reason instead of a time. Empty on other backends."""
    from .errors import SegnetError
    from .segmenter import Segmenter

    if not description.startswith("onnxruntime"):
        return {}
    used = options.precision or "fp32"
    found: dict = {}
    for precision in CPU_PRECISIONS:
        if precision == used:
            found[precision] = measured
            continue
        try:
            with Segmenter(options=Options.create(options, backend="onnxruntime", precision=precision)) as other:
                found[precision] = network_only(other, 1, runs, sample)
        except SegnetError as exc:
            found[precision] = {"error": str(exc)}
    return found


def format_report(r: dict) -> str:
    n = r["images"]
    size = f"{r['input_size'][0]}x{r['input_size'][1]}" if r["input_size"] else "(image-sized input)"
    lines = [f"{r['network']} {size} on {r['backend']}, {n} images "
             f"({r['image_size']}), {r['visualize']} -> {r['format']}, batch {r['batch_size']}, "
             f"{r['workers']} worker {r['worker_kind']}, {r['cores']} cores",
             f"{'stage (ms/image)':<18}{'sequential':>12}{'pipelined*':>12}"]
    for stage in STAGES:
        lines.append(f"{stage:<18}{r['sequential']['stage_seconds'][stage] * 1000 / n:>12.1f}"
                     f"{r['pipelined']['stage_seconds'][stage] * 1000 / n:>12.1f}")
    lines.append(f"{'wall (ms/image)':<18}{r['sequential']['seconds'] * 1000 / n:>12.1f}"
                 f"{r['pipelined']['seconds'] * 1000 / n:>12.1f}")
    lines.append(f"{'images/s':<18}{r['sequential']['images_per_s']:>12.2f}{r['pipelined']['images_per_s']:>12.2f}"
                 f"   pipelined / sequential = {r['speedup']:.2f}x")
    for net in r["network_only"]:
        lines.append(f"network only, batch {net['batch']}: {net['ms_per_image']:.2f} ms/image")
    timed = {p: t["ms_per_image"] for p, t in r.get("network_by_precision", {}).items() if "ms_per_image" in t}
    if timed:
        base = timed.get("fp32")
        each = ", ".join(f"{p} {ms:.2f} ms/image" + (f" ({base / ms:.2f}x fp32)" if base and p != "fp32" else "")
                         for p, ms in timed.items())
        lines.append(f"network only on onnxruntime, batch 1, by precision: {each}")
    for p, t in r.get("network_by_precision", {}).items():
        if "error" in t:
            lines.append(f"network only in {p}: not measured ({t['error']})")
    lines.append("* stages overlap in the pipelined run: their sum exceeds the wall time")
    pipe, b = r["pipelined"], r["pipelined"]["bound"]
    lines.append("")
    lines.append(f"{'CPU ms/image':<18}{'sequential':>12}{'pipelined':>12}   "
                 "(CPU time of the thread running each stage)")
    for stage in STAGES:
        lines.append(f"{stage:<18}{r['sequential']['cpu_stage_seconds'][stage] * 1000 / n:>12.1f}"
                     f"{pipe['cpu_stage_seconds'][stage] * 1000 / n:>12.1f}")
    lines.append(f"{'all stages':<18}{r['sequential']['bound']['cpu_ms_per_image_stages']:>12.1f}"
                 f"{b['cpu_ms_per_image_stages']:>12.1f}")
    lines.append(f"{'whole run':<18}{r['sequential']['bound']['cpu_ms_per_image_all']:>12.1f}"
                 f"{b['cpu_ms_per_image_all']:>12.1f}   (every thread and process: stages, transfers, start-up)")
    lines.append(f"bound: {b['cores']} cores / {b['cpu_ms_per_image_stages']:.1f} ms = "
                 f"{b['cores_bound_images_per_s']:.1f} images/s from the stages "
                 f"({b['cores_bound_all_cpu_images_per_s']:.1f} from the whole run's CPU); the network, one batch "
                 f"at a time: {b['network_bound_images_per_s']:.1f} images/s")
    lines.append(f"measured {pipe['images_per_s']:.1f} images/s: {b['gap']:.2f}x below the bound "
                 f"({b['bound_images_per_s']:.1f} images/s, set by the {b['limited_by']})")
    if "other" in r:
        o, ob = r["other"], r["other"]["bound"]
        stages = ", ".join(f"{stage} {o['cpu_stage_seconds'][stage] * 1000 / n:.1f}" for stage in STAGES)
        label = f"{o.get('options')}: " if o.get("options") else ""
        lines.append(f"{label}the same with {o['workers']} worker {o['kind']} on {o.get('backend', '')}: "
                     f"{o['images_per_s']:.1f} images/s, "
                     f"{ob['gap']:.2f}x below its bound ({ob['bound_images_per_s']:.1f}); CPU ms/image: {stages}; "
                     f"whole run {ob['cpu_ms_per_image_all']:.1f}")
    return "\n".join(lines)
