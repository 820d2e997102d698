"""Train an FCN-ResNet18 from scratch and export it the way jetson-inference ships its networks.

The network is written here with plain ``torch.nn`` (no torchvision): a ResNet-18 backbone with output
stride 32 and the FCN head (3x3 conv 512->128, BN, ReLU, dropout 0.1, 1x1 conv to the classes). The
export is an ONNX file with input ``input_0`` ``[1, 3, H, W]`` and output ``output_0``
``[1, C, H/32, W/32]`` raw logits (no final upsample), plus ``classes.txt`` and ``colors.txt``.

Speed: the whole dataset is decoded once into (GPU) memory and every augmentation is a batched tensor
gather, so an epoch of a few hundred images costs a few hundred milliseconds on a big GPU.

PyTorch is an optional extra (``pip install 'segnet[train]'``) and is imported only when training starts,
so ``segnet-train --help`` works without it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import inspect
import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import metrics
from .errors import SegnetError, UsageError
from .evaluate import pairs as find_pairs
from .labels import read_class_colors, read_class_names, voc_color
from .preprocess import MEAN, STD  # ImageNet, on RGB/255 (SPEC 4.1)
from .zoo import MODEL_FILE

PROG = "segnet-train"
IGNORE = 255  # every label value >= num_classes is mapped to this and ignored by the loss
INSTALL_TORCH = "pip install 'segnet[train]'  (or: pip install torch)"

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


# --------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
                      help=f"folder to write {MODEL_FILE}, classes.txt, colors.txt and train.json to")

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
    return p


def parse_size(text: str) -> tuple[int, int]:
    """``"480x352"`` -> ``(480, 352)``: width, height, multiples of 32 so the grid is exactly H/32 x W/32."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 480x352, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 32 or h % 32:
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


def load_classes(spec: str) -> list[str]:
    """Class names from a classes.txt or a comma-separated list."""
    if Path(spec).is_file():
        names = read_class_names(spec)
    else:
        names = [name.strip() for name in spec.split(",")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UsageError(f"--classes {spec!r}: no class names (give a classes.txt or a list like sky,road)")
    if len(names) > 255:
        raise UsageError(f"--classes: {len(names)} classes; at most 255 fit an 8-bit label with an ignore value")
    return names


def load_colors(spec: str | None, num_classes: int) -> list[tuple[int, ...]]:
    """Colours from a colors.txt or ``'r g b;r g b'``; classes without one get jetson's generated colour."""
    colors: list[tuple[int, ...]] = []
    if spec and Path(spec).is_file():
        colors = [tuple(v for v in color if v is not None) for color in read_class_colors(spec)]
    elif spec:
        for item in (i for i in spec.split(";") if i.strip()):
            try:
                values = tuple(int(v) for v in item.split())
            except ValueError:
                values = ()
            if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values):
                raise UsageError(f"--colors: {item.strip()!r} is not 'r g b' or 'r g b a' with values 0-255")
            colors.append(values)
    if len(colors) > num_classes:
        raise UsageError(f"--colors gives {len(colors)} colours for {num_classes} classes")
    return colors + [voc_color(c + 1) for c in range(len(colors), num_classes)]  # SPEC 3


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: train, validate, export. Returns the exit code."""
    from .cli import guarded

    def run(args) -> int:
        train(build_parser().parse_args(args))
        return 0

    return guarded(PROG, run, argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------- data


def read_pair(image_path: Path, label_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one example: RGB uint8 ``[H, W, 3]`` and labels uint8 ``[H, W]`` with void as ``IGNORE``."""
    from PIL import Image

    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(label_path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise SegnetError(f"{label_path}: labels must be index PNGs (mode L or P), not {im.mode} "
                              "colour pictures")
        raw = np.asarray(im)
    if raw.shape != image.shape[:2]:
        raise SegnetError(f"{label_path}: {raw.shape[1]}x{raw.shape[0]} labels for a "
                          f"{image.shape[1]}x{image.shape[0]} image")
    label = np.where(raw < num_classes, raw, IGNORE).astype(np.uint8)
    return image, label


@dataclass
class Dataset:
    """A whole split in device memory, padded to the largest image (labels padded with ``IGNORE``)."""

    images: "torch.Tensor"  # uint8 [N, Hmax, Wmax, 3]
    labels: "torch.Tensor"  # uint8 [N, Hmax, Wmax]
    sizes: "torch.Tensor"  # float32 [N, 2]: (height, width) of each image
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def load_dataset(images: Path, labels: Path, num_classes: int, device) -> Dataset:
    """Decode every pair once (threads: Pillow releases the GIL) and move the lot to ``device``."""
    torch = _torch()
    pairs = find_pairs(images, labels)  # the same matching segnet-eval uses
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda pair: read_pair(*pair, num_classes), pairs))
    hmax = max(img.shape[0] for img, _ in decoded)
    wmax = max(img.shape[1] for img, _ in decoded)
    image_array = np.zeros((len(decoded), hmax, wmax, 3), np.uint8)
    label_array = np.full((len(decoded), hmax, wmax), IGNORE, np.uint8)
    for i, (img, lab) in enumerate(decoded):
        image_array[i, : img.shape[0], : img.shape[1]] = img
        label_array[i, : lab.shape[0], : lab.shape[1]] = lab
    sizes = [img.shape[:2] for img, _ in decoded]
    return Dataset(
        images=torch.from_numpy(image_array).to(device),
        labels=torch.from_numpy(label_array).to(device),
        sizes=torch.tensor(sizes, dtype=torch.float32, device=device),
        names=[image.name for image, _ in pairs],
    )


