"""Running a built engine (after Polygraphy's ``TrtRunner``): deserialise it, bind a device buffer and a
pinned host copy to every I/O tensor, and map ``[N, 3, H, W]`` float32 batches to float32 scores. Nothing
here builds or caches; ``builder`` and ``engine_cache`` do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SegnetError, option
from ..base import TensorInfo, check_contract
from . import engine_cache as cache
from .api import last_error


def load_engine(runtime, data: bytes, logger):
    """Deserialize an engine; ``EngineUnusable`` (so the cache rebuilds it) when TensorRT refuses it."""
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise cache.EngineUnusable(f"TensorRT cannot deserialize it: {last_error(logger)}")
    return engine


class EngineRunner:
    """A deserialized engine ready to run on ``cuda`` (a ``cuda.Cuda``). With ``batch_size`` 1 images run one
    at a time; with B > 1 the engine's batch axis is set per call, up to B images at once."""

    def __init__(self, trt, engine, logger, cuda, model_path: Path, input_blob: str | None,
                 output_blob: str | None, batch_size: int = 1):
        self.engine, self.logger, self.cuda = engine, logger, cuda
        self.model_path, self.batch_size = model_path, batch_size
        self.host: dict[str, np.ndarray] = {}
        self.device: dict = {}
        self.context: Any = None
        self.stream: Any = None
        self._bind(trt, input_blob, output_blob)

    def close(self) -> None:
        self.context = self.engine = None  # TensorRT objects go before the memory they use
        self.host, self.device, self.stream = {}, {}, None

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
        return host_out.astype(np.float32)  # a copy: the pinned buffer is reused by the next call

    def _bind(self, trt, input_blob: str | None, output_blob: str | None) -> None:
        """An execution context with a device buffer for every I/O tensor and pinned host copies."""
        engine = self.engine
        context = self.context = engine.create_execution_context()
        if context is None:
            raise SegnetError(f"TensorRT could not create an execution context: {last_error(self.logger)}")
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


def _leading(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The start of a buffer allocated for the largest batch, seen as ``shape`` (a smaller batch)."""
    size = int(np.prod(shape))
    if size > array.size:
        raise SegnetError(f"TensorRT wants a tensor of shape {list(shape)}, larger than its buffer "
                          f"{list(array.shape)}")
    return array.reshape(-1)[:size].reshape(shape)
