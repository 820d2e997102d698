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
    run.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
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
    net.add_argument("--input-blob", "--input_blob", dest="input_blob", default="input_0", metavar="NAME",
                     help="input tensor name (default: input_0)")
    net.add_argument("--output-blob", "--output_blob", dest="output_blob", default="output_0",
                     metavar="NAME", help="output tensor name (default: output_0)")
    net.add_argument("--models-dir", metavar="DIR", help="where pretrained networks live (default: "
                     "$SEGNET_MODELS, else the project's models/ folder)")
    net.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing "
                     "pretrained network")
    net.add_argument("--backend", default="auto", metavar="NAME", help="auto, onnxruntime or tensorrt "
                     "(default: auto)")


def open_segmenter(args: argparse.Namespace, **options):
    from .segmenter import Segmenter

    return Segmenter(args.network, model=args.model, labels=args.labels, colors=args.colors,
                     input_blob=args.input_blob, output_blob=args.output_blob, backend=args.backend,
                     models_dir=args.models_dir, download=not args.no_download, **options)


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
    from .image_io import write_image
    from .segmenter import check_alpha, check_filter_mode, parse_visualize

    def status(message: str) -> None:
        if not args.quiet:
            print(f"segnet: {message}", file=sys.stderr)

    visualize = parse_visualize(args.visualize)  # validate every flag before any slow work
    check_alpha(args.alpha)
    check_filter_mode(args.filter_mode)
    inputs, several = expand_inputs(args.input)
    outputs = plan_outputs(inputs, several, args.output)
    with open_segmenter(args, alpha=args.alpha, filter_mode=args.filter_mode,
                        ignore_class=args.ignore_class) as segmenter:
        w, h = segmenter.input_size
        status(f"{segmenter.name} ({w}x{h}, {segmenter.num_classes} classes) on {segmenter.description}")
        failed = 0
        for source, target in zip(inputs, outputs):
            try:
                start = time.perf_counter()
                result = segmenter(source)
                if args.stats:
                    print(f"{source}:" if several else "", result.stats(), sep="\n" if several else "")
                if target is not None:
                    write_image(result.render(visualize), target)
                    status(f"{source} -> {target} ({(time.perf_counter() - start) * 1000:.0f} ms)")
            except SegnetError as exc:
                failed += 1
                print(f"{PROG}: error: {exc}", file=sys.stderr)
        if several:
            status(f"{len(inputs) - failed} of {len(inputs)} images done" + (f", {failed} failed" if failed
                                                                              else ""))
    return 1 if failed else 0


def _guarded(prog: str, body, argv) -> int:
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
    return _guarded(PROG, lambda a: run(build_parser().parse_args(a)), argv)


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
    return _guarded("segnet-eval", lambda a: run_eval(build_eval_parser().parse_args(a)), argv)


def eval_console() -> None:
    sys.exit(eval_main())
