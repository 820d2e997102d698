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


def _lookup(mean=MEAN, std=STD) -> np.ndarray:
    """``[3, 256]`` float32: the normalised value of every 8-bit level, per channel."""
    levels = np.arange(256, dtype=_f32) * _f32(1.0 / 255.0)
    return np.stack([(levels - _f32(m)) / _f32(s) for m, s in zip(mean, std)])


_LUT = _lookup()


def preprocess(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` RGB -> float32 ``[3, height, width]``."""
    ys = nearest_indices(image.shape[0], height)
    xs = nearest_indices(image.shape[1], width)
    resized = image[ys[:, None], xs[None, :]]  # [height, width, 3]
    out = np.empty((3, height, width), np.float32)
    for c in range(3):
        np.take(_LUT[c], resized[..., c], out=out[c])
    return out
