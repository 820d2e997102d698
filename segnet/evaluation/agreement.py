"""Backend agreement: the same network on the same images through two backends or precisions (onnxruntime FP32
and the FP16 copy, TensorRT and onnxruntime, ...), compared in task terms: how often their class maps agree,
and, with labels, each side's pixel accuracy and mean IoU and the difference. Why results differ between
TensorRT, onnxruntime and PyTorch is a question TensorRT users keep asking; this answers it on their data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import SegnetError
from ..image_io import READ_EXTENSIONS, read_image
from ..progress import progress
from . import metrics, pairs, read_label, upsample_bilinear

log = logging.getLogger(__name__)


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SegnetError(f"{folder}: not a directory")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in READ_EXTENSIONS)
    if not found:
        raise SegnetError(f"{folder}: no images ({', '.join(READ_EXTENSIONS)})")
    return found


def compare(first, second, images: str | Path, labels: str | Path | None = None) -> dict:
    """Run segmenters ``first`` and ``second`` (the same network, another backend or precision) on every image
    of ``images`` and compare them.

    Per image and over the folder: ``agreement``, the fraction of class-map cells (the network's output grid,
    argmax) where both pick the same class, and ``score_difference``, the largest difference between their raw
    scores (how far apart the numbers are even where the classes agree). With ``labels`` (index PNGs matched by
    file stem, as ``evaluate`` takes them) also ``pixel_agreement``, the same at the labels' size (scores
    upsampled bilinearly, every pixel counted), and for each side pixel accuracy and mean IoU measured as
    ``evaluate`` does (one confusion matrix over the folder for the totals), and ``delta``: second minus first."""
    if first.num_classes != second.num_classes:
        raise SegnetError(f"the two runs score {first.num_classes} and {second.num_classes} classes: compare the "
                          "same network")
    if first.description == second.description:
        log.info(f"both runs use {first.description}: the options that differ do not change how the network runs")
    n = first.num_classes
    items = pairs(Path(images), Path(labels)) if labels is not None else \
        [(p, None) for p in images_in(Path(images))]
    totals: dict = {"cells": 0, "same": 0, "pixels": 0, "same_pixels": 0, "difference": 0.0}
    confusion = [np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)]
    rows = []
    bar = progress(len(items), "comparing", unit="img")
    try:
        for image_path, label_path in items:
            image = read_image(image_path)
            results = [first(image), second(image)]
            maps = [r.class_map for r in results]
            if maps[0].shape != maps[1].shape:
                raise SegnetError(f"{image_path.name}: the two runs give class maps of {maps[0].shape[::-1]} and "
                                  f"{maps[1].shape[::-1]} cells: compare the same network")
            same = int((maps[0] == maps[1]).sum())
            difference = float(np.abs(results[0].scores - results[1].scores).max())
            row: dict = {"image": image_path.name, "agreement": same / maps[0].size, "score_difference": difference}
            totals["difference"] = max(totals["difference"], difference)
            totals["cells"] += maps[0].size
            totals["same"] += same
            if label_path is not None:
                label = read_label(label_path)
                picked = [upsample_bilinear(r.scores, label.shape[1], label.shape[0], r.region).argmax(0)
                          for r in results]
                row["pixel_agreement"] = float((picked[0] == picked[1]).mean())
                totals["pixels"] += label.size
                totals["same_pixels"] += int((picked[0] == picked[1]).sum())
                for side, (name, p) in enumerate(zip(("first", "second"), picked)):
                    image_confusion = metrics.confusion_matrix(label, p, n)
                    confusion[side] += image_confusion
                    row[name] = _scores(image_confusion)
            rows.append(row)
            bar.update(1)
    finally:
        bar.close()
    result: dict = {"images": len(items), "agreement": totals["same"] / totals["cells"],
                    "score_difference": totals["difference"],
                    "first": {"description": first.description}, "second": {"description": second.description}}
    if labels is not None:
        result["pixel_agreement"] = totals["same_pixels"] / totals["pixels"]
        result["first"].update(_scores(confusion[0]))
        result["second"].update(_scores(confusion[1]))
        result["delta"] = {k: result["second"][k] - result["first"][k] for k in ("pixel_accuracy", "mean_iou")}
    result["per_image"] = rows
    return result


def _scores(confusion: np.ndarray) -> dict:
    return {"pixel_accuracy": metrics.pixel_accuracy(confusion), "mean_iou": metrics.mean_iou(confusion)}
