"""Backend selection. Every backend implements ``base.Backend``; only ``tensorrt.py`` imports TensorRT."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SegnetError, UsageError
from .base import Backend, TensorInfo

BACKENDS = ("auto", "onnxruntime", "tensorrt")
TENSORRT_OPTIONS = ("precision", "engine_cache")  # what only the TensorRT backend takes
SHARED_OPTIONS = ("batch_size",)  # what both backends take (``auto`` may open either)

#: Why ``auto`` is not using TensorRT in this process, once it knows (said once, then remembered).
_auto_fallback: str | None = None


def open_backend(kind: str, model_path: str | Path, input_blob: str = "input_0",
                 output_blob: str = "output_0", **options) -> Backend:
    """An unopened backend of ``kind`` for the model (use it as a context manager).

    ``tensorrt`` never falls back: it fails with a one-line error saying what to install. ``auto`` uses
    TensorRT when it imports and a CUDA GPU is visible, and otherwise onnxruntime; when TensorRT is missing
    or fails to build or load the engine, one stderr line says why, once per process.
    """
    if kind not in BACKENDS:
        raise UsageError(f"unknown backend '{kind}': choose one of {', '.join(BACKENDS)}")
    trt_options = {k: options.pop(k) for k in TENSORRT_OPTIONS if k in options}
    trt_options.update((k, options[k]) for k in SHARED_OPTIONS if k in options)
    onnxruntime = _onnxruntime(model_path, input_blob, output_blob, options)
    if kind == "onnxruntime":
        return onnxruntime
    from .tensorrt import TensorRTBackend, unusable_reason

    reason = _auto_fallback if kind == "auto" else None
    reason = reason or unusable_reason()
    if kind == "tensorrt":
        if reason:
            raise SegnetError(f"--backend tensorrt cannot run: {reason}")
        return TensorRTBackend(model_path, input_blob, output_blob, **trt_options)
    if reason:
        _fall_back(reason)
        return onnxruntime
    return _FirstThatOpens(TensorRTBackend(model_path, input_blob, output_blob, **trt_options), onnxruntime)


class _FirstThatOpens:
    """``auto``: TensorRT, or onnxruntime when TensorRT fails to build or load the engine."""

    def __init__(self, first: Backend, fallback: Backend):
        self.candidates = (first, fallback)
        self.opened: Backend | None = None

    def __enter__(self) -> "_FirstThatOpens":
        first, fallback = self.candidates
        try:
            self.opened = first.__enter__()
        except SegnetError as exc:
            _fall_back(str(exc))
            self.opened = fallback.__enter__()
        return self

    def __getattr__(self, name: str):  # description, input, output, infer: those of the one that opened
        opened = self.__dict__.get("opened")
        if opened is None:
            raise AttributeError(name)
        return getattr(opened, name)

    def __exit__(self, *exc) -> None:
        if self.opened is not None:
            self.opened.__exit__(*exc)


def _fall_back(reason: str) -> None:
    global _auto_fallback
    if _auto_fallback is None:
        print(f"segnet: TensorRT not used, running on onnxruntime: {reason}", file=sys.stderr, flush=True)
        _auto_fallback = reason


def _onnxruntime(model_path, input_blob, output_blob, options) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, input_blob, output_blob, **options)


__all__ = ["BACKENDS", "Backend", "TensorInfo", "open_backend"]
