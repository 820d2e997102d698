"""Accuracy of a network on a labelled folder, measured as the seed's table was (SPEC section 5):
logits upsampled bilinearly to the label's size, argmax, one confusion matrix over all images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SegnetError
from ..image_io import READ_EXTENSIONS, open_image, read_image
from ..progress import progress
from . import metrics


def upsample_bilinear(scores: np.ndarray, width: int, height: int, region=None) -> np.ndarray:
    """``[C, gh, gw]`` -> ``[C, height, width]``, half-pixel centres (``align_corners=False``). ``region``
    ``(x0, y0, x1, y1)``: only that part of the grid (a letterboxed model's content) is stretched."""
    def axis(n_in, n_out, lo, hi):
        step = n_in * (hi - lo) / n_out
        src = np.maximum(lo * n_in + (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(step) - 0.5, 0)
        i0 = np.minimum(src.astype(np.intp), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)

    r = region or (0.0, 0.0, 1.0, 1.0)
    x0, x1, wx = axis(scores.shape[2], width, r[0], r[2])
    y0, y1, wy = axis(scores.shape[1], height, r[1], r[3])
    rows = scores[:, :, x0] * (1 - wx) + scores[:, :, x1] * wx
    return rows[:, y0] * (1 - wy)[:, None] + rows[:, y1] * wy[:, None]


def read_label(path: Path) -> np.ndarray:
    """An index PNG as ``[H, W]`` class ids, with the size limit and one-line errors images get
    (``image_io.open_image``)."""
    with open_image(path, str(path), "label") as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise SegnetError(f"{path}: a label must be a single-channel index image, not {image.mode}")
        return np.asarray(image)


def pairs(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """(image, index-PNG label) pairs matched by file stem, for evaluating and for training; an image
    without a label is an error."""
    for folder in (images, labels):
        if not folder.is_dir():
            raise SegnetError(f"{folder}: not a directory")
    found = {p.stem: p for p in sorted(labels.iterdir()) if p.suffix.lower() == ".png"}
    if not found:
        raise SegnetError(f"{labels}: no label PNGs")
    images_found = sorted(p for p in images.iterdir() if p.suffix.lower() in READ_EXTENSIONS)
    if not images_found:
        raise SegnetError(f"{images}: no images ({', '.join(READ_EXTENSIONS)})")
    missing = [p.name for p in images_found if p.stem not in found]
    if missing:
        raise SegnetError(f"no label in {labels} for {len(missing)} image(s) of {images}: they have no label "
                          f"PNG of the same name, e.g. {', '.join(missing[:3])}")
    return [(p, found[p.stem]) for p in images_found]


def evaluate(segmenter, images: str | Path, labels: str | Path) -> dict:
    """Global pixel accuracy, mean IoU and per-class IoU/accuracy of ``segmenter`` on a folder of
    images and a folder of index-PNG labels. Label values outside the network's classes are ignored."""
    num_classes = segmenter.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    items = pairs(Path(images), Path(labels))
    bar = progress(len(items), "evaluating", unit="img")
    try:
        for image_path, label_path in items:
            label = read_label(label_path)
            result = segmenter(read_image(image_path))
            scores = upsample_bilinear(result.scores, label.shape[1], label.shape[0], result.region)
            confusion += metrics.confusion_matrix(label, scores.argmax(0), num_classes)
            bar.update(1)
    finally:
        bar.close()
    summary = metrics.summary(confusion, segmenter.class_names)
    summary["images"] = len(items)
    summary["per_class"] = [
        {"id": c, "name": name, "iou": summary["class_iou"][name], "accuracy": summary["class_accuracy"][name],
         "pixels": int(confusion[c].sum())}
        for c, name in enumerate(segmenter.class_names)
    ]
    return summary
