"""``segnet-eval``: accuracy of a network on labelled images, as a table or one JSON object; with ``--compare``,
the agreement of two backends or precisions on the same images."""

from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from ..options import Options
from .common import Parser, add_options, add_verbosity, compared_options, configure_output, entry_points, options_from

PROG = "segnet-eval"

EPILOG = """\
examples:
  segnet-eval --network=fcn-resnet18-camvid camvid/val/images camvid/val/labels
  segnet-eval --backend=onnxruntime --compare backend=onnxruntime,precision=fp16 images/ labels/
  segnet-eval --backend=tensorrt --compare backend=onnxruntime images/          # no labels: agreement only
  segnet-eval --compare precision=fp32,precision=int8 camvid/val/images camvid/val/labels

--compare OTHER runs the network a second time with OTHER's backend options (NAME=VALUE joined by ',', the
options of the backend group: backend, precision, tensorrt_flavour, engine_cache, batch_size, threads) and
reports per image and in total how often the two class maps agree, the largest difference between their
scores and, with labels, each run's pixel accuracy and mean IoU and the difference (second minus first).
A name given twice sets both runs: the first value is A's, the second B's (precision=fp32,precision=int8).
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Accuracy of a network on labelled images, measured as jetson-inference's "
               "table is: logits upsampled bilinearly to the label size, argmax, one confusion matrix over the "
               "folder. Label values outside the network's classes (void) are ignored.",
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("images", help="folder of images")
    p.add_argument("label_dir", metavar="labels", nargs="?", help="folder of index-PNG labels, matched to the images "
                   "by file stem (optional with --compare)")
    add_options(p, "network", "backend", "format")
    p.add_argument("--compare", metavar="OTHER", help="also run with these backend options (e.g. precision=fp16, "
                   "backend=onnxruntime; a name given twice sets both runs: precision=fp32,precision=int8) and "
                   "report how the two runs agree")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_verbosity(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..segmenter import Segmenter

    configure_output(args.quiet, args.verbose)
    if args.compare is None and args.label_dir is None:
        raise UsageError("give the folder of labels (or --compare OTHER to compare two runs without labels)")
    options = options_from(args, ignore_class=None)
    if args.compare is not None:
        changes_a, changes_b = compared_options(args.compare, "backend")
        return compare(args, Options.create(options, **changes_a), Options.create(options, **changes_b))
    from ..evaluation import evaluate

    with Segmenter(options=options) as segmenter:
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


def compare(args: argparse.Namespace, first_options: Options, second_options: Options) -> int:
    from ..evaluation.agreement import compare as compare_runs
    from ..segmenter import Segmenter

    with Segmenter(options=first_options) as first, Segmenter(options=second_options) as second:
        result = compare_runs(first, second, args.images, args.label_dir)
    result = {"network": first.name, "compare": args.compare, **result}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    labelled = "delta" in result
    print(f"{result['network']} on {result['images']} images")
    print(f"A: {result['first']['description']}")
    print(f"B: {result['second']['description']}   (--compare {args.compare})")
    head = f"{'image':<24} {'agreement':>9} {'max |Δscore|':>12}"
    if labelled:
        head += f" {'pixels':>9} {'acc A':>7} {'acc B':>7} {'mIoU A':>7} {'mIoU B':>7}"
    print(head)
    total = {"image": "total", **{k: result[k] for k in ("agreement", "score_difference", "pixel_agreement",
                                                         "first", "second") if k in result}}
    for row in [*result["per_image"], total]:
        line = f"{row['image']:<24} {row['agreement']:>9.4f} {row['score_difference']:>12.4g}"
        if labelled:
            line += (f" {row['pixel_agreement']:>9.4f} {row['first']['pixel_accuracy']:>7.4f} "
                     f"{row['second']['pixel_accuracy']:>7.4f} {row['first']['mean_iou']:>7.4f} "
                     f"{row['second']['mean_iou']:>7.4f}")
        print(line)
    if labelled:
        delta = result["delta"]
        print(f"B - A: pixel accuracy {delta['pixel_accuracy']:+.4f}, mean IoU {delta['mean_iou']:+.4f}")
    return 0


main, console = entry_points(PROG, build_parser, run)

if __name__ == "__main__":
    console()
