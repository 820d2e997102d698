"""The library API: ``Segmenter(network)(image) -> Segmentation``. The CLI is a thin shell over this."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import classmap, colorize
from . import labels as label_files
from .backends import open_backend
from .errors import SegnetError, UsageError
from .image_io import read_image
from .network import locate
from .preprocess import preprocess

VISUALIZE = ("overlay", "mask")


def parse_visualize(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"overlay"``, ``"mask"`` or both joined by ``,`` or ``|`` -> the modes, validated."""
    words = value.replace("|", ",").split(",") if isinstance(value, str) else list(value)
    modes = tuple(dict.fromkeys(w.strip().lower() for w in words if w.strip()))
    bad = [w for w in modes if w not in VISUALIZE]
    if bad or not modes:
        raise UsageError(f"unknown --visualize mode '{', '.join(bad) or value}': use overlay, mask or "
                         "overlay,mask")
    return modes


def check_filter_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in colorize.FILTER_MODES:
        raise UsageError(f"unknown --filter-mode '{value}': use point or linear")
    return mode


def check_alpha(value: float) -> float:
    if not 0 <= value <= 255:
        raise UsageError(f"--alpha {value:g} is out of range: give a value from 0 to 255")
    return float(value)


@dataclass
class Segmentation:
    """One image's result: the coarse class map (what users keep asking jetson for), the raw scores,
    and renderers for the pictures."""

    image: np.ndarray  # uint8 [H, W, 3] RGB input
    scores: np.ndarray  # float32 [C, gh, gw] raw per-class scores (logits) on the grid
    class_map: np.ndarray  # uint8 [gh, gw] best class per grid cell
    class_names: list[str]
    colors: np.ndarray = field(repr=False)  # float32 [C, 4] RGBA after the alpha rules
    filter_mode: str = "linear"

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(width, height)`` of the class grid."""
        return self.class_map.shape[1], self.class_map.shape[0]

    def histogram(self) -> np.ndarray:
        """Grid cells per class."""
        return classmap.histogram(self.class_map, len(self.class_names))

    def mask(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """uint8 ``[height, width, 3]`` class colours, by default at the image's size."""
        h, w = self.image.shape[:2]
        return colorize.mask(self.class_map, self.colors, width or w, height or h, self.filter_mode)

    def overlay(self) -> np.ndarray:
        return colorize.overlay(self.image, self.class_map, self.colors, self.filter_mode)

    def composite(self) -> np.ndarray:
        return colorize.composite(self.image, self.class_map, self.colors, self.filter_mode)

    def render(self, visualize: str | tuple[str, ...] = "overlay") -> np.ndarray:
        """The picture segnet-console writes for ``--visualize``."""
        modes = parse_visualize(visualize)
        if len(modes) == 2:
            return self.composite()
        return self.overlay() if modes[0] == "overlay" else self.mask()

    def stats(self) -> str:
        """The ``--stats`` table (SPEC 4.6)."""
        counts = self.histogram()
        total = max(int(counts.sum()), 1)
        w, h = self.grid_size
        lines = [f"grid size: {w}x{h}", f"num classes: {len(self.class_names)}",
                 f"{'ID':>3}  {'class name':<20} {'count':>7}  fraction"]
        for c, (name, n) in enumerate(zip(self.class_names, counts)):
            lines.append(f"{c:>3}  {name:<20} {int(n):>7}  {n / total:.6f}")
        return "\n".join(lines)


