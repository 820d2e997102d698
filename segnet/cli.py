"""``segnet-console`` (also ``segnet`` and ``python -m segnet``): a thin shell over ``Segmenter``.

Only this module turns a ``SegnetError`` into ``segnet-console: error: ...`` and an exit code:
2 for usage errors, 1 when some inputs failed (after processing the rest), 0 on success.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from . import __version__, zoo
from .errors import SegnetError, UsageError
from .image_io import read_image

PROG = "segnet-console"

EPILOG = f"""\
networks (--network, case-insensitive; the default is {zoo.DEFAULT_NETWORK}):
{chr(10).join(f"  {n.name:<34} {', '.join(n.aliases)}" for n in zoo.NETWORKS)}

examples:
  {PROG} city.jpg out.jpg                          overlay with the default network
  {PROG} --network=fcn-resnet18-cityscapes city.jpg out.jpg
  {PROG} --alpha=200 --filter-mode=point in.jpg out.png
  {PROG} --visualize=mask in.jpg mask.png
  {PROG} --visualize=overlay,mask "images/*.jpg" outdir/
  {PROG} --model=net.onnx --labels=classes.txt --colors=colors.txt \\
      --input-blob=input_0 --output-blob=output_0 in.jpg out.jpg
  {PROG} --stats in.jpg                            class histogram only, nothing written

