"""``segnet-train`` (also ``tools/train``): parses the flags into a ``segnet.training.TrainConfig`` and trains.

PyTorch is imported only when training starts, so ``--help`` works without it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Parser, add_verbosity, configure_output, entry_points

PROG = "segnet-train"

EXAMPLE = """\
example: the recipe of segnet's CamVid network (11 classes; void = label 11 is ignored), about
4 minutes on one H200 (about 1700 images a second):
  segnet-train --images camvid/train/images --labels camvid/train/labels \\
      --val-images camvid/val/images --val-labels camvid/val/labels \\
      --classes Sky,Building,Pole,Road,Pavement,Tree,SignSymbol,Fence,Car,Pedestrian,Bicyclist \\
      --size 480x352 --epochs 1000 --whole-epochs 50 --class-weights sqrt-median \\
      --output networks/fcn-resnet18-camvid-480x352

data layout: IMAGES holds RGB pictures (jpg, png, ...); LABELS holds one 8-bit index PNG per picture with
the same file stem, each pixel a class number. Values >= the number of classes (void, 255, ...) are
ignored. The output folder is a network that segnet-console --model/--labels/--colors can load.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Train FCN-ResNet18 (from scratch) on a folder of images and index-PNG labels, and "
        "export it as an ONNX network in jetson-inference's layout.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--images", required=True, type=Path, metavar="DIR", help="training images")
    data.add_argument("--labels", required=True, type=Path, metavar="DIR",
                      help="training labels: index PNGs named like the images")
    data.add_argument("--val-images", type=Path, metavar="DIR", help="validation images (optional)")
    data.add_argument("--val-labels", type=Path, metavar="DIR", help="validation labels")
    data.add_argument("--classes", required=True, metavar="FILE_OR_LIST",
                      help="class names: a classes.txt (one per line) or a comma-separated list; their "
                      "count sets the number of outputs")
    data.add_argument("--colors", metavar="FILE_OR_LIST",
                      help="class colours: a colors.txt ('r g b' per line) or 'r g b;r g b;...'; "
                      "default: jetson's generated palette")
    data.add_argument("--output", required=True, type=Path, metavar="DIR",
                      help="folder to write fcn_resnet18.onnx, classes.txt, colors.txt and train.json to")

    net = p.add_argument_group("network and schedule")
    net.add_argument("--size", type=parse_size, metavar="WxH",
                     help="network input size, multiples of 32 (default: the first image's size "
                     "rounded to multiples of 32)")
    net.add_argument("--epochs", type=int, default=400, help="passes over the training set (default 400)")
    net.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    net.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                     help="SGD with momentum 0.9 (default) or AdamW")
    net.add_argument("--lr", type=float, help="peak learning rate (default 0.05 for sgd, 0.001 for adamw); "
                     "it decays with the poly schedule (1 - t)^0.9 after a linear warm-up")
    net.add_argument("--weight-decay", type=float,
                     help="on conv weights only (default 5e-4 for sgd, 0.05 for adamw)")
    net.add_argument("--warmup-epochs", type=float, default=5, help="linear warm-up length (default 5)")
    net.add_argument("--class-weights", choices=("none", "sqrt-median", "median"), default="none",
                     help="loss weight per class from the training labels' pixel frequencies: median "
                     "frequency balancing (median), its square root (milder), or none (default)")

    aug = p.add_argument_group("augmentation")
    aug.add_argument("--scale", type=parse_range, default=(0.5, 2.0), metavar="MIN,MAX",
                     help="random zoom relative to the whole image stretched to the network size "
                     "(default 0.5,2); the crop is padded with 'ignore' where the image ends")
    aug.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    aug.add_argument("--jitter", type=float, default=0.25,
                     help="random brightness and contrast factors in 1 +- JITTER (default 0.25; 0: off)")
    aug.add_argument("--whole-epochs", type=int, default=0,
                     help="train the last N epochs on the whole image stretched to the network size, as "
                     "inference sees it (flips and jitter stay on; default 0)")

    run = p.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    run.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                     help="mixed precision on CUDA (auto: bf16 where supported, else fp16; off on CPU)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--val-every", type=int, default=0, metavar="N",
                     help="validate every N epochs (default: 10 times per run); always at the end")
    run.add_argument("--log-every", type=int, default=0, metavar="N",
                     help="print progress every N epochs (default: about 50 lines per run)")
    run.add_argument("--max-minutes", type=float, default=0,
                     help="stop training after this many minutes and export what there is (0: no limit)")
    run.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_verbosity(p)
    return p


def parse_size(text: str) -> tuple[int, int]:
    """``"480x352"`` -> ``(480, 352)``: width, height, multiples of 32 so the grid is exactly H/32 x W/32."""
    from ..errors import UsageError
    from ..options import size

    try:
        w, h = size("size", text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 480x352, got {text!r}") from None
    if w % 32 or h % 32:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be positive multiples of 32")
    return w, h


def parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX such as 0.5,2, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"{text}: need 0 < MIN <= MAX")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..training import TrainConfig, train

    configure_output(args.quiet, args.verbose)
    train(TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}))
    return 0


main, console = entry_points(PROG, build_parser, run)

if __name__ == "__main__":
    console()
