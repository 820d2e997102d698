"""Running a built engine (after Polygraphy's ``TrtRunner``): deserialise it, bind a device buffer and a
pinned host copy to every I/O tensor, and map ``[N, 3, H, W]`` float32 batches to float32 scores
(``EngineRunner``), or, for an engine of the fused graph, uint8 images and their stretch and drawing inputs to
class maps, scores and pictures (``FusedRunner``). On TensorRT-RTX the execution context gets a runtime
configuration: kernels specialised for each input shape when it first appears (no slow generic kernels), kept in
a runtime cache beside the engine. Nothing here builds or caches engines; ``builder`` and ``engine_cache`` do."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SegnetError, option
from ..base import TensorInfo, check_contract
from . import engine_cache as cache
from .api import api_path, first_error, last_error, product

log = logging.getLogger(__name__)

#: What TensorRT says when the machine, not the engine, is the problem: such an engine is kept, not rebuilt.
_MACHINE_PROBLEM = re.compile(r"cudaError|cuda runtime|cuda driver|driver version|out of memory|insufficient",
                              re.IGNORECASE)


def load_engine(trt, runtime, data: bytes, logger):
    """Deserialize an engine. ``EngineUnusable`` (the cache rebuilds it) when TensorRT refuses the engine itself;
    ``EngineLoadFailed`` (reported, the engine kept) when the driver, the GPU or its memory is the problem.
    TensorRT-RTX says which with its validity check; on TensorRT 10/11 its error message tells."""
    if api_path(trt) == "rtx":
        _check_validity_rtx(trt, runtime, data, logger)
    mark = len(logger.errors)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        reason = first_error(logger, mark)
        if _MACHINE_PROBLEM.search(reason):
            raise cache.EngineLoadFailed(f"{product(trt)} cannot load the engine on this machine: {reason}")
        raise cache.EngineUnusable(f"{product(trt)} cannot deserialize it: {reason}")
    return engine


def _check_validity_rtx(trt, runtime, data: bytes, logger) -> None:
    """TensorRT-RTX's own verdict before deserialising: rebuild only an engine from another release or a
    malformed one; anything about the machine (driver, CUDA, memory, a GPU the engine was not built for, which
    another GPU sharing the cache may need) is reported and the engine kept."""
    mark = len(logger.errors)
    validity, diagnostics = runtime.get_engine_validity(data)
    if validity != trt.EngineValidity.INVALID:
        return
    problems = [
        (trt.EngineInvalidityDiagnostics.VERSION_MISMATCH, "it was built by another TensorRT-RTX release", True),
        (trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE, "it is malformed", True),
        (trt.EngineInvalidityDiagnostics.UNSUPPORTED_CC, "it was not built for this GPU's compute capability", False),
        (trt.EngineInvalidityDiagnostics.OLD_CUDA_DRIVER, "the CUDA driver is too old", False),
        (trt.EngineInvalidityDiagnostics.OLD_CUDA_RUNTIME, "the CUDA runtime is too old", False),
        (trt.EngineInvalidityDiagnostics.INSUFFICIENT_GPU_MEMORY, "too little GPU memory is free", False),
        (trt.EngineInvalidityDiagnostics.CUDA_ERROR, "the CUDA driver or runtime is not installed correctly", False),
    ]
    found = [(text, rebuild) for flag, text, rebuild in problems if int(diagnostics) & int(flag)]
    reasons = "; ".join(text for text, _ in found) or f"no reason given ({first_error(logger, mark)})"
    if found and all(rebuild for _, rebuild in found):
        raise cache.EngineUnusable(f"{product(trt)} refuses it: {reasons}")
    raise cache.EngineLoadFailed(f"{product(trt)} cannot load the engine on this machine: {reasons}")


class _Execution:
    """A deserialized engine's execution context on ``cuda`` (a ``cuda.Cuda``). ``runtime_cache``: where
    TensorRT-RTX keeps the kernels it compiles for this GPU (read when the context is made, written after the
    first run at each input shape)."""

    def __init__(self, trt, engine, logger, cuda, runtime_cache: Path | None = None):
        self.engine, self.logger, self.cuda = engine, logger, cuda
        self.runtime_cache_path = runtime_cache
        self.host: dict[str, np.ndarray] = {}
        self.device: dict = {}
        self.context: Any = None
        self.runtime_config: Any = None
        self.runtime_cache: Any = None
        self.stream: Any = None
        self._compiled: set = set()  # input shapes whose kernels are in the saved runtime cache
        self.path = api_path(trt)
        if self.path == "rtx":
            context = self.context = self._context_rtx(trt, engine)
        else:
            context = self.context = engine.create_execution_context()
        if context is None:
            raise SegnetError(f"TensorRT could not create an execution context: {last_error(self.logger)}")

    def close(self) -> None:
        self.context = self.runtime_config = self.runtime_cache = self.engine = None  # before their memory
        self.host, self.device, self.stream = {}, {}, None

    def _context_rtx(self, trt, engine):
        """An execution context that compiles kernels specialised to each input shape when that shape first comes
        (instead of running generic fallback kernels while it compiles them in the background), seeded from and
        kept in the runtime cache."""
        runtime_config = self.runtime_config = engine.create_runtime_config()
        runtime_config.dynamic_shapes_kernel_specialization_strategy = \
            trt.DynamicShapesKernelSpecializationStrategy.EAGER
        runtime_cache = self.runtime_cache = runtime_config.create_runtime_cache()
        blob = cache.read_runtime_cache(self.runtime_cache_path) if self.runtime_cache_path else b""
        if blob and not runtime_cache.deserialize(blob):
            log.info(f"runtime cache {self.runtime_cache_path} is for another GPU, driver or TensorRT-RTX release: "
                     "its kernels are compiled again")
        if not runtime_config.set_runtime_cache(runtime_cache):
            raise SegnetError(f"TensorRT-RTX refused its runtime cache: {last_error(self.logger)}")
        return engine.create_execution_context(runtime_config)

    def _keep_kernels_rtx(self, shape) -> None:
        """After the first run at an input shape (a batch size; the fused graph's image size too), save the
        runtime cache (TensorRT-RTX compiled kernels for it), so the next process finds them. A cache that cannot
        be written is said once; running goes on."""
        if self.runtime_cache is None or self.runtime_cache_path is None or shape in self._compiled:
            return
        self._compiled.add(shape)
        try:
            cache.save_runtime_cache(self.runtime_cache_path, bytes(self.runtime_cache.serialize()))
        except SegnetError as exc:
            log.info(f"runtime cache not saved: {exc}")
            self.runtime_cache_path = None


class EngineRunner(_Execution):
    """A deserialized engine ready to run on ``cuda`` (a ``cuda.Cuda``). With ``batch_size`` 1 images run one
    at a time; with B > 1 the engine's batch axis is set per call, up to B images at once. ``runtime_cache``:
    where TensorRT-RTX keeps the kernels it compiles for this GPU (read when the context is made, written after
    the first run at each batch size)."""

    def __init__(self, trt, engine, logger, cuda, model_path: Path, input_blob: str | None,
                 output_blob: str | None, batch_size: int = 1, runtime_cache: Path | None = None):
        super().__init__(trt, engine, logger, cuda, runtime_cache)
        self.model_path, self.batch_size = model_path, batch_size
        self._bind(trt, input_blob, output_blob)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        host_in, host_out = self.host[self.input.name], self.host[self.output.name]
        if batch.ndim != 4 or batch.shape[1:] != host_in.shape[1:]:
            raise ValueError(f"batch of shape {batch.shape} does not fit the engine input {host_in.shape}")
        if self.batch_size > 1:
            return self._infer_batch(batch)
        scores = np.empty((len(batch), *host_out.shape[1:]), np.float32)
        for i, image in enumerate(batch):
            np.copyto(host_in[0], image, casting="same_kind")  # also to FP16 for an engine with FP16 input
            self.cuda.copy_to_device(self.device[self.input.name], host_in, self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise SegnetError(f"TensorRT could not run the engine: {last_error(self.logger)}")
            self.cuda.copy_to_host(host_out, self.device[self.output.name], self.stream)
            self.cuda.synchronize(self.stream)  # the one synchronisation per image
            scores[i] = host_out[0]
        if self.path == "rtx":
            self._keep_kernels_rtx(1)
        return scores

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Up to ``batch_size`` images in one run: the input shape set to their number, only their part of
        the buffers copied, one synchronisation."""
        name, n = self.input.name, len(batch)
        if not 1 <= n <= self.batch_size:
            raise ValueError(f"batch of {n} images: the engine takes 1 to {self.batch_size}")
        shape = (n, *self.host[name].shape[1:])
        if not self.context.set_input_shape(name, shape):
            raise SegnetError(f"TensorRT rejected batch size {n} for input '{name}': {last_error(self.logger)}")
        host_in = _leading(self.host[name], shape)
        host_out = _leading(self.host[self.output.name], tuple(self.context.get_tensor_shape(self.output.name)))
        np.copyto(host_in, batch, casting="same_kind")  # also to FP16 for an engine with FP16 input
        self.cuda.copy_to_device(self.device[name], host_in, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise SegnetError(f"TensorRT could not run the engine: {last_error(self.logger)}")
        self.cuda.copy_to_host(host_out, self.device[self.output.name], self.stream)
        self.cuda.synchronize(self.stream)  # the one synchronisation per batch
        if self.path == "rtx":
            self._keep_kernels_rtx(n)
        return host_out.astype(np.float32)  # a copy: the pinned buffer is reused by the next call

    def _bind(self, trt, input_blob: str | None, output_blob: str | None) -> None:
        """A device buffer for every I/O tensor and pinned host copies."""
        engine, context = self.engine, self.context
        dtypes = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise SegnetError(f"model {self.model_path} has {len(inputs)} inputs; one is supported")
        shapes = {name: tuple(engine.get_tensor_shape(name)) for name in names}
        batch = self.batch_size  # 1, or buffers for the largest batch (infer sets each call's own shape)
        for name in inputs:  # the batch axis of the optimisation profile the builder made
            if shapes[name][0] != -1 and batch > 1:
                raise SegnetError(f"the TensorRT engine of {self.model_path} has a fixed batch; "
                                  f"{option('batch_size', batch)} needs a batch axis")
            if shapes[name][0] == -1 and not context.set_input_shape(name, (batch, *shapes[name][1:])):
                raise SegnetError(f"TensorRT rejected batch size {batch} for input '{name}'")
        self.stream = self.cuda.stream()
        for name in names:
            dtype = dtypes.get(engine.get_tensor_dtype(name))
            if dtype is None:
                raise SegnetError(f"model {self.model_path}: tensor '{name}' has data type "
                                  f"{engine.get_tensor_dtype(name)}; float32 and float16 are supported")
            self.host[name] = self.cuda.pinned_array(tuple(context.get_tensor_shape(name)), dtype)
            self.device[name] = self.cuda.device_buffer(self.host[name].nbytes)
            if not context.set_tensor_address(name, self.device[name].ptr):
                raise SegnetError(f"TensorRT rejected the buffer of tensor '{name}'")
        infos = [TensorInfo(name, tuple(d if d >= 0 else None for d in shapes[name])) for name in names]
        self.input, self.output = check_contract(self.model_path, [i for i in infos if i.name in inputs],
                                                 [i for i in infos if i.name not in inputs],
                                                 input_blob, output_blob)


class FusedRunner(_Execution):
    """An engine of the fused graph (``backends/fused.py``, TensorRT form) ready to run on ``cuda``: every call
    sets each input's shape (images of any size within the profile, up to the profile's batch), copies the
    inputs in and the outputs back, and synchronises once. Buffers grow to the largest shape seen, by powers of
    two, and are reused; they are freed with the CUDA layer."""

    def __init__(self, trt, engine, logger, cuda, model_path: Path, runtime_cache: Path | None = None):
        super().__init__(trt, engine, logger, cuda, runtime_cache)
        dtypes = {trt.DataType.FLOAT: np.float32, trt.DataType.UINT8: np.uint8, trt.DataType.INT64: np.int64}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        self.outputs = [name for name in names if name not in self.inputs]
        self.dtypes: dict[str, Any] = {}
        for name in names:
            dtype = dtypes.get(engine.get_tensor_dtype(name))
            if dtype is None:
                raise SegnetError(f"the fused engine of {model_path}: tensor '{name}' has data type "
                                  f"{engine.get_tensor_dtype(name)}; float32, uint8 and int64 are supported")
            self.dtypes[name] = dtype
        self.stream = self.cuda.stream()

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The engine's outputs for ``feed`` (a value for each of its inputs; others are left out)."""
        context = self.context
        for name in self.inputs:
            array = np.ascontiguousarray(feed[name], self.dtypes[name])
            if not context.set_input_shape(name, array.shape):
                raise SegnetError(f"TensorRT rejected shape {list(array.shape)} for input '{name}' of the fused "
                                  f"engine: {last_error(self.logger)}")
            host = self._buffer(name, array.nbytes)[:array.nbytes]
            host[...] = array.reshape(-1).view(np.uint8)
            self.cuda.copy_to_device(self.device[name], host, self.stream)
        shapes = {name: tuple(context.get_tensor_shape(name)) for name in self.outputs}
        for name, shape in shapes.items():
            self._buffer(name, int(np.prod(shape)) * np.dtype(self.dtypes[name]).itemsize)
        if not context.execute_async_v3(self.stream.handle):
            raise SegnetError(f"TensorRT could not run the engine: {last_error(self.logger)}")
        views = {}
        for name, shape in shapes.items():
            views[name] = self.host[name][:int(np.prod(shape)) * np.dtype(self.dtypes[name]).itemsize]
            self.cuda.copy_to_host(views[name], self.device[name], self.stream)
        self.cuda.synchronize(self.stream)  # the one synchronisation per batch
        if self.path == "rtx":
            self._keep_kernels_rtx(tuple(np.shape(feed[name]) for name in self.inputs))
        # copies: the pinned buffers are reused by the next call
        return {name: views[name].view(self.dtypes[name]).reshape(shapes[name]).copy() for name in shapes}

    def _buffer(self, name: str, nbytes: int) -> np.ndarray:
        """The pinned host bytes of tensor ``name`` (its device buffer in ``self.device``), grown to hold
        ``nbytes`` and given to TensorRT; never empty, so an empty tensor has an address too."""
        if name not in self.host or self.host[name].nbytes < nbytes:
            size = 1 << max(8, (nbytes - 1).bit_length())
            self.host[name] = self.cuda.pinned_array((size,), np.uint8)
            self.device[name] = self.cuda.device_buffer(size)
            if not self.context.set_tensor_address(name, self.device[name].ptr):
                raise SegnetError(f"TensorRT rejected the buffer of tensor '{name}'")
        return self.host[name]


def _leading(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The start of a buffer allocated for the largest batch, seen as ``shape`` (a smaller batch)."""
    size = int(np.prod(shape))
    if size > array.size:
        raise SegnetError(f"TensorRT wants a tensor of shape {list(shape)}, larger than its buffer "
                          f"{list(array.shape)}")
    return array.reshape(-1)[:size].reshape(shape)
