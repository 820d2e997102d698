"""TensorRT backend: the ONNX model built once into an engine, cached, and run with CUDA; TensorRT 10, TensorRT 11
and TensorRT for RTX.

Split the way Polygraphy splits it, one module per step:

    api           importing TensorRT (which flavour), its version path, its logger, every TensorRT name used
    recipe        which engine a model needs (key, file, build), and building one ahead of time
    builder       ONNX -> network -> serialized engine (batch profile, timing cache, compute-capability targets)
    engine_cache  where engines live, under which key; locked, atomic, damaged ones rebuilt
    runner        a built engine, bound to CUDA buffers, mapping batches to scores
    cuda          device buffers, pinned host arrays, a stream (cuda-python or PyCUDA)

``TensorRTBackend`` here only puts them together. FP16 on TensorRT 10 is the builder flag on the FP32 model,
as jetson does; TensorRT 11 and TensorRT-RTX have no such flag, so the model is converted to FP16 first
(``segnet.backends.fp16``). Nothing outside this sub-package imports TensorRT or CUDA.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SegnetError
from . import engine_cache as cache
from .api import (
    INSTALL,
    INSTALL_RTX,
    api_path,
    create_runtime,
    import_tensorrt,
    make_logger,
    one_line_errors,
    parse_targets,
    product,
    unsupported_gpu,
    version_problem,
)
from .builder import OPTIMIZATION_LEVEL, WORKSPACE
from .recipe import BuiltEngine, build_ahead, engines_for_gpu, recipe
from .runner import EngineRunner, load_engine

log = logging.getLogger(__name__)


@functools.cache
def unusable_reason(flavour: str = "auto") -> str | None:
    """Why TensorRT (of ``flavour``) cannot run in this process (one line), or None. Worked out once per process
    and flavour."""
    try:
        trt = import_tensorrt(flavour)
        with one_line_errors(trt, "starting"):
            problem = version_problem(trt)
            if problem:
                return problem
            create_runtime(trt, make_logger(trt))
    except SegnetError as exc:
        return str(exc)
    from . import cuda

    try:
        with cuda.open_cuda() as layer:
            gpu = layer.device_info()
    except SegnetError as exc:
        return f"CUDA is not usable: {exc}"
    return unsupported_gpu(trt, gpu.name, gpu.compute_capability)


class TensorRTBackend:
    """Runs the model as a TensorRT engine on the first CUDA GPU; ``infer`` maps ``[N,3,H,W]`` float32 to
    ``[N,C,gh,gw]`` float32 scores. With ``batch_size`` B > 1 the engine has a batch axis with an optimisation
    profile of 1 to B, and one call runs up to B images at once. ``flavour``: ``auto``, ``tensorrt`` or
    ``tensorrt_rtx``."""

    def __init__(self, model_path: str | Path, input_blob: str | None = None, output_blob: str | None = None,
                 precision: str = "fp16", engine_cache: str | Path | None = None, batch_size: int = 1,
                 workspace: int = WORKSPACE, optimization_level: int = OPTIMIZATION_LEVEL, flavour: str = "auto"):
        self.model_path = Path(model_path)
        self.input_blob, self.output_blob = input_blob, output_blob
        self.precision, self.engine_cache, self.batch_size = precision, engine_cache, batch_size
        self.workspace, self.optimization_level, self.flavour = workspace, optimization_level, flavour
        self.cuda: Any = None
        self.runner: Any = None

    def __enter__(self) -> TensorRTBackend:
        trt = import_tensorrt(self.flavour)
        try:
            with one_line_errors(trt, "building or loading the engine"):
                self._open(trt)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.close()
        cuda, self.cuda = self.cuda, None
        if cuda is not None:
            cuda.close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.infer(batch)

    #: the engine takes the network's float input; pre-processing stays with the segmenter
    can_fuse = False
    on_cuda = True

    def fuse(self, spec, draw=None) -> None:
        raise SegnetError("the TensorRT backend runs the network's own graph; pre-processing is not fused")

    def infer_pictures(self, images: np.ndarray, colors: np.ndarray, draw) -> tuple[np.ndarray, ...]:
        raise SegnetError("the TensorRT backend runs the network's own graph; pictures are drawn on the CPU")

    def infer_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise SegnetError("the TensorRT backend runs the network's own graph; pre-processing is not fused")

    def _open(self, trt) -> None:
        from .cuda import open_cuda

        problem = version_problem(trt)
        if problem:
            raise SegnetError(problem)
        self.cuda = open_cuda()
        gpu = self.cuda.device_info()
        problem = unsupported_gpu(trt, gpu.name, gpu.compute_capability)
        if problem:
            raise SegnetError(problem)
        logger = make_logger(trt)
        runtime = create_runtime(trt, logger)
        own = recipe(trt, logger, self.model_path, input_blob=self.input_blob, output_blob=self.output_blob,
                     precision=self.precision, engine_cache=self.engine_cache, batch_size=self.batch_size,
                     workspace=self.workspace, optimization_level=self.optimization_level, gpu_name=gpu.name,
                     targets=(gpu.compute_capability,))
        runtime_cache = None
        if api_path(trt) == "rtx":  # an engine built ahead of time for this GPU, several, or all of them
            own = engines_for_gpu(own, gpu.compute_capability)[0]
            runtime_cache = cache.runtime_cache_path(own.path, gpu.name, gpu.compute_capability)
        engine = cache.load_or_build(own.path, own.key, own.build, lambda data: load_engine(trt, runtime, data, logger),
                                     building=own.building_line())
        self.runner = EngineRunner(trt, engine, logger, self.cuda, self.model_path, own.input_name, own.output_name,
                                   self.batch_size, runtime_cache=runtime_cache)
        self.input, self.output = self.runner.input, self.runner.output
        self.description = f"{product(trt)} ({own.label}, {gpu.name})"


__all__ = ["INSTALL", "INSTALL_RTX", "BuiltEngine", "TensorRTBackend", "build_ahead", "import_tensorrt",
           "parse_targets", "unusable_reason"]
