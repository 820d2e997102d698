"""Image -> network input, as jetson's ``cudaTensorNormMeanRGB`` does it (SPEC 4.1).

The whole image is stretched to the network size with nearest sampling, top-left aligned
(``src = int(dst * float(W_img) / float(W_net))`` in float32, as the CUDA kernel computes it), scaled to
0..1 and normalised with ImageNet's mean and std into planar CHW float32.
"""

from __future__ import annotations

import numpy as np

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

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


def preprocess(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` RGB -> float32 ``[3, height, width]``: ``(v * (1/255) - mean) / std``
    in float32, the order of jetson's kernel."""
    ys = nearest_indices(image.shape[0], height)
    xs = nearest_indices(image.shape[1], width)
    rows = image if _is_identity(ys, image.shape[0]) else image.take(ys, axis=0)  # whole rows: cheap
    planar = rows.transpose(2, 0, 1)
    if not _is_identity(xs, image.shape[1]):
        planar = planar.take(xs, axis=2)
    out = np.multiply(planar, _f32(1.0 / 255.0), dtype=_f32)
    out -= _MEAN
    out /= _STD
    return out
