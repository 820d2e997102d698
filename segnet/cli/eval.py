"""``segnet-eval``: accuracy of a network on labelled images, as a table or one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from .common import Parser, add_options, add_verbosity, configure_output, guarded, options_from

PROG = "segnet-eval"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Accuracy of a network on labelled images, measured as jetson-inference's "
               "table is: logits upsampled bilinearly to the label size, argmax, one confusion matrix over the "
               "folder. Label values outside the network's classes (void) are ignored.",
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="example:\n  segnet-eval --network=fcn-resnet18-camvid camvid/val/images camvid/val/labels")
    p.add_argument("images", help="folder of images")
    p.add_argument("label_dir", metavar="labels", help="folder of index-PNG labels, matched to the images by "
                   "file stem")
    add_options(p, "network", "backend", "format")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_verbosity(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..segmenter import Segmenter

    configure_output(args.quiet, args.verbose)
    with Segmenter(options=options_from(args, ignore_class=None)) as segmenter:
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


def main(argv: list[str] | None = None) -> int:
    return guarded(PROG, lambda a: run(build_parser().parse_args(a)), argv)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
