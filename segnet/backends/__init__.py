"""Choosing and opening a backend. Every backend implements ``base.Backend``; only the ``tensorrt``
sub-package imports TensorRT or CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import SegnetError, option
from ..options import Options
from .base import Backend, TensorInfo

log = logging.getLogger(__name__)

#: Why ``auto`` is not using TensorRT in this process, once it knows (said once, then remembered).
_auto_fallback: str | None = None


def open_backend(model_path: str | Path, options: Options | None = None, input_blob: str | None = None,
                 output_blob: str | None = None) -> Backend:
    """An unopened backend for the model, as ``options.backend`` says (use it as a context manager).

    ``tensorrt`` never falls back: it fails with a one-line error saying what to install. ``auto`` uses
    TensorRT (of ``options.tensorrt_flavour``) when it imports and a CUDA GPU it supports is visible, and
    otherwise onnxruntime; when TensorRT is missing or fails to build or load the engine, one status line says
    why, once per process. onnxruntime runs the model as it is, with ``precision='fp16'`` its checked FP16 copy
    (the one TensorRT 11 and TensorRT-RTX build from), with ``precision='int8'`` its calibrated INT8 copy; ``auto``
    falling back to onnxruntime keeps the precision asked (onnxruntime runs all three), and without one runs FP32.
    """
    options = options or Options()
    onnxruntime = _onnxruntime(model_path, input_blob, output_blob, options, options.precision or "fp32")
    if options.backend == "onnxruntime":
        return onnxruntime
    from .tensorrt import TensorRTBackend, unusable_reason

    reason = _auto_fallback if options.backend == "auto" else None
    reason = reason or unusable_reason(options.tensorrt_flavour)
    if options.backend == "tensorrt":
        if reason:
            raise SegnetError(f"{option('backend', 'tensorrt')} cannot run: {reason}")
        return _tensorrt(TensorRTBackend, model_path, input_blob, output_blob, options)
    if reason:
        _fall_back(reason)
        return onnxruntime
    return _FirstThatOpens(_tensorrt(TensorRTBackend, model_path, input_blob, output_blob, options), onnxruntime)


class _FirstThatOpens:
    """``auto``: TensorRT, or onnxruntime when TensorRT fails to build or load the engine."""

    def __init__(self, first: Backend, fallback: Backend):
        self.candidates = (first, fallback)
        self.opened: Backend | None = None

    def __enter__(self) -> _FirstThatOpens:
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
        log.info("TensorRT not used, running on onnxruntime: %s", reason)
        _auto_fallback = reason


def _onnxruntime(model_path, input_blob, output_blob, options: Options, precision: str) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, input_blob, output_blob, batch_size=options.batch_size,
                              threads=options.threads, precision=precision, cache=options.engine_cache)


def _tensorrt(backend, model_path, input_blob, output_blob, options: Options) -> Backend:
    return backend(model_path, input_blob, output_blob, precision=options.precision or "fp16",
                   engine_cache=options.engine_cache, batch_size=options.batch_size,
                   flavour=options.tensorrt_flavour)


__all__ = ["Backend", "TensorInfo", "open_backend"]
