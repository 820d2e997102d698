"""Segmentation accuracy from a confusion matrix (numpy only).

The measure is the one jetson-inference quotes for its networks (SPEC.md section 5): evaluate each image,
add its confusion matrix to a running total, then read everything off the total. Rows are the true
class, columns the predicted class. Label values outside ``0..C-1`` (void, 255, ...) are not counted.

Classes that never occur, neither in the labels nor in the predictions, have no IoU (``nan``) and are left
out of the mean IoU; a class that is predicted but absent from the labels has IoU 0 and counts.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Count ``(true, predicted)`` pixel pairs into a ``[C, C]`` int64 matrix.

    ``labels`` and ``predictions`` are integer arrays of the same shape. Pixels whose label is outside
    ``0..C-1`` are ignored; a prediction outside that range is a bug and raises ``ValueError``.
    Matrices of several images add up: ``total += confusion_matrix(...)``.
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    valid = (labels >= 0) & (labels < num_classes)
    true = labels[valid].astype(np.int64)
    pred = predictions[valid].astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must be class indices 0..{num_classes - 1}")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Global pixel accuracy: correct pixels over counted pixels (``nan`` when nothing was counted)."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall): true positives over the class's labelled pixels; ``nan`` if none."""
    return _ratio(np.diag(confusion), confusion.sum(axis=1))


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class intersection over union, TP / (TP + FP + FN); ``nan`` for a class seen nowhere."""
    tp = np.diag(confusion)
    return _ratio(tp, confusion.sum(axis=0) + confusion.sum(axis=1) - tp)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the labels or the predictions (the non-``nan`` ones)."""
    return _nanmean(class_iou(confusion))


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class accuracy over the classes present in the labels."""
    return _nanmean(class_accuracy(confusion))


def summary(confusion: np.ndarray, class_names) -> dict:
    """All of the above as plain numbers, ready for JSON or a report."""
    names = list(class_names)
    return {
        "pixel_accuracy": pixel_accuracy(confusion),
        "mean_iou": mean_iou(confusion),
        "mean_class_accuracy": mean_class_accuracy(confusion),
        "pixels": int(confusion.sum()),
        "class_iou": dict(zip(names, class_iou(confusion).tolist())),
        "class_accuracy": dict(zip(names, class_accuracy(confusion).tolist())),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")