exit status: 0 success, 1 some inputs failed (the rest were processed), 2 usage error.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Semantic segmentation of images with FCN-ResNet18 networks, as "
                "jetson-inference's segnet-console does it, on onnxruntime or TensorRT.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="an image file, a directory of images, or a quoted glob ('imgs/*.jpg')")
    p.add_argument("output", nargs="?", help="output image (format from its extension: jpg, png, tga, "
                   "bmp, ...), or a directory for several inputs; omit to write nothing")
    add_network_options(p)
    vis = p.add_argument_group("output")
    vis.add_argument("--visualize", default="overlay", metavar="MODES", help="overlay, mask, or both "
                     "joined by ',' or '|' (overlay with a half-size mask beside it); default: overlay")
    vis.add_argument("--alpha", type=float, default=120, metavar="A", help="overlay opacity 0-255 for "
                     "classes without an explicit alpha in colors.txt (default: 120)")
    vis.add_argument("--filter-mode", "--filter_mode", dest="filter_mode", default="linear",
                     metavar="MODE", help="point or linear: how the coarse class grid is upsampled for "
                     "display (default: linear)")
    vis.add_argument("--ignore-class", "--ignore_class", dest="ignore_class", default="void",
                     metavar="NAME", help="class left out of the argmax (default: void; no-op when no "
                     "class has that name)")
    vis.add_argument("--stats", action="store_true", help="print the class histogram of the grid")
    run = p.add_argument_group("runtime")
    run.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per inference call "
                     "(default: 1); the batch axis of a fixed-batch model is made dynamic")
    run.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                     help="threads that decode, draw and encode while the network runs (default: "
                     "min(4, cores))")
    run.add_argument("--skip-existing", action="store_true", help="leave inputs whose output file "
                     "exists (resume an interrupted folder run)")
    run.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run a folder job on a Ray "
                     "cluster (ADDRESS as ray.init takes it; without one, $RAY_ADDRESS or a local instance); "
                     "needs segnet[ray]. Write --ray=ADDRESS, or put --ray after the paths")
    run.add_argument("--ray-actors", type=int, metavar="N", help="Ray actors (default: one per CPU, or per "
                     "GPU with --ray-gpus)")
    run.add_argument("--ray-gpus", type=float, default=0, metavar="G", help="GPUs per Ray actor (default 0: "
                     "CPU actors; 1 on GPU clusters)")
    run.add_argument("-q", "--quiet", action="store_true", help="no status lines or progress on stderr")
    run.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def add_network_options(p: argparse.ArgumentParser) -> None:
    """The options that choose and load a network, shared by segnet-console and segnet-eval."""
    net = p.add_argument_group("network")
    net.add_argument("--network", metavar="NAME", help="a pretrained network (list below); default "
                     f"{zoo.DEFAULT_NETWORK}")
    net.add_argument("--model", metavar="PATH", help="a custom ONNX model (or a folder holding "
                     f"{zoo.MODEL_FILE}, {zoo.LABELS_FILE}, {zoo.COLORS_FILE}); overrides --network")
    net.add_argument("--labels", metavar="PATH", help="classes.txt for a custom model: one name per line")
    net.add_argument("--colors", metavar="PATH", help="colors.txt for a custom model: 'r g b [a]' per line")
    net.add_argument("--input-blob", "--input_blob", dest="input_blob", metavar="NAME",
                     help="input tensor name (default: input_0)")
    net.add_argument("--output-blob", "--output_blob", dest="output_blob", metavar="NAME",
                     help="output tensor name (default: output_0)")
    net.add_argument("--models-dir", metavar="DIR", help="where pretrained networks live (default: "
                     "$SEGNET_MODELS, else the project's models/ folder)")
    net.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing "
                     "pretrained network")
    net.add_argument("--backend", default="auto", metavar="NAME", help="auto, onnxruntime or tensorrt "
                     "(default: auto: TensorRT when it can run here, else onnxruntime)")
    net.add_argument("--precision", choices=("fp16", "fp32"), default=None, help="TensorRT engine precision "
                     "(default: fp16)")
    net.add_argument("--engine-cache", metavar="DIR", help="where TensorRT engines are kept (default: "
                     "$SEGNET_CACHE, else beside the model when writable, else the user cache)")
    fmt = p.add_argument_group("other model formats (also read from segnet.json beside the model; the "
                               "defaults are jetson's FCN-ResNet18 layout)")
    fmt.add_argument("--input-layout", metavar="NCHW|NHWC", help="input layout (default: the axis of size 3)")
    fmt.add_argument("--output-layout", metavar="NCHW|NHWC", help="output layout (default: detected)")
    fmt.add_argument("--mean", metavar="R,G,B", help="subtracted from RGB scaled to 0..1 (default: ImageNet's "
                     "0.485,0.456,0.406; 0.5,0.5,0.5 with --std 0.5,0.5,0.5 for x/127.5-1)")
    fmt.add_argument("--std", metavar="R,G,B", help="divides after the mean (default: 0.229,0.224,0.225; "
                     "raw 0..255 input: --mean 0,0,0 --std 0.0039215686,0.0039215686,0.0039215686)")
    fmt.add_argument("--bgr", action="store_true", default=None, help="feed blue first")
    fmt.add_argument("--resize", metavar="MODE", help="nearest (jetson's stretch, default), bilinear, or "
                     "letterbox (keeps the aspect ratio; the padding is cut from the output)")
    fmt.add_argument("--input-size", metavar="WxH", help="network size for models whose input size is "
                     "symbolic (default: the image's, rounded to a multiple of 32)")
    fmt.add_argument("--scores", choices=("logits", "sigmoid"), default=None, help="logits (or softmax: the "
                     "argmax decides), or sigmoid: independent per-class probabilities without a background "
                     "class; a pixel below --threshold in every class is background")
    fmt.add_argument("--threshold", type=float, metavar="P", help="sigmoid models: background below this "
                     "(default 0.5)")


def segmenter_options(args: argparse.Namespace, **options) -> dict:
    """``Segmenter``'s keyword arguments from the network options (also what Ray workers load)."""
    from .layout import parse_size, parse_triple

    layouts = {k: getattr(args, k).upper() if getattr(args, k) else None for k in ("input_layout", "output_layout")}
    return dict(network=args.network, model=args.model, labels=args.labels, colors=args.colors,
                input_blob=args.input_blob, output_blob=args.output_blob, backend=args.backend,
                models_dir=args.models_dir, download=not args.no_download, **layouts,
                mean=parse_triple(args.mean, "--mean") if args.mean else None,
                std=parse_triple(args.std, "--std") if args.std else None, bgr=args.bgr,
                resize=args.resize.lower() if args.resize else None,
                input_size=parse_size(args.input_size) if args.input_size else None, output=args.scores,
                threshold=args.threshold, **_given(precision=args.precision, engine_cache=args.engine_cache),
                **options)


