"""How to feed a model and read its output, for ONNX models beyond jetson's FCN-ResNet18 export.

jetson's contract is NCHW in, NCHW logits out on a coarse grid, ImageNet normalisation, a nearest stretch.
Other segmentation models differ: channels last, another normalisation, blue first, a symbolic input size,
full-resolution output, independent per-class probabilities with no background channel. ``ModelFormat``
records those choices; ``segnet.json`` beside a model records them once so ``--model`` needs no flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from .errors import SegnetError, UsageError
from .preprocess import MEAN, STD

LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("nearest", "bilinear", "letterbox")
OUTPUTS = ("logits", "sigmoid")
SIDECAR = "segnet.json"


@dataclass(frozen=True)
class ModelFormat:
    """What a model wants in and gives out. ``None`` means: detect it from the model's shapes."""

    input_layout: str | None = None
    output_layout: str | None = None
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    bgr: bool = False
    resize: str = "nearest"  # jetson's stretch; "bilinear"; "letterbox" keeps the aspect ratio
    input_size: tuple[int, int] | None = None  # (W, H) for models whose input size is symbolic
    size_multiple: int = 32  # a symbolic size taken from the image is rounded to this
    output: str = "logits"  # or "sigmoid": per-class probabilities without a background channel
    threshold: float = 0.5  # sigmoid models: below this in every class, a pixel is background

    def checked(self) -> "ModelFormat":
        for name, value, choices in (("input layout", self.input_layout, LAYOUTS),
                                     ("output layout", self.output_layout, LAYOUTS),
                                     ("resize mode", self.resize, RESIZE_MODES), ("output", self.output, OUTPUTS)):
            if value is not None and value not in choices:
                raise UsageError(f"unknown {name} '{value}': use {' or '.join(choices)}")
        for name, triple in (("mean", self.mean), ("std", self.std)):
            if len(triple) != 3:
                raise UsageError(f"--{name} needs three numbers R,G,B")
        if any(s == 0 for s in self.std):
            raise UsageError("--std values must not be 0")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise UsageError(f"--input-size {self.input_size}: give WxH")
        return self


FORMAT_FIELDS = frozenset(f.name for f in fields(ModelFormat))


def parse_triple(text: str, flag: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError(f"{flag} '{text}': give three numbers R,G,B (e.g. 0.5,0.5,0.5)")
    return values


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input-size '{text}': give WxH, e.g. 512x512") from None
    return w, h


def read_sidecar(model: Path) -> dict:
    """Settings from ``segnet.json`` beside the model (or inside a model folder); {} when there is none."""
    folder = model if model.is_dir() else model.parent
    path = folder / SIDECAR
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegnetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SegnetError(f"{path}: expected a JSON object of settings")
    known = FORMAT_FIELDS | {"labels", "colors", "input_blob", "output_blob"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SegnetError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key in ("mean", "std", "input_size"):
        if key in data and data[key] is not None:
            data[key] = tuple(data[key])
    return data


def merge(base: ModelFormat, **overrides) -> ModelFormat:
    """``base`` with every override that is not None."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None}).checked()


def input_layout(shape: tuple, wanted: str | None, describe) -> str:
    """NCHW or NHWC for an input shape: the axis of size 3 decides, unless given."""
    if len(shape) != 4:
        raise SegnetError(f"{describe()}: the input must have 4 dimensions, [N, 3, H, W] or [N, H, W, 3]")
    if wanted is not None:
        channels = shape[1] if wanted == "NCHW" else shape[3]
        if channels not in (3, None):
            raise SegnetError(f"{describe()}: an {wanted} input needs 3 channels")
        return wanted
    if shape[1] == 3:
        return "NCHW"
    if shape[3] == 3:
        return "NHWC"
    raise SegnetError(f"{describe()}: no axis of size 3 for RGB in the input; expected [1, 3, H, W] (NCHW) or "
                      "[1, H, W, 3] (NHWC), or say which with --input-layout")


def spatial(shape: tuple, layout: str) -> tuple[int | None, int | None]:
    """(H, W) of a 4-d shape in ``layout``."""
    return (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])


def output_layout(shape: tuple, in_hw: tuple[int, int], input_layout_: str, wanted: str | None) -> str:
    """NCHW or NHWC for an output ``[1, a, b, c]``: as given, else the input's layout (so jetson's models
    stay exactly as they are), unless that reading would mean more than 256 classes while the other one
    fits, with its spatial axes in the input's aspect ratio (an NHWC score map behind an NCHW input)."""
    if wanted is not None:
        return wanted
    h, w = in_hw
    _, a, b, c = shape
    other = "NHWC" if input_layout_ == "NCHW" else "NCHW"
    classes = a if input_layout_ == "NCHW" else c
    if classes is not None and classes > 256:
        other_classes, (oh, ow) = (c, (a, b)) if other == "NHWC" else (a, (b, c))
        if other_classes is not None and other_classes <= 256 and oh * w == ow * h:
            return other
    return input_layout_


def to_chw(scores: np.ndarray, layout: str) -> np.ndarray:
    """One image's output as ``[C, h, w]``."""
    return np.ascontiguousarray(scores.transpose(2, 0, 1)) if layout == "NHWC" else scores


def with_background(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Sigmoid outputs ``[C, h, w]`` -> ``[C + 1, h, w]`` scores whose argmax is the class map: channel 0
    (background) holds just under ``threshold``, so a pixel is background unless some class reaches it."""
    background = np.full((1, *probabilities.shape[1:]), np.nextafter(np.float32(threshold), np.float32(-1)),
                         np.float32)
    return np.concatenate([background, probabilities.astype(np.float32, copy=False)])


def symbolic_size(image_w: int, image_h: int, multiple: int) -> tuple[int, int]:
    """A network size for a symbolic-size model: the image's, rounded to the nearest ``multiple``."""
    def rounded(v):
        return max(multiple, int(round(v / multiple)) * multiple)

    return rounded(image_w), rounded(image_h)
