"""TensorRT backend: the ONNX model built once into an engine, cached, and run with CUDA; TensorRT 10 and 11.

Split the way Polygraphy splits it, one module per step:

    api           importing TensorRT, its version path, its logger, the table of every TensorRT name used
    builder       ONNX -> network -> serialized engine (batch profile, timing cache)
    fp16          the checked FP16 copy of a model, for TensorRT 11's strongly typed networks
    engine_cache  where engines live, under which key; locked, atomic, damaged ones rebuilt
    runner        a built engine, bound to CUDA buffers, mapping batches to scores
    cuda          device buffers, pinned host arrays, a stream (cuda-python or PyCUDA)

``TensorRTBackend`` here only puts them together. FP16 on TensorRT 10 is the builder flag on the FP32 model,
as jetson does; TensorRT 11 has no such flag, so the model is converted to FP16 first. Nothing outside this
sub-package imports TensorRT or CUDA.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SegnetError
from ...util import file_sha256
from ..base import check_contract, onnx_io
from . import engine_cache as cache
from . import fp16
from .api import INSTALL, api_path, create_runtime, import_tensorrt, make_logger
from .builder import OPTIMIZATION_LEVEL, WORKSPACE, engine_from_onnx
from .runner import EngineRunner, load_engine

log = logging.getLogger(__name__)


@functools.cache
def unusable_reason() -> str | None:
    """Why TensorRT cannot run in this process (one line), or None. Worked out once per process."""
    try:
        trt = import_tensorrt()
    except SegnetError as exc:
        return str(exc)
    if int(trt.__version__.split(".")[0]) < 10:
        return f"TensorRT {trt.__version__} is too old, 10 or newer is needed: {INSTALL}"
    try:
        create_runtime(trt, make_logger(trt))
    except SegnetError as exc:
        return str(exc)
    from . import cuda

    try:
        cuda.open_cuda().close()
    except SegnetError as exc:
        return f"CUDA is not usable: {exc}"
    return None


class TensorRTBackend:
    """Runs the model as a TensorRT engine on the first CUDA GPU; ``infer`` maps ``[N,3,H,W]`` float32 to
    ``[N,C,gh,gw]`` float32 scores. With ``batch_size`` B > 1 the engine has a batch axis with an optimisation
    profile of 1 to B, and one call runs up to B images at once."""

    def __init__(self, model_path: str | Path, input_blob: str | None = None, output_blob: str | None = None,
                 precision: str = "fp16", engine_cache: str | Path | None = None, batch_size: int = 1,
                 workspace: int = WORKSPACE, optimization_level: int = OPTIMIZATION_LEVEL):
        self.model_path = Path(model_path)
        self.input_blob, self.output_blob = input_blob, output_blob
        self.precision, self.engine_cache, self.batch_size = precision, engine_cache, batch_size
        self.workspace, self.optimization_level = workspace, optimization_level
        self.cuda: Any = None
        self.runner: Any = None

    def __enter__(self) -> TensorRTBackend:
        trt = import_tensorrt()
        try:
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

    def _open(self, trt) -> None:
        from .cuda import open_cuda

        inputs, outputs = onnx_io(self.model_path)
        inp, out = check_contract(self.model_path, inputs, outputs, self.input_blob, self.output_blob)
        self.cuda = open_cuda()
        gpu = self.cuda.device_info()
        logger = make_logger(trt)
        runtime = create_runtime(trt, logger)
        path = api_path(trt)
        precision = "fp32" if self.precision == "fp32" else {"10": "fp16-flag", "11": "fp16-model"}[path]
        settings: tuple = (("workspace", self.workspace), ("optimization_level", self.optimization_level))
        if self.batch_size > 1:  # batch 1 keeps its key, so engines cached before batching are still found
            settings += (("batch_profile", (1, self.batch_size, self.batch_size)),)
        if precision == "fp16-model":
            settings += (("fp16_converter", f"{fp16.CONVERTER} {fp16.converter_version()}"),)
        model_sha256 = file_sha256(self.model_path)
        shape = tuple(d or 0 for d in (1, *inp.shape[1:]))  # the builder refuses symbolic sizes
        key = cache.EngineKey(model_sha256, trt.__version__, gpu.name, gpu.compute_capability, precision, shape,
                              settings)
        folder = cache.cache_dir(self.model_path, self.engine_cache)

        def build() -> bytes:
            onnx_path = self.model_path
            if precision == "fp16-model":
                onnx_path = fp16.fp16_model(self.model_path, folder, model_sha256, input_blob=inp.name,
                                            output_blob=out.name)
            model = None
            if self.batch_size > 1:  # a model exported with batch 1 gets a symbolic batch axis
                from ..onnxruntime import dynamic_batch

                model = dynamic_batch(onnx_path, inp.name, out.name)
            timing = folder / cache.timing_cache_name(trt.__version__, gpu.name, gpu.compute_capability)
            return engine_from_onnx(trt, logger, onnx_path, fp16_flag=precision == "fp16-flag",
                                    workspace=self.workspace, optimization_level=self.optimization_level,
                                    timing_cache_path=timing, model=model, max_batch=self.batch_size)

        label = "FP32" if precision == "fp32" else "FP16"
        first = " (converted to an FP16 model first)" if precision == "fp16-model" else ""
        building = f"building {label} TensorRT engine for {self.model_path}{first} — once, takes a minute or two"
        engine = cache.load_or_build(folder / key.engine_name(self.model_path), key, build,
                                     lambda data: load_engine(runtime, data, logger), building=building)
        self.runner = EngineRunner(trt, engine, logger, self.cuda, self.model_path, inp.name, out.name,
                                   self.batch_size)
        self.input, self.output = self.runner.input, self.runner.output
        self.description = f"TensorRT {trt.__version__} ({label}, {gpu.name})"


__all__ = ["TensorRTBackend", "import_tensorrt", "unusable_reason"]