def open_segmenter(args: argparse.Namespace, **options):
    from .segmenter import Segmenter

    return Segmenter(**segmenter_options(args, **options))


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def expand_inputs(spec: str) -> tuple[list[Path], bool]:
    """The input files, and whether the input names several (a directory or a glob)."""
    from .image_io import READ_EXTENSIONS

    path = Path(spec)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in READ_EXTENSIONS)
        if not files:
            raise UsageError(f"{spec}: no images in this directory ({', '.join(READ_EXTENSIONS)})")
        return files, True
    if path.exists():
        return [path], False
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(spec) if Path(f).is_file())
        if not files:
            raise UsageError(f"{spec}: no files match this pattern")
        return files, True
    raise UsageError(f"{spec}: no such file or directory")


def plan_outputs(inputs: list[Path], several: bool, output: str | None) -> list[Path | None]:
    """Where each input's picture goes, checked before any work: the extension is writable and the
    directory exists (created if missing) and accepts files."""
    from .image_io import image_format

    if output is None:
        return [None] * len(inputs)
    out = Path(output)
    if several or out.is_dir() or output.endswith(("/", os.sep)):
        if out.exists() and not out.is_dir():
            raise UsageError(f"{output}: several inputs need an output directory, and this is a file")
        targets = [out / f.name for f in inputs]
        folder = out
    else:
        targets, folder = [out], out.parent
    for t in {t.suffix.lower(): t for t in targets}.values():
        image_format(t)
    _check_writable(folder)
    return targets


def _check_writable(folder: Path) -> None:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {folder}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from . import video
    from .segmenter import check_alpha, check_filter_mode, parse_visualize

    visualize = parse_visualize(args.visualize)  # validate every flag before any slow work
    check_alpha(args.alpha)
    check_filter_mode(args.filter_mode)
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give 1 or more")
    _fix_ray_address(args)
    inputs, several = expand_inputs(args.input)
    if args.ray is not None:
        return run_ray(args, inputs, plan_outputs(inputs, several, args.output), visualize)
    if not several and video.is_video(inputs[0]):
        source = VideoSource(inputs[0], args.output)
    else:
        if args.output and video.is_video(args.output):
            raise UsageError(f"{args.output}: a video output needs a video input; give an image or a "
                             "directory as output")
        source = FileSource(inputs, plan_outputs(inputs, several, args.output), several, args.skip_existing)
    with open_segmenter(args, alpha=args.alpha, filter_mode=args.filter_mode, ignore_class=args.ignore_class,
                        batch_size=args.batch_size) as segmenter:
        w, h = segmenter.input_size
        status = Status(args.quiet)
        status.say(f"{segmenter.name} ({w}x{h}, {segmenter.num_classes} classes) on {segmenter.description}")
        return Runner(segmenter, source, visualize, args.stats, status).run(args.workers)


def _fix_ray_address(args: argparse.Namespace) -> None:
    """``--ray images/ out/`` makes argparse read ``images/`` as the address: an address that names an
    existing path and leaves the output empty was meant as the input."""
    if args.ray and args.output is None and (Path(args.ray).exists() or glob.has_magic(args.ray)):
        args.ray, args.input, args.output = "", args.ray, args.input