class Segmenter:
    """A loaded network. ``Segmenter()`` is the default network; ``Segmenter("fcn-resnet18-voc")`` a
    pretrained one; ``Segmenter(model="net.onnx", labels=..., colors=...)`` a custom one.

    Call it on an image (path, PIL image or uint8 RGB array ``[H, W, 3]``) to get a ``Segmentation``.
    Use it as a context manager (or call ``close()``) to free the backend.
    """

    def __init__(self, network: str | None = None, *, model: str | Path | None = None,
                 labels: str | Path | None = None, colors: str | Path | None = None,
                 input_blob: str = "input_0", output_blob: str = "output_0", backend: str = "auto",
                 alpha: float = 120, filter_mode: str = "linear", ignore_class: str | None = "void",
                 models_dir: str | Path | None = None, download: bool = True, batch_size: int = 1,
                 **backend_options):
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: give 1 or more")
        self.batch_size = batch_size
        self.alpha = check_alpha(alpha)
        self.filter_mode = check_filter_mode(filter_mode)
        self.files = locate(network, model, labels, colors, models_dir, download)
        raw_names = label_files.read_class_names(self.files.labels) if self.files.labels else None
        raw_colors = label_files.read_class_colors(self.files.colors) if self.files.colors else None
        if batch_size > 1:
            backend_options["batch_size"] = batch_size
        self.backend = open_backend(backend, self.files.model, input_blob, output_blob, **backend_options)
        self.backend.__enter__()
        try:
            self.input_size = (self.backend.input.shape[3], self.backend.input.shape[2])  # (W, H)
            self.num_classes = self._probe_classes()
        except BaseException:
            self.close()
            raise
        self.class_names = label_files.class_names(self.num_classes, raw_names)
        self.colors = label_files.class_colors(self.num_classes, raw_colors, self.alpha)
        self.ignore_index = _find_class(self.class_names, ignore_class)

    def _probe_classes(self) -> int:
        c = self.backend.output.shape[1]
        if c is None:  # symbolic in the graph: ask the model once
            w, h = self.input_size
            c = self.infer(np.zeros((3, h, w), np.float32)).shape[0]
        return c

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def description(self) -> str:
        return self.backend.description

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Pre-processed ``[3, H, W]`` -> raw scores ``[C, gh, gw]``."""
        return self.infer_batch([tensor])[0]

    def infer_batch(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        """Several pre-processed tensors -> their scores, ``batch_size`` per backend call."""
        out = []
        for start in range(0, len(tensors), self.batch_size):
            chunk = tensors[start:start + self.batch_size]
            scores = self.backend.infer(np.stack(chunk) if len(chunk) > 1 else chunk[0][None])
            if scores.ndim != 4 or scores.shape[0] != len(chunk) or not 1 <= scores.shape[1] <= 256:
                raise SegnetError(f"model {self.files.model} returned scores of shape {list(scores.shape)}, "
                                  f"expected [{len(chunk)}, classes, grid height, grid width]")
            out.extend(np.asarray(s, np.float32) for s in scores)
        return out

    def prepare(self, image) -> tuple[np.ndarray, np.ndarray]:
        """An image (path, PIL, array) -> ``(rgb, network input tensor)``; safe to run in worker threads."""
        rgb = as_rgb(image)
        w, h = self.input_size
        return rgb, preprocess(rgb, w, h)

    def finish(self, rgb: np.ndarray, scores: np.ndarray) -> Segmentation:
        """Scores of one image -> its ``Segmentation``."""
        if scores.shape[0] != self.num_classes:
            raise SegnetError(f"model {self.files.model} returned {scores.shape[0]} classes, "
                              f"then {self.num_classes}")
        return Segmentation(rgb, scores, classmap.class_map(scores, self.ignore_index), self.class_names,
                            self.colors, self.filter_mode)

    def __call__(self, image) -> Segmentation:
        rgb, tensor = self.prepare(image)
        return self.finish(rgb, self.infer(tensor))

    def segment_batch(self, images) -> list[Segmentation]:
        """Several images, run ``batch_size`` at a time."""
        prepared = [self.prepare(image) for image in images]
        scores = self.infer_batch([tensor for _, tensor in prepared])
        return [self.finish(rgb, s) for (rgb, _), s in zip(prepared, scores)]

    def close(self) -> None:
        if self.backend is not None:
            self.backend.__exit__(None, None, None)
            self.backend = None

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_rgb(image) -> np.ndarray:
    """A path, PIL image or array -> contiguous uint8 ``[H, W, 3]`` RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise SegnetError(f"expected a uint8 RGB image of shape [H, W, 3], got {array.dtype} "
                          f"{list(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise SegnetError("the image is empty (0 pixels)")
    return np.ascontiguousarray(array[..., :3])


def _find_class(names: list[str], name: str | None) -> int | None:
    """Index of the class called ``name`` (case-insensitive); None when there is none (a no-op)."""
    if not name:
        return None
    lowered = [n.lower() for n in names]
    return lowered.index(name.lower()) if name.lower() in lowered else None