def sample_views(data: Dataset, idx, size, *, scale=None, flip=False, jitter=0.0, generator=None):
    """Network inputs and labels for the examples ``idx``, as a batched nearest-neighbour gather.

    With ``scale=None`` the view is the whole image stretched to ``size`` exactly as inference samples it
    (SPEC 4.1, ``segnet.preprocess``). With ``scale=(lo, hi)`` the stretched image is zoomed by a
    random factor and a random window of ``size`` is cut from it; where the window leaves the image the
    input is the mean colour (0 after normalisation) and the label is ``IGNORE``.
    Returns float32 ``[B, 3, H, W]`` normalised inputs and int64 ``[B, H, W]`` labels.
    """
    torch = _torch()
    width, height = size
    dev = data.images.device
    n = idx.numel()

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, device=dev, generator=generator)

    src_h, src_w = data.sizes[idx, 0], data.sizes[idx, 1]
    zoom = torch.ones(n, device=dev) if scale is None else uniform(*scale)
    # Top-left of the window in the zoomed picture; uniform over all placements, padding included.
    off_y = torch.zeros(n, device=dev) if scale is None else (height * zoom - height) * uniform(0, 1)
    off_x = torch.zeros(n, device=dev) if scale is None else (width * zoom - width) * uniform(0, 1)
    ys = torch.arange(height, device=dev, dtype=torch.float32)
    xs = torch.arange(width, device=dev, dtype=torch.float32)
    # Source index = trunc((v + off) * scale) with a float32 scale, as jetson's resize kernel computes it
    # (SPEC 4.1; segnet.preprocess): with zoom 1 and no offset this is exactly what inference feeds.
    iy = torch.floor((ys[None] + off_y[:, None]) * (src_h / (height * zoom))[:, None]).long()
    ix = torch.floor((xs[None] + off_x[:, None]) * (src_w / (width * zoom))[:, None]).long()
    if scale is None:  # float rounding must not push the whole view off its last row or column
        iy = torch.minimum(iy, src_h.long()[:, None] - 1)
        ix = torch.minimum(ix, src_w.long()[:, None] - 1)
    if flip:
        mirrored = torch.rand(n, device=dev, generator=generator) < 0.5
        ix = torch.where(mirrored[:, None], ix.flip(1), ix)
    inside = ((iy >= 0) & (iy < src_h[:, None].long()))[:, :, None] & (
        (ix >= 0) & (ix < src_w[:, None].long())
    )[:, None, :]
    iy = iy.clamp(0, data.images.shape[1] - 1)
    ix = ix.clamp(0, data.images.shape[2] - 1)
    rows, cols, batch = iy[:, :, None], ix[:, None, :], idx[:, None, None]

    labels = torch.where(inside, data.labels[batch, rows, cols], IGNORE).long()
    x = data.images[batch, rows, cols].permute(0, 3, 1, 2).float().div_(255)
    if jitter > 0:
        contrast = uniform(1 - jitter, 1 + jitter)[:, None, None, None]
        brightness = uniform(1 - jitter, 1 + jitter)[:, None, None, None]
        gray = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - gray) * contrast + gray).mul_(brightness).clamp_(0, 1)
    mean = torch.tensor(MEAN, device=dev)[None, :, None, None]
    std = torch.tensor(STD, device=dev)[None, :, None, None]
    x = ((x - mean) / std) * inside[:, None]
    return x, labels


