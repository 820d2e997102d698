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

import contextlib
import copy
import functools
import inspect
import json
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import SegnetError, UsageError, option
from .evaluation import metrics
from .evaluation import pairs as find_pairs
from .labels import read_class_colors, read_class_names, voc_color
from .options import MEAN, STD  # ImageNet, on RGB/255 (SPEC 4.1)
from .util import atomic_path, atomic_write
from .zoo.registry import MODEL_FILE

if TYPE_CHECKING:
    import torch

IGNORE = 255  # every label value >= num_classes is mapped to this and ignored by the loss
INSTALL_TORCH = "pip install 'segnet[train]'  (or: pip install torch)"

log = logging.getLogger(__name__).info


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs: the data, the schedule, the augmentation and the run settings
    (``segnet-train``'s flags, one field each; ``segnet-train --help`` explains them)."""

    images: Path
    labels: Path
    classes: str  # a classes.txt, or a comma-separated list
    output: Path
    val_images: Path | None = None
    val_labels: Path | None = None
    colors: str | None = None  # a colors.txt, or "r g b;r g b;..."
    size: tuple[int, int] | None = None
    epochs: int = 400
    batch_size: int = 16
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float = 5
    class_weights: str = "none"
    scale: tuple[float, float] = (0.5, 2.0)
    no_flip: bool = False
    jitter: float = 0.25
    whole_epochs: int = 0
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    val_every: int = 0
    log_every: int = 0
    max_minutes: float = 0
    opset: int = 17


def load_classes(spec: str) -> list[str]:
    """Class names from a classes.txt or a comma-separated list."""
    if Path(spec).is_file():
        names = read_class_names(spec)
    else:
        names = [name.strip() for name in spec.split(",")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UsageError(f"{option('classes', spec)}: no class names (give a classes.txt or a list like "
                         "sky,road)")
    if len(names) > 255:
        raise UsageError(f"{option('classes')}: {len(names)} classes; at most 255 fit an 8-bit label with an "
                         "ignore value")
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
                raise UsageError(f"{option('colors')}: {item.strip()!r} is not 'r g b' or 'r g b a' with values "
                                 "0-255")
            colors.append(values)
    if len(colors) > num_classes:
        raise UsageError(f"{option('colors')} gives {len(colors)} colours for {num_classes} classes")
    return colors + [voc_color(c + 1) for c in range(len(colors), num_classes)]  # SPEC 3


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

    images: torch.Tensor  # uint8 [N, Hmax, Wmax, 3]
    labels: torch.Tensor  # uint8 [N, Hmax, Wmax]
    sizes: torch.Tensor  # float32 [N, 2]: (height, width) of each image
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def load_dataset(images: Path | None, labels: Path | None, num_classes: int, device) -> Dataset:
    """Decode every pair once (threads: Pillow releases the GIL) and move the lot to ``device``."""
    torch = _torch()
    assert images is not None and labels is not None
    pairs = find_pairs(images, labels)  # the same matching segnet-eval uses
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda pair: read_pair(pair[0], pair[1], num_classes), pairs))
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

    class BasicBlock(nn.Module):  # type: ignore[name-defined]
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

    class FCNResNet18(nn.Module):  # type: ignore[name-defined]
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
        raise UsageError(f"{option('device', name)}: this PyTorch sees no CUDA GPU "
                         f"(use {option('device', 'cpu')})")
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


def make_optimizer(model, config: TrainConfig):
    """SGD or AdamW; weight decay on conv weights only (BN scales and biases are left alone, as usual)."""
    torch = _torch()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    sgd = config.optimizer == "sgd"
    wd = config.weight_decay if config.weight_decay is not None else (5e-4 if sgd else 0.05)
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


