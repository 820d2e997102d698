"""Choosing and opening a backend. Every backend implements ``base.Backend``; only the ``tensorrt``
sub-package imports TensorRT or CUDA."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

from ..errors import SegnetError, option
from ..options import Options
from .base import Backend, TensorInfo

log = logging.getLogger(__name__)

#: Why ``auto`` is not using TensorRT in this process, once it knows (said once, then remembered).
_auto_fallback: str | None = None

#: Files that exist only where an NVIDIA GPU and its driver do: a GPU's device node (containers may see only
#: /dev/nvidia3), the driver's per-GPU entries, a Jetson's GPU node (JetPack 5 and older) and WSL's CUDA
#: library. Globs, checked without loading any driver; tests replace them.
NVIDIA_GPU_SIGNS: tuple[str, ...] = ("/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*", "/dev/nvhost-ctrl-gpu",
                                     "/usr/lib/wsl/lib/libcuda.so*")


def nvidia_gpu_present() -> bool:
    """Whether this machine shows any sign of an NVIDIA GPU: without one, TensorRT cannot run, and advice to
    install it is noise."""
    return any(glob.glob(sign) for sign in NVIDIA_GPU_SIGNS)


#: Runs of fewer images than this start quickly on a GPU: no exhaustive algorithm search, no CUDA graphs.
QUICK_START_BELOW = 64
#: Runs of fewer images than this use onnxruntime's CPU provider where its CUDA provider could run too
#: (``device`` auto): CUDA's start (the context, the sessions, the first inference's kernels, the exit) took
#: about a second on the GPU machine, one image's whole work on its CPU 40 ms (BENCHMARKS.md, issue 20, run 11).
CPU_BELOW = 4


def open_backend(model_path: str | Path, options: Options | None = None, input_blob: str | None = None,
                 output_blob: str | None = None, expected_images: int | None = None) -> Backend:
    """An unopened backend for the model, as ``options.backend`` says (use it as a context manager).

    ``tensorrt`` never falls back: it fails with a one-line error saying what to install. ``auto`` uses
    TensorRT (of ``options.tensorrt_flavour``) when it imports and a CUDA GPU it supports is visible, and
    otherwise onnxruntime; when TensorRT is missing or fails to build or load the engine, one status line says
    why, once per process. onnxruntime runs the model as it is, with ``precision='fp16'`` its checked FP16 copy
    (the one TensorRT 11 and TensorRT-RTX build from), with ``precision='int8'`` its calibrated INT8 copy; ``auto``
    falling back to onnxruntime keeps the precision asked (onnxruntime runs all three), and without one runs FP32.
    ``expected_images``: how many images the run has, where known. Under ``QUICK_START_BELOW`` the work is too
    small to pay for cuDNN's exhaustive algorithm search and CUDA-graph capture on onnxruntime's CUDA provider
    (about a second on the GPU machine; BENCHMARKS.md, issue 20); under ``CPU_BELOW`` it is too small to pay for
    CUDA's start at all, and onnxruntime runs it on the CPU unless ``options.device`` says ``cuda``.
    ``options.device`` ``cpu`` keeps ``auto`` on onnxruntime, which runs on the CPU.
    """
    options = options or Options()
    few = expected_images if expected_images is not None and expected_images < CPU_BELOW else None
    quick = expected_images is not None and expected_images < QUICK_START_BELOW
    onnxruntime = _onnxruntime(model_path, input_blob, output_blob, options, options.precision or "fp32",
                               quick, few)
    if options.backend == "tensorrt" and options.device == "cpu":
        raise SegnetError(f"{option('device', 'cpu')}: TensorRT runs only on a GPU; use {option('backend', 'auto')} "
                          "or onnxruntime to run on the CPU")
    if options.backend == "onnxruntime" or options.device == "cpu":
        return onnxruntime
    if options.backend == "auto" and not nvidia_gpu_present():
        log.debug("no NVIDIA GPU here: running on onnxruntime without trying TensorRT")
        return onnxruntime
    from .tensorrt import TensorRTBackend, unusable_reason

    reason = _auto_fallback if options.backend == "auto" else None
    reason = reason or unusable_reason(options.tensorrt_flavour)
    if options.backend == "tensorrt":
        if reason:
            raise SegnetError(f"{option('backend', 'tensorrt')} cannot run: {reason}")
        return _tensorrt(TensorRTBackend, model_path, input_blob, output_blob, options)
    if reason:
        return _SaysWhyWhenUsed(onnxruntime, reason)
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


class _SaysWhyWhenUsed:
    """``auto`` on a GPU without a usable TensorRT: onnxruntime, whose first inference says why TensorRT is not
    used (what to install), so that a run that infers nothing (``--legend`` alone) gives no advice."""

    def __init__(self, backend: Backend, reason: str):
        self.backend, self.reason = backend, reason

    def __enter__(self) -> _SaysWhyWhenUsed:
        self.backend.__enter__()
        return self

    def __getattr__(self, name: str):  # description, input, output: the backend's; its inference says why first
        value = getattr(self.__dict__["backend"], name)
        if name in ("infer", "infer_images"):
            _fall_back(self.reason)
        return value

    def __exit__(self, *exc) -> None:
        self.backend.__exit__(*exc)


def _fall_back(reason: str) -> None:
    global _auto_fallback
    if _auto_fallback is None:
        log.info("TensorRT not used, running on onnxruntime: %s", reason)
        _auto_fallback = reason


def _onnxruntime(model_path, input_blob, output_blob, options: Options, precision: str,
                 quick_start: bool = False, few: int | None = None) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend, quick_start_settings

    return OnnxRuntimeBackend(model_path, input_blob, output_blob, batch_size=options.batch_size,
                              threads=options.threads, precision=precision, cache=options.engine_cache,
                              cuda=quick_start_settings() if quick_start else None, device=options.device,
                              few=few)


def _tensorrt(backend, model_path, input_blob, output_blob, options: Options) -> Backend:
    return backend(model_path, input_blob, output_blob, precision=options.precision or "fp16",
                   engine_cache=options.engine_cache, batch_size=options.batch_size,
                   flavour=options.tensorrt_flavour)


__all__ = ["Backend", "TensorInfo", "open_backend"]
