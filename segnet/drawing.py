"""The one drawing entry point: ``draw(image, class_map, colors, spec)`` -> the picture segnet writes.

The contract, for the CPU here and for its device twin (``backends/fused.py``'s drawing nodes, run through
``OnnxRuntimeBackend.infer_pictures(images, colors, spec)``):

- in: ``image`` uint8 ``[H, W, 3]`` RGB, ``class_map`` uint8 ``[gh, gw]`` (the ignored class already left
  out by the argmax), ``colors`` float32 ``[C, 4]`` RGBA after the alpha rules (``labels.class_colors``),
  and a ``DrawSpec``: what to draw (``visualize``: overlay, mask, both, or classes), the filter and the
  letterbox ``region`` (the part of the grid the image covers; None: all of it);
- out: uint8 ``[H, W, 3]`` (overlay, mask), ``[H, W + W//2, 3]`` (composite, SPEC 4.5) or ``[H, W]``
  (classes); ``picture_shape`` says which;
- the arithmetic is ``colorize``'s, in float32 and in its order (colours gathered by class, interpolated
  along x, then along y, then blended with the image); the device computes exactly the same per-axis
  sample positions and weights, because they come from ``axis_samples`` on the CPU as graph inputs. The
  device's pictures are within one level per channel of these (identical on onnxruntime's CPU provider;
  tests/backends/test_fused_drawing.py holds the two together).

A runner picks one: a backend fused with ``fuse(spec, draw)`` (``backend.draws == draw.kind``) returns the
batch's pictures with its class maps from ``infer_pictures``; otherwise it calls ``draw`` per image with the
class maps ``infer``/``infer_images`` gave. The pictures are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import colorize
from .errors import OptionError
from .options import visualize as check_visualize

#: The four pictures: one visualize mode, or overlay and mask together (the composite).
KINDS = ("overlay", "mask", "composite", "classes")


@dataclass(frozen=True)
class DrawSpec:
    """What to draw and how: ``visualize`` as the option takes it, ``filter_mode`` point or linear, and the
    letterbox ``region`` ``(x0, y0, x1, y1)`` as fractions of the grid (None: the whole grid)."""

    visualize: tuple[str, ...] = ("overlay",)
    filter_mode: str = "linear"
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "visualize", check_visualize("visualize", self.visualize))
        if self.filter_mode not in colorize.FILTER_MODES:
            raise OptionError("filter_mode", self.filter_mode, "use point or linear")

    @classmethod
    def of_kind(cls, kind: str, filter_mode: str = "linear", region=None) -> DrawSpec:
        """The spec that draws ``kind`` (one of ``KINDS``)."""
        return cls(("overlay", "mask") if kind == "composite" else (kind,), filter_mode, region)

    @classmethod
    def of_options(cls, options, region=None) -> DrawSpec:
        """The spec of an ``Options`` object's ``visualize`` and ``filter_mode`` (and an image's ``region``)."""
        return cls(options.visualize, options.filter_mode, region)

    def with_region(self, region) -> DrawSpec:
        """This spec for an image whose letterbox ``region`` is given (None: the spec as it is)."""
        return self if region is None or region == self.region else replace(self, region=region)

    @property
    def kind(self) -> str:
        """overlay, mask, composite (overlay and mask) or classes."""
        return "composite" if len(self.visualize) == 2 else self.visualize[0]


def picture_shape(height: int, width: int, spec: DrawSpec) -> tuple[int, ...]:
    """The shape of ``draw``'s picture for an image of ``height x width``."""
    if spec.kind == "composite":
        return height, width + width // 2, 3
    return (height, width) if spec.kind == "classes" else (height, width, 3)


def draw(image: np.ndarray, class_map: np.ndarray, colors: np.ndarray, spec: DrawSpec) -> np.ndarray:
    """The picture of ``spec.kind`` for one image, on the CPU (``colorize``)."""
    mode, region = spec.filter_mode, spec.region
    if spec.kind == "overlay":
        return colorize.overlay(image, class_map, colors, mode, region)
    if spec.kind == "composite":
        return colorize.composite(image, class_map, colors, mode, region)
    height, width = image.shape[:2]
    if spec.kind == "mask":
        return colorize.mask(class_map, colors, width, height, mode, region)
    return draw_classes(class_map, len(colors), width, height, region)


def draw_classes(class_map: np.ndarray, num_classes: int, width: int, height: int, region=None) -> np.ndarray:
    """uint8 ``[height, width]``: the class index of every pixel, the grid point-sampled exactly as the point
    filter samples colours."""
    return np.ascontiguousarray(colorize.mask(class_map, class_index_colors(num_classes), width, height, "point",
                                              region)[..., 0])


def class_index_colors(num_classes: int) -> np.ndarray:
    """The colour table whose red channel is the class index: the point filter's mask with it is the class
    of every pixel (0..255 are exact in float32), as jetson's ``Mask()`` into a gray8 image."""
    table = np.zeros((num_classes, 4), np.float32)
    table[:, 0] = np.arange(num_classes)
    return table


def axis_samples(n_out: int, n_grid: int, filter_mode: str,
                 span: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i1, i2, d)`` per output position along one axis: the two grid cells (int64) and the float32
    weight of the second, as ``colorize`` computes them. The point filter is the same form with
    ``i1 == i2`` and ``d == 0``, which gives its colour bit for bit (``c * 1 + c * 0 == c``, and
    ``0 * (c - c) + c == c``), so one graph draws both filters."""
    if filter_mode == "point":
        index = colorize.point_axis(n_out, n_grid, span).astype(np.int64)
        return index, index, np.zeros(n_out, np.float32)
    i1, i2, d = colorize.linear_axis(n_out, n_grid, span)
    return i1.astype(np.int64), i2.astype(np.int64), d


def spans(region) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """``region`` as the x and y spans ``axis_samples`` takes."""
    return colorize.spans(region)
