"""Raw scores -> class map and histogram (SPEC 4.2, 4.6)."""

from __future__ import annotations

import numpy as np


def class_map(scores: np.ndarray, ignore: int | None = None) -> np.ndarray:
    """``scores`` float ``[C, gh, gw]`` -> uint8 ``[gh, gw]``: the best class per cell, skipping
    ``ignore``; ties keep the lower class index (argmax returns the first maximum). No softmax."""
    if ignore is not None and 0 <= ignore < scores.shape[0] and scores.shape[0] > 1:
        scores = scores.copy()
        scores[ignore] = -np.inf
    return np.argmax(scores, axis=0).astype(np.uint8)


def histogram(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Grid cells per class, ``[num_classes]`` int64."""
    return np.bincount(classes.ravel(), minlength=num_classes)[:num_classes]
