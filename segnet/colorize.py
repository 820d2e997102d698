"""Class map -> pictures: the point/linear colour upsampling, mask, overlay and composite (SPEC 4.3-4.5).

jetson does this per pixel in float32 on the GPU. Here it is vectorised and separable: the grid is first
interpolated along x for every grid row (small), then each run of output rows that share the same pair of
grid rows is a broadcast lerp of two of those rows. Runs are short, so the work stays in cache. The result
equals jetson's four-weight blend up to float32 rounding (within one level after truncation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FILTER_MODES = ("point", "linear")
_f32 = np.float32
_RUN = 32  # most output rows handled at once: keeps a run of 2048-wide RGBA rows in cache


def _positions(n_out: int, span: tuple[float, float] | None = None) -> np.ndarray:
    """px = x / out_w in float32, as jetson computes it; with ``span`` (a letterboxed model's content, as
    fractions of the network input) the output covers only that part of the grid."""
    p = np.arange(n_out, dtype=_f32) / _f32(n_out)
    return p if span is None else (_f32(span[0]) + p * _f32(span[1] - span[0])).astype(_f32)


def point_axis(n_out: int, n_grid: int, span=None) -> np.ndarray:
    """The grid cell per output position (point filter). Public, as ``linear_axis``: the device's drawing
    (``drawing.axis_samples``) is fed the very same samples."""
    return np.minimum((_positions(n_out, span) * _f32(n_grid)).astype(np.intp), n_grid - 1)


def linear_axis(n_out: int, n_grid: int, span=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i1, i2, d)`` per output position: the two grid cells and the weight of the second."""
    c = np.maximum(_positions(n_out, span) * _f32(n_grid) - _f32(0.5), _f32(0))
    i1 = np.minimum(c.astype(np.intp), n_grid - 1)
    i2 = np.where(i1 >= n_grid - 1, i1, i1 + 1)
    return i1, i2, (c - i1.astype(_f32)).astype(_f32)


def _runs(keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` ranges of equal consecutive keys, at most ``_RUN`` long."""
    starts = np.flatnonzero(np.diff(keys)) + 1
    bounds = [0, *starts.tolist(), len(keys)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for start in range(lo, hi, _RUN):
            yield start, min(start + _RUN, hi)


def spans(region):
    """``region`` ``(x0, y0, x1, y1)`` as the x and y spans the axis functions take."""
    return (None, None) if region is None else ((region[0], region[2]), (region[1], region[3]))


def color_rows(classes: np.ndarray, colors: np.ndarray, width: int, height: int,
               filter_mode: str = "linear", region=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(y0, rgba)`` blocks covering the ``height x width`` upsampled colour image: ``rgba`` is
    float32 ``[rows, width, 4]`` for output rows ``y0 .. y0 + rows``, valid until the next block is
    yielded (the buffer is reused). ``region`` ``(x0, y0, x1, y1)``: the part of the grid to show."""
    gh, gw = classes.shape
    grid = colors[classes]  # [gh, gw, 4]
    xspan, yspan = spans(region)
    if filter_mode == "point":
        rows = grid[:, point_axis(width, gw, xspan)]  # [gh, width, 4]
        ys = point_axis(height, gh, yspan)
        for lo, hi in _runs(ys):
            yield lo, np.broadcast_to(rows[ys[lo]], (hi - lo, width, 4))
        return
    x1, x2, dx = linear_axis(width, gw, xspan)
    dx = dx[None, :, None]
    rows = grid[:, x1] * (_f32(1) - dx) + grid[:, x2] * dx  # along x first: [gh, width, 4]
    y1, y2, dy = linear_axis(height, gh, yspan)
    buffer = np.empty((_RUN, width, 4), _f32)
    for lo, hi in _runs(y1):
        top = rows[y1[lo]]
        if y1[lo] == y2[lo]:
            yield lo, np.broadcast_to(top, (hi - lo, width, 4))
            continue
        block = buffer[: hi - lo]  # top + dy * (bottom - top), without temporaries
        np.multiply(dy[lo:hi, None, None], rows[y2[lo]] - top, out=block)
        block += top
        yield lo, block


def mask(classes: np.ndarray, colors: np.ndarray, width: int, height: int,
         filter_mode: str = "linear", region=None) -> np.ndarray:
    """uint8 ``[height, width, 3]``: the upsampled class colours (alpha dropped)."""
    out = np.empty((height, width, 3), np.uint8)
    for y0, rgba in color_rows(classes, colors, width, height, filter_mode, region):
        out[y0:y0 + len(rgba)] = rgba[..., :3]  # float -> uint8 truncates, as jetson's cast does
    return out


def overlay(image: np.ndarray, classes: np.ndarray, colors: np.ndarray,
            filter_mode: str = "linear", region=None) -> np.ndarray:
    """uint8 ``[H, W, 3]``: ``a * colour + (1 - a) * image`` with ``a = alpha / 255``, truncated."""
    height, width = image.shape[:2]
    # jetson samples the input at (int(px * in_w), int(py * in_h)); with float32 rounding that is not
    # always the identity, so the same indices are computed rather than assumed.
    xs, ys = point_axis(width, width), point_axis(height, height)
    same_x = bool(np.array_equal(xs, np.arange(width)))
    out = np.empty_like(image)
    for y0, rgba in color_rows(classes, colors, width, height, filter_mode, region):
        rows = ys[y0:y0 + len(rgba)]
        src = image[rows] if same_x else image[rows[:, None], xs[None, :]]
        a = rgba[..., 3:] / _f32(255)
        # a * colour + (1 - a) * src, computed as src - a * (src - colour) with fewer passes; the cast
        # into the uint8 output truncates, as jetson's does
        source = src.astype(_f32)
        delta = source - rgba[..., :3]
        delta *= a
        np.subtract(source, delta, out=out[y0:y0 + len(rgba)], casting="unsafe")
    return out


def composite(image: np.ndarray, classes: np.ndarray, colors: np.ndarray,
              filter_mode: str = "linear", region=None) -> np.ndarray:
    """``[H, W + W//2, 3]``: the overlay at (0, 0), the half-size mask at (W, 0), the rest black."""
    height, width = image.shape[:2]
    out = np.zeros((height, width + width // 2, 3), np.uint8)
    out[:, :width] = overlay(image, classes, colors, filter_mode, region)
    if width // 2 and height // 2:
        out[:height // 2, width:] = mask(classes, colors, width // 2, height // 2, filter_mode, region)
    return out