def class_weights(data: Dataset, num_classes: int, mode: str):
    """Loss weights ``median(freq) / freq`` from the labels' pixel frequencies (median frequency balancing,
    as SegNet trained on CamVid), or their square root, which helps thin classes without costing as much
    pixel accuracy."""
    torch = _torch()
    if mode == "none":
        return None
    counts = torch.bincount(data.labels.flatten().long(), minlength=IGNORE + 1)[:num_classes].double()
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.zeros_like(freq)
    weights[present] = freq[present].median() / freq[present]
    if mode == "sqrt-median":
        weights = weights.sqrt()
    return weights.float()


# ------------------------------------------------------------------------------------------- model


def _torch():
    """Import torch, or tell the user how to get it."""
    try:
        import torch
    except ImportError:
        raise SegnetError(f"training needs PyTorch: {INSTALL_TORCH}") from None
    return torch


@functools.cache
def _modules() -> SimpleNamespace:
    """The network's module classes, defined on first use so that importing this file needs no torch."""
    torch = _torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        """ResNet's two 3x3 convolutions with a shortcut (a 1x1 projection where the shape changes)."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + shortcut)

    class FCNResNet18(nn.Module):
        """ResNet-18 (output stride 32) and the FCN head; returns logits on the H/32 x W/32 grid."""

        def __init__(self, num_classes: int):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
            widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
            self.layers = nn.Sequential(
                *(nn.Sequential(BasicBlock(cin, cout, s), BasicBlock(cout, cout, 1)) for cin, cout, s in widths)
            )
            self.head = nn.Sequential(
                nn.Conv2d(512, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                nn.Dropout(0.1), nn.Conv2d(128, num_classes, 1),
            )
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            for m in self.modules():
                if isinstance(m, BasicBlock):  # each block starts as the identity (Goyal et al. 2017)
                    nn.init.zeros_(m.bn2.weight)
            nn.init.normal_(self.head[-1].weight, std=0.01)
            nn.init.zeros_(self.head[-1].bias)

        def forward(self, x):
            return self.head(self.layers(self.stem(x)))

    return SimpleNamespace(BasicBlock=BasicBlock, FCNResNet18=FCNResNet18)


def fcn_resnet18(num_classes: int):
    """A freshly initialised FCN-ResNet18 for ``num_classes`` classes."""
    return _modules().FCNResNet18(num_classes)


# ---------------------------------------------------------------------------------------- training


def resolve_device(name: str):
    torch = _torch()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this PyTorch sees no CUDA GPU (use --device cpu)")
    return torch.device(name)


def amp_dtype(choice: str, device):
    """The autocast dtype, or None for full precision (always on CPU: autocast there is slow)."""
    torch = _torch()
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def poly_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then poly decay ``(1 - t)^0.9`` to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (1 - (step - warmup) / max(1, total - warmup)) ** 0.9


def make_optimizer(model, args):
    """SGD or AdamW; weight decay on conv weights only (BN scales and biases are left alone, as usual)."""
    torch = _torch()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    sgd = args.optimizer == "sgd"
    wd = args.weight_decay if args.weight_decay is not None else (5e-4 if sgd else 0.05)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if sgd:
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    return torch.optim.AdamW(groups, lr=0.0)


@functools.lru_cache(maxsize=16)
def bilinear_matrix(size_out: int, size_in: int, device):
    """``[size_out, size_in]`` weights of 1-D bilinear resizing, align_corners=False (F.interpolate's)."""
    torch = _torch()
    src = ((torch.arange(size_out, device=device, dtype=torch.float32) + 0.5) * (size_in / size_out) - 0.5)
    src = src.clamp_min(0)
    low = src.floor().long().clamp_max(size_in - 1)
    high = (low + 1).clamp_max(size_in - 1)
    frac = src - low
    matrix = torch.zeros(size_out, size_in, device=device)
    rows = torch.arange(size_out, device=device)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def upsample_bilinear(logits, size):
    """``F.interpolate(logits, size, mode="bilinear")`` written as two small matmuls, in float32.

    Same numbers, but its backward pass is a matmul too: interpolate's backward scatters each of the
    ~1000 output pixels per grid cell with atomic adds onto the same few addresses, which made it the
    slowest step of training on a GPU.
    """
    height, width = size
    rows = bilinear_matrix(height, logits.shape[-2], logits.device)
    cols = bilinear_matrix(width, logits.shape[-1], logits.device)
    return rows @ logits.float() @ cols.T


def segmentation_loss(logits, labels, weight):
    """Cross-entropy on the logits upsampled bilinearly to label size (as evaluation scores them).

    A window that happens to be all void contributes zero instead of 0/0.
    """
    torch = _torch()
    up = upsample_bilinear(logits, labels.shape[-2:])
    total = torch.nn.functional.cross_entropy(up, labels, weight=weight, ignore_index=IGNORE, reduction="sum")
    valid = labels != IGNORE
    count = valid.sum() if weight is None else (weight[labels.clamp_max(len(weight) - 1)] * valid).sum()
    return total / count.clamp_min(1)


def evaluate(model, data: Dataset, size, num_classes: int, dtype=None, batch_size: int = 8) -> np.ndarray:
    """Confusion matrix over a split: whole image nearest-stretched in, logits bilinear to label size."""
    torch = _torch()
    F = torch.nn.functional
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    device = data.images.device
    with torch.no_grad(), _autocast(device, dtype):
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
            x, _ = sample_views(data, idx, size)
            logits = model(_channels_last(x)).float()
            for j, i in enumerate(idx.tolist()):
                h, w = (int(v) for v in data.sizes[i].tolist())
                up = F.interpolate(logits[j : j + 1], size=(h, w), mode="bilinear", align_corners=False)
                prediction = up.argmax(1)[0].cpu().numpy()
                confusion += metrics.confusion_matrix(data.labels[i, :h, :w].cpu().numpy(), prediction,
                                                      num_classes)
    model.train(was_training)
    return confusion


def _autocast(device, dtype):
    """Mixed precision where asked for, otherwise nothing at all."""
    torch = _torch()
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _channels_last(x):
    torch = _torch()
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def train(args: argparse.Namespace) -> dict:
    """The whole run: load, train, validate, export. Returns the summary also written to train.json."""
    torch = _torch()
    classes = load_classes(args.classes)
    colors = load_colors(args.colors, len(classes))
    num_classes = len(classes)
    if (args.val_images is None) != (args.val_labels is None):
        raise UsageError("give both --val-images and --val-labels, or neither")
    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    device = resolve_device(args.device)
    dtype = amp_dtype(args.amp, device)
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    started = time.monotonic()
    train_set = load_dataset(args.images, args.labels, num_classes, device)
    val_set = load_dataset(args.val_images, args.val_labels, num_classes, device) if args.val_images else None
    size = args.size
    if size is None:
        h, w = (int(v) for v in train_set.sizes[0].tolist())
        size = (max(32, round(w / 32) * 32), max(32, round(h / 32) * 32))
    log(f"data: {len(train_set)} training images"
        + (f", {len(val_set)} validation images" if val_set else "")
        + f", {num_classes} classes, loaded in {time.monotonic() - started:.1f}s on {device}")

    model = fcn_resnet18(num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args)
    peak = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
    weight = class_weights(train_set, num_classes, args.class_weights)
    if weight is not None:
        log("class weights: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(classes, weight.tolist())))
    scaler = _grad_scaler(enabled=dtype == torch.float16)

    batch = min(args.batch_size, len(train_set))
    steps = len(train_set) // batch  # drop the ragged last batch: BN wants full batches
    total = args.epochs * steps
    warmup = min(int(args.warmup_epochs * steps), total // 2)
    log_every = args.log_every or max(1, args.epochs // 50)
    val_every = args.val_every or max(1, args.epochs // 10)
    log(f"training {args.epochs} epochs x {steps} steps of {batch} at {size[0]}x{size[1]}, "
        f"{args.optimizer} lr {peak:g}, precision {dtype or torch.float32}")

    model.train()
    train_started = time.monotonic()
    running, seen, epochs_done = torch.zeros((), device=device), 0, 0
    for epoch in range(args.epochs):
        whole = epoch >= args.epochs - args.whole_epochs
        order = torch.randperm(len(train_set), device=device, generator=generator)
        for step in range(steps):
            lr = poly_lr(epoch * steps + step, total, peak, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * batch : (step + 1) * batch]
            x, y = sample_views(train_set, idx, size, scale=None if whole else args.scale,
                                flip=not args.no_flip, jitter=args.jitter, generator=generator)
            with _autocast(device, dtype):
                loss = segmentation_loss(model(_channels_last(x)), y, weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += loss.detach()
            seen += 1
        epochs_done = epoch + 1
        elapsed = time.monotonic() - train_started
        if epochs_done % log_every == 0 or epochs_done == args.epochs:
            rate = epochs_done * steps * batch / elapsed
            eta = elapsed / epochs_done * (args.epochs - epochs_done)
            log(f"epoch {epochs_done}/{args.epochs}  loss {running.item() / seen:.4f}  lr {lr:.2e}  "
                f"{rate:.0f} img/s  elapsed {_clock(elapsed)}  eta {_clock(eta)}")
            running.zero_()
            seen = 0
        if val_set is not None and epochs_done % val_every == 0 and epochs_done < args.epochs:
            confusion = evaluate(model, val_set, size, num_classes, dtype)
            log(f"val epoch {epochs_done}: pixel accuracy {metrics.pixel_accuracy(confusion):.2%}  "
                f"mean IoU {metrics.mean_iou(confusion):.2%}")
        if args.max_minutes and elapsed > 60 * args.max_minutes and epochs_done < args.epochs:
            log(f"WARNING: --max-minutes {args.max_minutes:g} reached: stopping after {epochs_done} of "
                f"{args.epochs} epochs (the learning rate had not decayed to zero)")
            break
    train_seconds = time.monotonic() - train_started

    summary = {
        "network": "fcn-resnet18",
        "input_size": list(size),
        "classes": classes,
        "epochs_done": epochs_done,
        "train_seconds": round(train_seconds, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if val_set is not None:
        confusion = evaluate(model, val_set, size, num_classes)  # full precision, like the export
        summary["val"] = metrics.summary(confusion, classes)
        log(format_summary(summary["val"]))

    args.output.mkdir(parents=True, exist_ok=True)
    model_path = args.output / MODEL_FILE
    export_onnx(model, model_path, size, args.opset)
    write_text(args.output / "classes.txt", "".join(f"{name}\n" for name in classes))
    write_text(args.output / "colors.txt", "".join(" ".join(map(str, c)) + "\n" for c in colors))
    summary["onnx_check"] = check_onnx(model, model_path, size)
    write_text(args.output / "train.json", json.dumps(summary, indent=2) + "\n")
    log(f"wrote {model_path}, classes.txt, colors.txt, train.json "
        f"(training {_clock(train_seconds)}, total {_clock(time.monotonic() - started)})")
    return summary


def _grad_scaler(enabled: bool):
    """fp16 needs loss scaling; bf16 and fp32 do not (a disabled scaler is a pass-through)."""
    torch = _torch()
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


def format_summary(val: dict) -> str:
    lines = [f"val: pixel accuracy {val['pixel_accuracy']:.2%}  mean IoU {val['mean_iou']:.2%}  "
             f"mean class accuracy {val['mean_class_accuracy']:.2%}"]
    for name, iou in val["class_iou"].items():
        lines.append(f"  {name:<16} IoU {iou:7.2%}  accuracy {val['class_accuracy'][name]:7.2%}")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


# ------------------------------------------------------------------------------------------ export


def export_onnx(model, path: Path, size, opset: int = 17) -> None:
    """Write the model as FP32 ONNX, ``input_0 [1,3,H,W]`` -> ``output_0 [1,C,H/32,W/32]``, atomically."""
    torch = _torch()
    width, height = size
    cpu_model = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        # The TorchScript exporter needs no onnxscript and gives the plain static graph jetson expects.
        options["dynamo"] = False
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(cpu_model, (torch.zeros(1, 3, height, width),), str(tmp), input_names=["input_0"],
                          output_names=["output_0"], opset_version=opset, do_constant_folding=True, **options)
    os.replace(tmp, path)


def check_onnx(model, path: Path, size) -> dict:
    """Run the exported file with onnxruntime on one random input and compare with torch in eval mode."""
    torch = _torch()
    try:
        import onnxruntime as ort
    except ImportError:
        log("onnx check skipped: onnxruntime is not installed (pip install onnxruntime)")
        return {"skipped": True}
    width, height = size
    x = np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output_0"], {"input_0": x})
    cpu_model = copy.deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        want = cpu_model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    log(f"onnx check: output_0 {list(got.shape)}, max |onnxruntime - torch| = {diff:.2e} "
        f"(logits up to {scale:.1f})")
    if not diff <= 1e-3 * max(1.0, scale):
        log("WARNING: the exported ONNX does not reproduce the torch model")
    return {"shape": list(got.shape), "max_abs_diff": diff, "max_abs_logit": scale}


def write_text(path: Path, text: str) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
