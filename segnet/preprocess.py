"""Image -> network input, as jetson's ``cudaTensorNormMeanRGB`` does it (SPEC 4.1).

The whole image is stretched to the network size with nearest sampling, top-left aligned
(``src = int(dst * float(W_img) / float(W_net))`` in float32, as the CUDA kernel computes it), scaled to
0..1 and normalised with ImageNet's mean and std into planar CHW float32.
"""

from __future__ import annotations

import numpy as np

from .options import MEAN, STD

_f32 = np.float32


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index for each of ``dst`` destination positions (float32 scale, truncated, clamped)."""
    scale = _f32(src) / _f32(dst)
    index = (np.arange(dst, dtype=_f32) * scale).astype(np.intp)
    return np.minimum(index, src - 1)


_MEAN = np.array(MEAN, _f32)[:, None, None]
_STD = np.array(STD, _f32)[:, None, None]


def _is_identity(index: np.ndarray, size: int) -> bool:
    return len(index) == size and bool((index == np.arange(size)).all())


def _narrow_first(h: int, w: int, ys: np.ndarray, xs: np.ndarray) -> bool:
    """Whether to take the columns before the rows: when taking whole rows first (the fast way) would make an
    intermediate larger than twice the image and the result together, as stretching a 4,000,000x1 strip to 352
    rows of 4,000,000 pixels (4 GB) before narrowing them did. Either order picks the same pixels."""
    return len(ys) * w > 2 * (h * w + len(ys) * len(xs))


def _sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``image[ys][:, xs]``, without copying along an axis whose indices are the identity, narrowing first."""
    h, w = image.shape[:2]
    if _narrow_first(h, w, ys, xs) and not _is_identity(xs, w):
        image, xs = image.take(xs, axis=1), np.arange(len(xs))
    rows = image if _is_identity(ys, h) else image.take(ys, axis=0)  # whole rows: cheap
    return rows if _is_identity(xs, rows.shape[1]) else rows.take(xs, axis=1)


def preprocess(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` RGB -> float32 ``[3, height, width]``: ``(v * (1/255) - mean) / std``
    in float32, the order of jetson's kernel. Memory: the image and the network input, whatever their shapes."""
    ys = nearest_indices(image.shape[0], height)
    xs = nearest_indices(image.shape[1], width)
    h, w = image.shape[:2]
    if _narrow_first(h, w, ys, xs) and not _is_identity(xs, w):
        image, xs = image.take(xs, axis=1), np.arange(width)
    rows = image if _is_identity(ys, h) else image.take(ys, axis=0)  # whole rows: cheap
    planar = rows.transpose(2, 0, 1)
    if not _is_identity(xs, image.shape[1]):
        planar = planar.take(xs, axis=2)
    out = np.multiply(planar, _f32(1.0 / 255.0), dtype=_f32)
    out -= _MEAN
    out /= _STD
    return out


def resize(image: np.ndarray, width: int, height: int, mode: str = "nearest"):
    """``image`` -> uint8 ``[height, width, 3]`` and the region of it the image covers, as fractions
    ``(x0, y0, x1, y1)`` of the network input (None: all of it).

    ``nearest``: jetson's stretch. ``bilinear``: a smoother stretch. ``letterbox``: the aspect ratio is kept,
    the image centred, the rest filled with the mean colour (which normalises to 0).
    """
    if mode == "nearest":
        return _sample(image, nearest_indices(image.shape[0], height), nearest_indices(image.shape[1], width)), None
    from PIL import Image

    src_h, src_w = image.shape[:2]
    if mode == "bilinear":
        if (src_w, src_h) == (width, height):
            return image, None
        picture = Image.fromarray(image)
        if width * src_h > 4 * max(src_w * src_h, width * height):
            # Pillow widens before it shortens: a tall strip would become width x src_h first (1x4,000,000 to
            # 480 wide: 5.8 GB); shorten it first (other images keep Pillow's order and its exact result)
            picture = picture.resize((src_w, height), Image.Resampling.BILINEAR)
        return np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR)), None
    scale = min(width / src_w, height / src_h)
    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    x0, y0 = (width - w) // 2, (height - h) // 2
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = np.round(np.array(MEAN) * 255).astype(np.uint8)
    canvas[y0:y0 + h, x0:x0 + w] = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    return canvas, (x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height)


def normalize(resized: np.ndarray, mean=MEAN, std=STD, bgr: bool = False, layout: str = "NCHW") -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``(v / 255 - mean) / std``, planar ``[3, H, W]`` for NCHW or
    ``[H, W, 3]`` for NHWC; channels reversed first for blue-first models."""
    pixels = resized[..., ::-1] if bgr else resized
    m = np.array(mean[::-1] if bgr else mean, _f32)
    s = np.array(std[::-1] if bgr else std, _f32)
    if layout == "NCHW":
        pixels, m, s = pixels.transpose(2, 0, 1), m[:, None, None], s[:, None, None]
    out = np.multiply(pixels, _f32(1.0 / 255.0), dtype=_f32)
    out -= m
    out /= s
    return np.ascontiguousarray(out)


def prepare(image: np.ndarray, width: int, height: int, *, mean=MEAN, std=STD, bgr: bool = False,
            resize_mode: str = "nearest", layout: str = "NCHW"):
    """The network input for any supported model: ``(tensor, region)``. The jetson defaults give exactly
    ``preprocess``'s values."""
    if resize_mode == "nearest" and not bgr and tuple(mean) == MEAN and tuple(std) == STD and layout == "NCHW":
        return preprocess(image, width, height), None
    resized, region = resize(image, width, height, resize_mode)
    return normalize(resized, mean, std, bgr, layout), region
