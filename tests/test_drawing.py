"""``drawing.draw`` is the picture ``Segmentation.render`` gives, for every kind, filter and a region."""

from __future__ import annotations

import numpy as np
import pytest

from segnet import Options, colorize
from segnet.drawing import DrawSpec, axis_samples, draw, picture_shape
from segnet.errors import OptionError
from segnet.segmenter import Segmentation
from tests.conftest import GRID


@pytest.mark.parametrize("region", [None, (0.0, 0.25, 1.0, 0.75)])
@pytest.mark.parametrize("filter_mode", colorize.FILTER_MODES)
@pytest.mark.parametrize("visualize", ["overlay", "mask", "overlay,mask", "classes"])
def test_draw_is_what_a_segmentation_renders(visualize, filter_mode, region):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 51, 3), np.uint8)
    colors = np.array([[255, 0, 0, 0], [0, 255, 0, 90], [0, 0, 255, 255], [9, 99, 199, 120]], np.float32)
    result = Segmentation(image, np.zeros((4, 2, 4), np.float32), GRID, list("abcd"), colors, filter_mode, region)
    spec = DrawSpec(visualize, filter_mode, region)
    picture = draw(image, GRID, colors, spec)
    assert picture.shape == picture_shape(37, 51, spec)
    assert (picture == result.render(visualize)).all()


def test_the_point_filter_as_a_blend_with_zero_weights_gives_its_cells():
    i1, i2, d = axis_samples(51, 4, "point")
    assert (i1 == i2).all() and (d == 0).all() and (i1 == colorize.point_axis(51, 4)).all()
    x1, x2, dx = axis_samples(51, 4, "linear")
    assert (dx > 0).any() and (x2 >= x1).all()


def test_specs_are_checked_once():
    assert DrawSpec("mask|overlay").kind == "composite" and DrawSpec.of_kind("composite").kind == "composite"
    spec = DrawSpec.of_options(Options(visualize="mask", filter_mode="point"), (0.0, 0.1, 1.0, 0.9))
    assert spec == DrawSpec(("mask",), "point", (0.0, 0.1, 1.0, 0.9)) and spec.kind == "mask"
    with pytest.raises(OptionError):
        DrawSpec(("overlay",), "cubic")
    with pytest.raises(OptionError):
        DrawSpec(("classes", "mask"))
