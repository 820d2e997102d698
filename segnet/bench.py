"""``segnet-bench`` (also ``tools/benchmark``): where the time goes, and what the pipeline buys.

In one run, on the same images and network: a plain sequential pipeline (decode, pre-process, inference,
class map, colorize, encode, one image after another) and the pipelined runner of ``segnet-console``
(worker threads, batches). Prints per-stage milliseconds per image and images/s for both, the network
alone, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .cli import _Parser, add_network_options, expand_inputs, guarded, open_segmenter
from .image_io import read_image, write_image
from .segmenter import parse_visualize

STAGES = ("decode", "preprocess", "inference", "classmap", "colorize", "encode")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="segnet-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="example:\n  segnet-bench --images 'data/images/city_*.jpg' --repeat 4 --json bench.json")
    p.add_argument("--images", default=None, help="a directory or quoted glob of images (default: the bundled "
                   "street images, data/images/city_*.jpg)")
    p.add_argument("--image-size", metavar="WxH", help="resize the images to this size first (re-encoded as "
                   "JPEG quality 95, so decoding costs what it would)")
    p.add_argument("--repeat", type=int, default=3, help="pass over the images this many times (default 3)")
    p.add_argument("--batch-size", type=int, default=1, help="images per inference call in the pipelined run")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--visualize", default="overlay")
    p.add_argument("--format", default="jpg", help="output format of the encode stage (default jpg)")
    p.add_argument("--network-runs", type=int, default=20, help="timed inference calls for the "
                   "network-only figure (default 20)")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    add_network_options(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _images(spec: str | None, size: str | None, scratch: Path) -> list[Path]:
    if spec is None:
        spec = str(Path(__file__).resolve().parent.parent / "data" / "images" / "city_*.jpg")
    paths, _ = expand_inputs(spec)  # the inputs segnet-console would take
    if not size:
        return paths
    from PIL import Image

    w, h = (int(v) for v in size.lower().split("x"))
    resized = []
    for p in paths:
        out = scratch / f"{p.stem}-{w}x{h}.jpg"
        Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR).save(out, quality=95)
        resized.append(out)
    return resized


def sequential(segmenter, paths, visualize, out_dir: Path, fmt: str) -> dict:
    """The plain pipeline: every stage of every image, one after another, in this thread."""
    times = {stage: 0.0 for stage in STAGES}
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
    from . import pipeline

    times = {stage: 0.0 for stage in STAGES}

    def render(job):
        picture = pipeline.timed(job, "colorize", job.result.render, visualize)
        pipeline.timed(job, "encode", write_image, picture, job.target)

    def sink(job):
        if job.error is not None:
            raise job.error
        for stage, seconds in job.times.items():
            times[stage] += seconds

    jobs = (pipeline.Job(i, str(p), lambda p=p: read_image(p), out_dir / f"pipe{i}.{fmt}")
            for i, p in enumerate(paths))
    start = time.perf_counter()
    pipeline.run(segmenter, jobs, render, sink, workers=workers)
    return {"seconds": time.perf_counter() - start, "stage_seconds": times}


def network_only(segmenter, batch: int, runs: int) -> dict:
    w, h = segmenter.input_size
    tensors = [np.random.default_rng(0).standard_normal((3, h, w)).astype(np.float32)] * batch
    for _ in range(3):
        segmenter.infer_batch(tensors)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter.infer_batch(tensors)
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples)
    return {"batch": batch, "median_ms_per_call": median * 1000, "ms_per_image": median * 1000 / batch}


def run(args: argparse.Namespace) -> int:
    visualize = parse_visualize(args.visualize)
    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as scratch:
        scratch = Path(scratch)
        paths = _images(args.images, args.image_size, scratch) * args.repeat
        with open_segmenter(args) as single, open_segmenter(args, batch_size=args.batch_size) as batched:
            segmenter_info = {"network": single.name, "backend": single.description,
                              "input_size": list(single.input_size), "num_classes": single.num_classes}
            single(paths[0])  # warm-up
            batched.segment_batch(paths[: args.batch_size])
            seq = sequential(single, paths, visualize, scratch, args.format)
            pipe = pipelined(batched, paths, visualize, scratch, args.format, args.workers)
            net = [network_only(single, 1, args.network_runs)]
            if args.batch_size > 1:
                net.append(network_only(batched, args.batch_size, args.network_runs))
    n = len(paths)
    report = {
        "segnet": __version__, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
        **segmenter_info, "images": n, "image_size": args.image_size or "as is", "batch_size": args.batch_size,
        "workers": args.workers, "visualize": ",".join(visualize), "format": args.format,
        "sequential": {**seq, "images_per_s": n / seq["seconds"]},
        "pipelined": {**pipe, "images_per_s": n / pipe["seconds"]},
        "speedup": seq["seconds"] / pipe["seconds"], "network_only": net,
    }
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def format_report(r: dict) -> str:
    n = r["images"]
    lines = [f"{r['network']} {r['input_size'][0]}x{r['input_size'][1]} on {r['backend']}, {n} images "
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


def main(argv: list[str] | None = None) -> int:
    return guarded("segnet-bench", lambda a: run(build_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(main())