def run_ray(args: argparse.Namespace, inputs: list[Path], outputs: list, visualize) -> int:
    """The same inputs and outputs as a local run, executed through Ray Data."""
    from . import ray as segnet_ray
    from . import video

    if any(video.is_video(p) for p in inputs):
        raise UsageError("--ray runs image folders; run videos without it")
    if args.skip_existing:
        kept, _ = without_existing(list(zip(inputs, outputs)))
        inputs, outputs = [i for i, _ in kept], [o for _, o in kept]
    options = segmenter_options(args, alpha=args.alpha, filter_mode=args.filter_mode,
                                ignore_class=args.ignore_class, batch_size=args.batch_size)
    start = time.perf_counter()
    done, failures = segnet_ray.run_folder(inputs, outputs, options, visualize, address=args.ray or None,
                                           actors=args.ray_actors, num_gpus=args.ray_gpus, stats=args.stats,
                                           progress=not args.quiet)
    for source, message in failures:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    Status(args.quiet).say(f"{done} of {len(inputs)} images done on Ray in {seconds:.1f} s "
                           f"({done / max(seconds, 1e-9):.1f} images/s)" + (f", {len(failures)} failed"
                                                                         if failures else ""))
    return 1 if failures else 0


def without_existing(pairs: list[tuple[Path, Path | None]]) -> tuple[list, int]:
    """``--skip-existing``: the (input, output) pairs whose output is not there yet, and how many were left."""
    kept = [(i, o) for i, o in pairs if o is None or not o.exists()]
    return kept, len(pairs) - len(kept)


