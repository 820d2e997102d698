"""segnet.colorize against the per-pixel float32 reference transcription (tests/support/reference.py)."""

import numpy as np
import pytest

from segnet import colorize
from tests.support import reference

SIZES = [  # (grid w, grid h, out w, out h)
    (64, 32, 2048, 1024), (16, 8, 719, 480), (16, 8, 1080, 1920), (1, 1, 37, 23), (3, 2, 1, 1),
    (15, 11, 480, 352), (16, 8, 8, 4),  # an output smaller than the grid
]


def _grid(gw, gh, num_classes, seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, num_classes, size=(gh, gw)).astype(np.uint8)
    colors = rng.integers(0, 256, size=(num_classes, 4)).astype(np.float32)
    return classes, colors


def _within_one_level(actual, expected):
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert actual.shape == expected.shape
    assert diff.max() <= 1, f"max difference {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"


@pytest.mark.parametrize("mode", colorize.FILTER_MODES)
@pytest.mark.parametrize("gw, gh, w, h", SIZES)
def test_mask_matches_reference(mode, gw, gh, w, h):
    classes, colors = _grid(gw, gh, 21, seed=w * h)
    _within_one_level(colorize.mask(classes, colors, w, h, mode), reference.mask(classes, colors, w, h, mode))


@pytest.mark.parametrize("mode", colorize.FILTER_MODES)
@pytest.mark.parametrize("gw, gh, w, h", SIZES)
def test_overlay_matches_reference(mode, gw, gh, w, h):
    classes, colors = _grid(gw, gh, 5, seed=w + h)
    image = np.random.default_rng(1).integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    _within_one_level(colorize.overlay(image, classes, colors, mode),
                      reference.overlay(image, classes, colors, mode))


@pytest.mark.parametrize("w, h", [(1024, 512), (719, 405), (3, 3), (1, 1)])
def test_composite_layout_and_pixels(w, h):
    classes, colors = _grid(16, 8, 21, seed=3)
    image = np.full((h, w, 3), 77, np.uint8)
    out = colorize.composite(image, classes, colors, "linear")
    assert out.shape == (h, w + w // 2, 3)
    assert not out[h // 2:, w:].any()  # below the half-size mask: black
    _within_one_level(out, reference.composite(image, classes, colors, "linear"))


def test_linear_filter_blends_alpha_not_only_colour():
    classes = np.array([[0, 1]], np.uint8)
    colors = np.array([[255, 0, 0, 0], [0, 0, 255, 255]], np.float32)
    image = np.zeros((1, 4, 3), np.uint8)
    # px = 0, .25, .5, .75 -> bx = -.5, 0, .5, 1 -> weights of class 1: 0, 0, .5, 1
    out = colorize.overlay(image, classes, colors, "linear")
    # at x=2 colour = (127.5, 0, 127.5), alpha 127.5 -> 0.5 * 127.5 = 63.75 -> 63
    assert out[0].tolist() == [[0, 0, 0], [0, 0, 0], [63, 0, 63], [0, 0, 255]]


def test_point_filter_picks_cells_without_blending():
    classes = np.array([[0, 1], [2, 3]], np.uint8)
    colors = np.array([[10, 0, 0, 255], [20, 0, 0, 255], [30, 0, 0, 255], [40, 0, 0, 255]], np.float32)
    out = colorize.mask(classes, colors, 4, 4, "point")
    assert out[..., 0].tolist() == [[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]]


def test_overlay_truncates_instead_of_rounding():
    classes = np.zeros((1, 1), np.uint8)
    colors = np.array([[255, 255, 255, 120]], np.float32)  # a = 120/255
    image = np.full((2, 2, 3), 100, np.uint8)
    expected = int(np.float32(120 / 255) * 255 + (1 - np.float32(120 / 255)) * 100)  # 172.94... -> 172
    assert (colorize.overlay(image, classes, colors, "point") == expected).all()
    assert expected == 172
