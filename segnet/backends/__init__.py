"""Backend selection. Every backend implements ``base.Backend``; only ``tensorrt.py`` imports TensorRT."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .base import Backend, TensorInfo

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def open_backend(kind: str, model_path: str | Path, input_blob: str = "input_0",
                 output_blob: str = "output_0", **options) -> Backend:
    """An unopened backend of ``kind`` for the model (use it as a context manager).

    ``auto`` means onnxruntime until the TensorRT backend lands.
    """
    if kind not in BACKENDS:
        raise UsageError(f"unknown backend '{kind}': choose one of {', '.join(BACKENDS)}")
    if kind == "tensorrt":
        raise UsageError("the TensorRT backend is not available yet: use --backend onnxruntime")
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, input_blob, output_blob, **options)


__all__ = ["BACKENDS", "Backend", "TensorInfo", "open_backend"]