class Status:
    """Status lines on stderr (off with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"segnet: {message}", file=sys.stderr)


class FileSource:
    """Image files in, image files out (or none), each written by the worker that renders it."""

    def __init__(self, inputs: list[Path], outputs: list[Path | None], several: bool, skip_existing: bool):
        pairs = list(zip(inputs, outputs))
        self.skipped = 0
        if skip_existing:
            pairs, self.skipped = without_existing(pairs)
        self.pairs, self.several = pairs, several
        self.total = len(pairs)
        self.pictures = any(o is not None for _, o in pairs)  # asked once per image: not a scan each time

    def jobs(self):
        from .pipeline import Job

        for index, (path, target) in enumerate(self.pairs):
            yield Job(index, str(path), lambda path=path: read_image(path), target)

    def write(self, job, picture) -> None:
        from .image_io import write_image
        from .pipeline import timed

        if job.target is not None:
            timed(job, "encode", write_image, picture, job.target)

    def wants_pictures(self) -> bool:
        return self.pictures

    def finish_ok(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoSource:
    """Every frame of a video in; a video (H.264, same frame rate) or a directory of frames out."""

    def __init__(self, path: Path, output: str | None):
        from . import video

        self.path, self.several = path, True
        self.rate, self.total = video.probe(path)
        self.writer = self.folder = None
        self.skipped = 0
        if output and video.is_video(output):
            out = Path(output)
            _check_writable(out.parent)
            self.writer = video.VideoWriter(out, self.rate)
        elif output:
            self.folder = Path(output)
            if self.folder.exists() and not self.folder.is_dir():
                raise UsageError(f"{output}: frames of a video go to a directory (or give a video file name)")
            _check_writable(self.folder)

    def jobs(self):
        from . import video
        from .pipeline import Job, prefetch

        for index, frame in enumerate(prefetch(video.frames(self.path), 8)):
            target = self.folder / f"{self.path.stem}-{index:06d}.png" if self.folder else index
            yield Job(index, f"{self.path.name} frame {index}", lambda frame=frame: frame, target)

    def write(self, job, picture) -> None:
        from .image_io import write_image
        from .pipeline import timed

        if self.folder is not None:
            timed(job, "encode", write_image, picture, job.target)
        else:
            job.picture = picture  # encoded in order by the sink

    def wants_pictures(self) -> bool:
        return self.writer is not None or self.folder is not None

    def finish_ok(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


class Runner:
    """Feeds a source through the pipeline and reports each result in input order."""

    def __init__(self, segmenter, source, visualize, stats: bool, status: Status):
        self.segmenter, self.source, self.visualize = segmenter, source, visualize
        self.stats, self.status = stats, status
        self.failed = self.done = 0

    def render(self, job) -> None:
        from .pipeline import timed

        if self.source.wants_pictures():
            picture = timed(job, "colorize", job.result.render, self.visualize)
            self.source.write(job, picture)

    def sink(self, job) -> None:
        if job.error is not None:
            self.failed += 1
            if self.progress:
                self.progress.clear()
            print(f"{PROG}: error: {job.error}", file=sys.stderr)
        else:
            self.done += 1
            if self.stats:
                print(f"{job.name}:\n{job.result.stats()}" if self.source.several else job.result.stats())
            if getattr(job, "picture", None) is not None:
                from .pipeline import timed

                timed(job, "encode", self.source.writer.write, job.picture)
            if not self.source.several and job.target is not None:
                self.status.say(f"{job.name} -> {job.target} ({sum(job.times.values()) * 1000:.0f} ms)")
        job.result = job.picture = None  # keep memory flat
        if self.progress:
            self.progress.update(1)

    def run(self, workers: int) -> int:
        from tqdm import tqdm

        from . import pipeline

        show = self.source.several and not self.status.quiet and sys.stderr.isatty()
        self.progress = tqdm(total=self.source.total, unit="img", file=sys.stderr, dynamic_ncols=True) \
            if show else None
        start = time.perf_counter()
        try:
            pipeline.run(self.segmenter, self.source.jobs(), self.render, self.sink, workers=workers)
            self.source.finish_ok()
        except BaseException:
            self.source.abort()
            raise
        finally:
            if self.progress:
                self.progress.close()
        if self.source.several:
            seconds = time.perf_counter() - start
            total = self.done + self.failed
            skipped = f", {self.source.skipped} skipped (output exists)" if self.source.skipped else ""
            failed = f", {self.failed} failed" if self.failed else ""
            self.status.say(f"{self.done} of {total} images done in {seconds:.1f} s "
                            f"({self.done / max(seconds, 1e-9):.1f} images/s){failed}{skipped}")
        return 1 if self.failed else 0


def guarded(prog: str, body, argv) -> int:
    """Run ``body(argv)``, turning user errors into one stderr line and an exit code."""
    try:
        return body(argv)
    except SegnetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. --stats piped into head
        return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(PROG, lambda a: run(build_parser().parse_args(a)), argv)


def console() -> None:
    sys.exit(main())


def build_eval_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="segnet-eval", description="Accuracy of a network on labelled images, measured as "
                "jetson-inference's table is: logits upsampled bilinearly to the label size, argmax, one "
                "confusion matrix over the folder. Label values outside the network's classes (void) "
                "are ignored.", formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="example:\n  segnet-eval --network=fcn-resnet18-camvid camvid/val/images "
                "camvid/val/labels")
    p.add_argument("images", help="folder of images")
    p.add_argument("label_dir", metavar="labels", help="folder of index-PNG labels, matched to the images "
                   "by file stem")
    add_network_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def run_eval(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate

    with open_segmenter(args, ignore_class=None) as segmenter:
        result = evaluate(segmenter, args.images, args.label_dir)
    if args.json:
        print(json.dumps({"network": segmenter.name, **result}, indent=1))
        return 0
    print(f"{segmenter.name} on {result['images']} images, {result['pixels']} labelled pixels")
    print(f"pixel accuracy {result['pixel_accuracy']:.4f}   mean IoU {result['mean_iou']:.4f}   "
          f"mean class accuracy {result['mean_class_accuracy']:.4f}")
    print(f"{'ID':>3}  {'class':<20} {'IoU':>7} {'accuracy':>9} {'pixels':>10}")
    for row in result["per_class"]:
        print(f"{row['id']:>3}  {row['name']:<20} {row['iou']:>7.4f} {row['accuracy']:>9.4f} {row['pixels']:>10}")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    return guarded("segnet-eval", lambda a: run_eval(build_eval_parser().parse_args(a)), argv)


def eval_console() -> None:
    sys.exit(eval_main())
