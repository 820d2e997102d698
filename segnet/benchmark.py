"""Where the time goes, and what the pipeline buys (``segnet-bench``, also ``tools/benchmark``).

In one run, on the same images and network: a plain sequential pipeline (decode, pre-process, inference,
class map, colorize, encode, one image after another) and the pipelined runner of ``segnet-console``
(worker threads, batches). Prints per-stage milliseconds per image and images/s for both, the network
alone, and writes everything as JSON.
"""

from __future__ import annotations

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


def sequential(segmenter, paths, visualize, out_dir: Path, fmt: str) -> dict:
    """The plain pipeline: every stage of every image, one after another, in this thread."""
    times = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()

    def clock(stage, fn, *args):
        t = time.perf_counter()
        value = fn(*args)
        times[stage] += time.perf_counter() - t
        return value

    for i, path in enumerate(paths):
        image = clock("decode", read_image, path)
        prepared = clock("preprocess", segmenter.prepare, image)
        (scores,) = clock("inference", segmenter.infer_batch, [prepared.tensor])
        result = clock("classmap", segmenter.finish, prepared, scores)
        picture = clock("colorize", result.render, visualize)
        clock("encode", write_image, picture, out_dir / f"seq{i}.{fmt}")
    return {"seconds": time.perf_counter() - start, "stage_seconds": times}


def pipelined(segmenter, paths, visualize, out_dir: Path, fmt: str, workers: int) -> dict:
    from .run import pipeline

    times = dict.fromkeys(STAGES, 0.0)

    def render(job):
        picture = pipeline.timed(job, "colorize", job.result.render, visualize)
        pipeline.timed(job, "encode", write_image, picture, job.target)

    def sink(job):
        if job.error is not None:
            raise job.error
        for stage, seconds in job.times.items():
            times[stage] += seconds

    jobs = (pipeline.Job(i, str(p), functools.partial(read_image, p), out_dir / f"pipe{i}.{fmt}")
            for i, p in enumerate(paths))
    start = time.perf_counter()
    pipeline.run(segmenter, jobs, render, sink, workers=workers)
    return {"seconds": time.perf_counter() - start, "stage_seconds": times}


def network_only(segmenter, batch: int, runs: int, sample: Path) -> dict:
    """Median time of ``runs`` inference calls of ``batch`` inputs shaped like ``sample``'s (random values)."""
    shape = segmenter.prepare(sample).tensor.shape  # the model's size, or the image's for symbolic sizes
    tensors = [np.random.default_rng(0).standard_normal(shape).astype(np.float32)] * batch
    for _ in range(3):
        segmenter.infer_batch(tensors)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter.infer_batch(tensors)
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples)
    return {"batch": batch, "median_ms_per_call": median * 1000, "ms_per_image": median * 1000 / batch}


def benchmark(paths: list[Path], options: Options, scratch: Path, *, fmt: str = "jpg",
              network_runs: int = 20, image_size: str | None = None) -> dict:
    """Sequential and pipelined runs over ``paths`` with the same network, and the network alone, as one
    report (what ``segnet-bench`` prints and writes as JSON). Pictures are written into ``scratch``."""
    from .segmenter import Segmenter

    single_options = Options.create(options, batch_size=1)
    with Segmenter(options=single_options) as single, Segmenter(options=options) as batched:
        segmenter_info = {"network": single.name, "backend": single.description,
                          "input_size": list(single.input_size) if single.input_size else None,
                          "num_classes": single.num_classes}
        single(paths[0])  # warm-up
        batched.segment_batch(paths[: options.batch_size])
        seq = sequential(single, paths, options.visualize, scratch, fmt)
        pipe = pipelined(batched, paths, options.visualize, scratch, fmt, options.workers)
        net = [network_only(single, 1, network_runs, paths[0])]
        if options.batch_size > 1:
            net.append(network_only(batched, options.batch_size, network_runs, paths[0]))
    n = len(paths)
    return {
        "segnet": __version__, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
        **segmenter_info, "images": n, "image_size": image_size or "as is", "batch_size": options.batch_size,
        "workers": options.workers, "visualize": ",".join(options.visualize), "format": fmt,
        "sequential": {**seq, "images_per_s": n / seq["seconds"]},
        "pipelined": {**pipe, "images_per_s": n / pipe["seconds"]},
        "speedup": seq["seconds"] / pipe["seconds"], "network_only": net,
    }


def format_report(r: dict) -> str:
    n = r["images"]
    size = f"{r['input_size'][0]}x{r['input_size'][1]}" if r["input_size"] else "(image-sized input)"
    lines = [f"{r['network']} {size} on {r['backend']}, {n} images "
             f"({r['image_size']}), {r['visualize']} -> {r['format']}, batch {r['batch_size']}, "
             f"{r['workers']} workers, {r['machine']['cpus']} CPUs",
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
    lines.append("* stages overlap in the pipelined run: their sum exceeds the wall time")
    return "\n".join(lines)
