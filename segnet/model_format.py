"""How to feed a model and read its output, for ONNX models beyond jetson's FCN-ResNet18 export.

jetson's contract is NCHW in, NCHW logits out on a coarse grid, ImageNet normalisation, a nearest stretch.
Other segmentation models differ: channels last, another normalisation, blue first, a symbolic input size,
full-resolution output, independent per-class probabilities with no background channel. ``ModelFormat``
records those choices; ``segnet.json`` beside a model records them once so ``--model`` needs no flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError, SegnetError, UsageError
from .options import MEAN, STD, Options, integer, option_fields, optional

SIDECAR = "segnet.json"
MAX_CLASSES = 256  # the class map is uint8


@dataclass(frozen=True)
class ModelFormat:
    """What a model wants in and gives out, resolved from the options, the model's ``segnet.json`` and
    jetson's defaults, in that order. ``None`` means: detect it from the model's shapes."""

    input_layout: str | None = None
    output_layout: str | None = None
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    bgr: bool = False
    resize: str = "nearest"  # jetson's stretch; "bilinear"; "letterbox" keeps the aspect ratio
    input_size: tuple[int, int] | None = None  # (W, H) for models whose input size is symbolic
    size_multiple: int = 32  # a symbolic size taken from the image is rounded to this
    scores: str = "logits"  # or "sigmoid": per-class probabilities without a background channel
    threshold: float = 0.5  # sigmoid models: below this in every class, a pixel is background


FORMAT_FIELDS = tuple(f.name for f in fields(ModelFormat))


def resolve(options: Options, sidecar: dict[str, Any]) -> ModelFormat:
    """The model's format: each setting from ``options`` when given, else from ``sidecar``, else jetson's."""
    chosen = {}
    for name in FORMAT_FIELDS:
        value = getattr(options, name, None)
        chosen[name] = value if value is not None else sidecar.get(name)
    return ModelFormat(**{k: v for k, v in chosen.items() if v is not None})


def _labels(name, value):
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CLASSES or \
            not all(isinstance(v, str) and v.strip() and "\n" not in v for v in value):
        raise OptionError(name, value, f"give a list of 1 to {MAX_CLASSES} class names")
    return [v.strip() for v in value]


def _colors(name, value):
    def channel(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255

    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CLASSES or not all(
            isinstance(c, list) and len(c) in (3, 4) and all(channel(v) for v in c) for c in value):
        raise OptionError(name, value, "give a list of [r, g, b] or [r, g, b, a] colours, each a whole "
                                       "number from 0 to 255")
    return [(c[0], c[1], c[2], c[3] if len(c) == 4 else None) for c in value]


def _not_text(check, kind: str):
    """JSON has types: a number, list or boolean written as text is a mistake, not a value to parse."""
    def strict(name, value):
        if isinstance(value, str):
            raise OptionError(name, value, f"give a JSON {kind}, not text")
        return check(name, value)
    return strict


_JSON_KINDS = {"mean": "list of three numbers", "std": "list of three numbers", "input_size": "list [W, H]",
               "threshold": "number", "bgr": "true or false"}

#: What ``segnet.json`` may set, each held to the rule of the option of the same name.
SIDECAR_CHECKS = {
    **{f.name: _not_text(f.metadata["check"], _JSON_KINDS[f.name]) if f.name in _JSON_KINDS
       else f.metadata["check"] for f in option_fields() if f.name in FORMAT_FIELDS},
    "input_blob": Options.__dataclass_fields__["input_blob"].metadata["check"],
    "output_blob": Options.__dataclass_fields__["output_blob"].metadata["check"],
    "size_multiple": _not_text(optional(integer(1, 1024)), "whole number"),
    "labels": _labels,
    "colors": _colors,
}


def read_sidecar(model: Path) -> dict[str, Any]:
    """Settings from ``segnet.json`` beside the model (or inside a model folder), checked; {} when there is
    none. A value of the wrong type or out of range is a one-line SegnetError naming the setting."""
    from .util import read_json

    folder = model if model.is_dir() else model.parent
    path = folder / SIDECAR
    if not path.exists():
        return {}
    data = read_json(path, "settings")
    if not isinstance(data, dict):
        raise SegnetError(f"{path}: expected a JSON object of settings")
    unknown = sorted(set(data) - set(SIDECAR_CHECKS))
    if unknown:
        raise SegnetError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(SIDECAR_CHECKS))}")
    checked = {}
    for key, value in data.items():
        try:
            checked[key] = SIDECAR_CHECKS[key](key, value)
        except OptionError as exc:
            raise SegnetError(f"{path}: \"{key}\": {_short(value)} is not valid: {exc.problem}") from None
        except UsageError as exc:
            raise SegnetError(f"{path}: {exc}") from None
    return checked


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
