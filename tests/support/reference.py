"""Straightforward float32 transcription of jetson's per-pixel colour kernels (SPEC 4.3-4.5), written
independently of ``segnet.colorize`` so the two can be compared: every output pixel evaluates the SPEC's
formula directly, with the four-weight blend."""

from __future__ import annotations

import numpy as np

f32 = np.float32


def _grid(n_out, n_grid):
    return np.arange(n_out, dtype=f32) / f32(n_out)


def upsample(classes, colors, out_w, out_h, mode):
    """float32 ``[out_h, out_w, 4]`` colours for every output pixel."""
    gh, gw = classes.shape
    px = _grid(out_w, gw)[None, :].repeat(out_h, 0)
    py = _grid(out_h, gh)[:, None].repeat(out_w, 1)
    if mode == "point":
        x = np.minimum((px * f32(gw)).astype(int), gw - 1)
        y = np.minimum((py * f32(gh)).astype(int), gh - 1)
        return colors[classes[y, x]]
    bx = px * f32(gw) - f32(0.5)
    by = py * f32(gh) - f32(0.5)
    cx = np.maximum(bx, f32(0))
    cy = np.maximum(by, f32(0))
    x1, y1 = cx.astype(int), cy.astype(int)
    x2 = np.where(x1 >= gw - 1, x1, x1 + 1)
    y2 = np.where(y1 >= gh - 1, y1, y1 + 1)
    dx = (cx - x1.astype(f32))[..., None]
    dy = (cy - y1.astype(f32))[..., None]
    c1, c2 = colors[classes[y1, x1]], colors[classes[y1, x2]]
    c3, c4 = colors[classes[y2, x2]], colors[classes[y2, x1]]
    one = f32(1)
    return (c1 * ((one - dx) * (one - dy)) + c2 * (dx * (one - dy)) + c3 * (dx * dy)
            + c4 * ((one - dx) * dy)).astype(f32)


def mask(classes, colors, out_w, out_h, mode):
    return upsample(classes, colors, out_w, out_h, mode)[..., :3].astype(np.uint8)


def overlay(image, classes, colors, mode):
    h, w = image.shape[:2]
    c = upsample(classes, colors, w, h, mode)
    xs = (_grid(w, w) * f32(w)).astype(int)
    ys = (_grid(h, h) * f32(h)).astype(int)
    src = image[ys[:, None], xs[None, :]].astype(f32)
    a = c[..., 3:] / f32(255)
    return (a * c[..., :3] + (f32(1) - a) * src).astype(np.uint8)


def composite(image, classes, colors, mode):
    h, w = image.shape[:2]
    out = np.zeros((h, w + w // 2, 3), np.uint8)
    out[:, :w] = overlay(image, classes, colors, mode)
    if w // 2 and h // 2:
        out[: h // 2, w:] = mask(classes, colors, w // 2, h // 2, mode)
    return out