def train(config: TrainConfig) -> dict:
    """The whole run: load, train, validate, export. Returns the summary also written to train.json."""
    torch = _torch()
    classes = load_classes(config.classes)
    colors = load_colors(config.colors, len(classes))
    num_classes = len(classes)
    if (config.val_images is None) != (config.val_labels is None):
        raise UsageError(f"give both {option('val_images')} and {option('val_labels')}, or neither")
    if config.epochs < 1 or config.batch_size < 1:
        raise UsageError(f"{option('epochs')} and {option('batch_size')} must be at least 1")
    device = resolve_device(config.device)
    dtype = amp_dtype(config.amp, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    started = time.monotonic()
    train_set = load_dataset(config.images, config.labels, num_classes, device)
    val_set = load_dataset(config.val_images, config.val_labels, num_classes, device) if config.val_images else None
    size = config.size
    if size is None:
        h, w = (int(v) for v in train_set.sizes[0].tolist())
        size = (max(32, round(w / 32) * 32), max(32, round(h / 32) * 32))
    log(f"data: {len(train_set)} training images"
        + (f", {len(val_set)} validation images" if val_set else "")
        + f", {num_classes} classes, loaded in {time.monotonic() - started:.1f}s on {device}")

    model = fcn_resnet18(num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    peak = config.lr if config.lr is not None else (0.05 if config.optimizer == "sgd" else 1e-3)
    weight = class_weights(train_set, num_classes, config.class_weights)
    if weight is not None:
        log("class weights: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(classes, weight.tolist())))
    scaler = _grad_scaler(enabled=dtype == torch.float16)

    batch = min(config.batch_size, len(train_set))
    steps = len(train_set) // batch  # drop the ragged last batch: BN wants full batches
    total = config.epochs * steps
    warmup = min(int(config.warmup_epochs * steps), total // 2)
    log_every = config.log_every or max(1, config.epochs // 50)
    val_every = config.val_every or max(1, config.epochs // 10)
    log(f"training {config.epochs} epochs x {steps} steps of {batch} at {size[0]}x{size[1]}, "
        f"{config.optimizer} lr {peak:g}, precision {dtype or torch.float32}")

    model.train()
    train_started = time.monotonic()
    running, seen, epochs_done = torch.zeros((), device=device), 0, 0
    for epoch in range(config.epochs):
        whole = epoch >= config.epochs - config.whole_epochs
        order = torch.randperm(len(train_set), device=device, generator=generator)
        for step in range(steps):
            lr = poly_lr(epoch * steps + step, total, peak, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * batch : (step + 1) * batch]
            x, y = sample_views(train_set, idx, size, scale=None if whole else config.scale,
                                flip=not config.no_flip, jitter=config.jitter, generator=generator)
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
        if epochs_done % log_every == 0 or epochs_done == config.epochs:
            rate = epochs_done * steps * batch / elapsed
            eta = elapsed / epochs_done * (config.epochs - epochs_done)
            log(f"epoch {epochs_done}/{config.epochs}  loss {running.item() / seen:.4f}  lr {lr:.2e}  "
                f"{rate:.0f} img/s  elapsed {_clock(elapsed)}  eta {_clock(eta)}")
            running.zero_()
            seen = 0
        if val_set is not None and epochs_done % val_every == 0 and epochs_done < config.epochs:
            confusion = evaluate(model, val_set, size, num_classes, dtype)
            log(f"val epoch {epochs_done}: pixel accuracy {metrics.pixel_accuracy(confusion):.2%}  "
                f"mean IoU {metrics.mean_iou(confusion):.2%}")
        if config.max_minutes and elapsed > 60 * config.max_minutes and epochs_done < config.epochs:
            log(f"WARNING: --max-minutes {config.max_minutes:g} reached: stopping after {epochs_done} of "
                f"{config.epochs} epochs (the learning rate had not decayed to zero)")
            break
    train_seconds = time.monotonic() - train_started

    summary: dict[str, Any] = {
        "network": "fcn-resnet18",
        "input_size": list(size),
        "classes": classes,
        "epochs_done": epochs_done,
        "train_seconds": round(train_seconds, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    if val_set is not None:
        confusion = evaluate(model, val_set, size, num_classes)  # full precision, like the export
        summary["val"] = metrics.summary(confusion, classes)
        log(format_summary(summary["val"]))

    config.output.mkdir(parents=True, exist_ok=True)
    model_path = config.output / MODEL_FILE
    export_onnx(model, model_path, size, config.opset)
    write_text(config.output / "classes.txt", "".join(f"{name}\n" for name in classes))
    write_text(config.output / "colors.txt", "".join(" ".join(map(str, c)) + "\n" for c in colors))
    summary["onnx_check"] = check_onnx(model, model_path, size)
    write_text(config.output / "train.json", json.dumps(summary, indent=2) + "\n")
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
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(cpu_model, (torch.zeros(1, 3, height, width),), str(tmp), input_names=["input_0"],
                          output_names=["output_0"], opset_version=opset, do_constant_folding=True, **options)


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
    """Write atomically (``util.atomic_write``), so a crash never leaves half a file."""
    atomic_write(path, text.encode())
