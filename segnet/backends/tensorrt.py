"""TensorRT backend: the ONNX model built once into an engine, cached, and run with CUDA; TensorRT 10 and 11.

Build steps after Polygraphy: ``engine_from_onnx`` (ONNX file -> serialized engine) and ``load_engine``;
``segnet.engine_cache`` keys, locks and stores them. FP16 on TensorRT 10 is the builder flag on the FP32
model, as jetson does; TensorRT 11 networks are strongly typed and have no such flag, so the model is
converted to FP16 first (``segnet.fp16``). Flags are always looked up by name: TensorRT 11 renumbered them.

Rules that keep this module checkable against the real TensorRT bindings (tests/trt_api):
- ``TRT_API`` lists every TensorRT name used, with the arguments passed, per version path; functions named
  ``*_trt10`` / ``*_trt11`` run on that version alone and are only called under ``if ... == "10"`` (or
  ``"11"``); everything else runs on both.
- TensorRT objects live in variables named as in ``TRT_VARIABLES`` (``self.context`` counts too).
Only this module imports TensorRT.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import engine_cache as cache
from .. import fp16
from ..errors import SegnetError, UsageError
from .base import TensorInfo, check_contract

INSTALL = "pip install 'segnet[tensorrt]'"
PRECISIONS = ("fp16", "fp32")
WORKSPACE = 1 << 30  # bytes of scratch GPU memory the builder may use per layer
OPTIMIZATION_LEVEL = 3  # TensorRT's default: level 5 builds much longer for little gain on a CNN

TRT_VARIABLES = {
    "builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig", "parser": "OnnxParser",
    "error": "ParserError", "tensor": "ITensor", "profile": "IOptimizationProfile", "timing_cache": "ITimingCache",
    "shared_cache": "ITimingCache", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
}

TRT_API = {
    "common": {
        "__version__": None,
        "ILogger": None,
        "ILogger.log": ("severity", "msg"),
        "ILogger.ERROR": None,
        "ILogger.INTERNAL_ERROR": None,
        "Builder": ("logger",),
        "Builder.create_network": ("flags",),
        "Builder.create_builder_config": (),
        "Builder.create_optimization_profile": (),
        "Builder.build_serialized_network": ("network", "config"),
        "OnnxParser": ("network", "logger"),
        "OnnxParser.parse_from_file": ("model",),
        "OnnxParser.parse": ("model",),
        "OnnxParser.num_errors": None,
        "OnnxParser.get_error": ("index",),
        "ParserError.desc": (),
        "ParserError.node": (),
        "ParserError.node_name": (),
        "ParserError.node_operator": (),
        "INetworkDefinition.num_inputs": None,
        "INetworkDefinition.get_input": ("index",),
        "ITensor.name": None,
        "ITensor.shape": None,
        "IOptimizationProfile.set_shape": ("input", "min", "opt", "max"),
        "IBuilderConfig.add_optimization_profile": ("profile",),
        "IBuilderConfig.set_memory_pool_limit": ("pool", "pool_size"),
        "IBuilderConfig.builder_optimization_level": None,
        "IBuilderConfig.create_timing_cache": ("serialized_timing_cache",),
        "IBuilderConfig.set_timing_cache": ("cache", "ignore_mismatch"),
        "IBuilderConfig.get_timing_cache": (),
        "ITimingCache.combine": ("input_cache", "ignore_mismatch"),
        "ITimingCache.serialize": (),
        "MemoryPoolType.WORKSPACE": None,
        "Runtime": ("logger",),
        "Runtime.deserialize_cuda_engine": ("serialized_engine",),
        "ICudaEngine.num_io_tensors": None,
        "ICudaEngine.get_tensor_name": ("index",),
        "ICudaEngine.get_tensor_mode": ("name",),
        "ICudaEngine.get_tensor_dtype": ("name",),
        "ICudaEngine.get_tensor_shape": ("name",),
        "ICudaEngine.create_execution_context": (),
        "IExecutionContext.set_input_shape": ("name", "shape"),
        "IExecutionContext.get_tensor_shape": ("name",),
        "IExecutionContext.set_tensor_address": ("name", "memory"),
        "IExecutionContext.execute_async_v3": ("stream_handle",),
        "TensorIOMode.INPUT": None,
        "DataType.FLOAT": None,
        "DataType.HALF": None,
    },
    "10": {
        "BuilderFlag.FP16": None,
        "IBuilderConfig.set_flag": ("flag",),
    },
    "11": {},
}


def import_tensorrt():
    """The ``tensorrt`` module, or its ``tensorrt_bindings`` core where only the bindings wheel is installed."""
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if exc.name != "tensorrt":
            raise SegnetError(f"TensorRT does not import ({exc}): {INSTALL}") from None
        try:
            import tensorrt_bindings as trt
        except ModuleNotFoundError:
            raise SegnetError(f"TensorRT is not installed: {INSTALL}") from None
        except ImportError as exc:
            raise SegnetError(f"TensorRT does not import ({exc}): {INSTALL}") from None
    except ImportError as exc:  # e.g. libnvinfer.so.N missing
        raise SegnetError(f"TensorRT does not import ({exc}): {INSTALL}") from None
    return trt


def api_path(trt) -> str:
    """Which version-specific code runs: "10", or "11" for TensorRT 11 and later."""
    return "10" if int(trt.__version__.split(".")[0]) < 11 else "11"


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
        _runtime(trt, _logger(trt))
    except SegnetError as exc:
        return str(exc)
    from .. import cuda

    try:
        cuda.open_cuda().close()
    except SegnetError as exc:
        return f"CUDA is not usable: {exc}"
    return None


class TensorRTBackend:
    """Runs the model as a TensorRT engine on the first CUDA GPU; ``infer`` maps ``[N,3,H,W]`` float32 to
    ``[N,C,gh,gw]`` float32 scores. With ``batch_size`` 1 the engine's batch is 1 and images run one at a
    time; with ``batch_size`` B > 1 the engine has a batch axis with an optimisation profile of 1 to B, and
    one call runs up to B images at once."""

    def __init__(self, model_path: str | Path, input_blob: str = "input_0", output_blob: str = "output_0",
                 precision: str = "fp16", engine_cache: str | Path | None = None, workspace: int = WORKSPACE,
                 optimization_level: int = OPTIMIZATION_LEVEL, status: Callable[[str], None] | None = None,
                 batch_size: int = 1):
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: give 1 or more")
        self.batch_size = batch_size
        self.model_path = Path(model_path)
        self.input_blob, self.output_blob = input_blob, output_blob
        self.precision = precision
        self.engine_cache = engine_cache
        self.workspace, self.optimization_level = workspace, optimization_level
        self.status = status or cache.print_status
        self.cuda = self.logger = self.runtime = self.engine = self.context = self.stream = None
        self.host: dict[str, np.ndarray] = {}
        self.device: dict = {}

    def __enter__(self) -> "TensorRTBackend":
        trt = import_tensorrt()
        try:
            self._open(trt)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.context = self.engine = self.runtime = None  # TensorRT objects go before the memory they use
        self.host, self.device, self.stream = {}, {}, None
        cuda, self.cuda = self.cuda, None
        if cuda is not None:
            cuda.close()

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
                raise SegnetError(f"TensorRT could not run the engine: {_last_error(self.logger)}")
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
            raise SegnetError(f"TensorRT rejected batch size {n} for input '{name}': {_last_error(self.logger)}")
        host_in = _leading(self.host[name], shape)
        host_out = _leading(self.host[self.output.name], tuple(self.context.get_tensor_shape(self.output.name)))
        np.copyto(host_in, batch, casting="same_kind")  # also to FP16 for an engine with FP16 input
        self.cuda.copy_to_device(self.device[name], host_in, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise SegnetError(f"TensorRT could not run the engine: {_last_error(self.logger)}")
        self.cuda.copy_to_host(host_out, self.device[self.output.name], self.stream)
        self.cuda.synchronize(self.stream)  # the one synchronisation per batch
        return host_out.astype(np.float32)  # a copy: the pinned buffer is reused by the next call

    def _open(self, trt) -> None:
        from ..cuda import open_cuda

        inputs, outputs = _onnx_io(self.model_path)
        inp, _ = check_contract(self.model_path, inputs, outputs, self.input_blob, self.output_blob)
        self.cuda = open_cuda()
        gpu = self.cuda.device_info()
        self.logger = _logger(trt)
        runtime = self.runtime = _runtime(trt, self.logger)
        path = api_path(trt)
        precision = "fp32" if self.precision == "fp32" else {"10": "fp16-flag", "11": "fp16-model"}[path]
        settings = (("workspace", self.workspace), ("optimization_level", self.optimization_level))
        if self.batch_size > 1:  # batch 1 keeps its key, so engines cached before batching are still found
            settings += (("batch_profile", (1, self.batch_size, self.batch_size)),)
        if precision == "fp16-model":
            settings += (("fp16_converter", f"{fp16.CONVERTER} {fp16.converter_version()}"),)
        model_sha256 = cache.file_sha256(self.model_path)
        key = cache.EngineKey(model_sha256, trt.__version__, gpu.name, gpu.compute_capability, precision,
                              (1, *inp.shape[1:]), settings)
        folder = cache.cache_dir(self.model_path, self.engine_cache)

        def build() -> bytes:
            onnx_path = self.model_path
            if precision == "fp16-model":
                onnx_path = fp16.fp16_model(self.model_path, folder, model_sha256, input_blob=self.input_blob,
                                            output_blob=self.output_blob, status=lambda line: None)
            model = None
            if self.batch_size > 1:  # a model exported with batch 1 gets a symbolic batch axis
                from .onnxruntime import dynamic_batch

                model = dynamic_batch(onnx_path, self.input_blob, self.output_blob)
            timing = folder / cache.timing_cache_name(trt.__version__, gpu.name, gpu.compute_capability)
            return engine_from_onnx(trt, self.logger, onnx_path, fp16_flag=precision == "fp16-flag",
                                    workspace=self.workspace, optimization_level=self.optimization_level,
                                    timing_cache_path=timing, model=model, max_batch=self.batch_size)

        label = "FP32" if precision == "fp32" else "FP16"
        first = " (converted to an FP16 model first)" if precision == "fp16-model" else ""
        building = f"building {label} TensorRT engine for {self.model_path}{first} — once, takes a minute or two"
        self.engine = cache.load_or_build(folder / key.engine_name(self.model_path), key, build,
                                          lambda data: load_engine(runtime, data, self.logger),
                                          building=building, status=self.status)
        self._bind(trt)
        self.description = f"TensorRT {trt.__version__} ({label}, {gpu.name})"

    def _bind(self, trt) -> None:
        """An execution context with a device buffer for every I/O tensor and pinned host copies."""
        engine = self.engine
        context = self.context = engine.create_execution_context()
        if context is None:
            raise SegnetError(f"TensorRT could not create an execution context: {_last_error(self.logger)}")
        dtypes = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise SegnetError(f"model {self.model_path} has {len(inputs)} inputs; one is supported")
        shapes = {name: tuple(engine.get_tensor_shape(name)) for name in names}
        batch = self.batch_size  # 1, or buffers for the largest batch (infer sets each call's own shape)
        for name in inputs:  # the batch axis of the optimisation profile engine_from_onnx made
            if shapes[name][0] != -1 and batch > 1:
                raise SegnetError(f"the TensorRT engine of {self.model_path} has a fixed batch; "
                                  f"--batch-size {batch} needs a batch axis")
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
                                                 self.input_blob, self.output_blob)


def engine_from_onnx(trt, logger, onnx_path: str | Path, *, fp16_flag: bool, workspace: int = WORKSPACE,
                     optimization_level: int = OPTIMIZATION_LEVEL, timing_cache_path: Path | None = None,
                     model: bytes | None = None, max_batch: int = 1) -> bytes:
    """Parse the ONNX file into an explicit-batch network and build a serialized engine. ``fp16_flag`` sets the
    TensorRT 10 builder flag (on 11 the model itself must be FP16). The shared timing cache at
    ``timing_cache_path`` seeds the build and receives what it measured. ``model``: the serialized model to
    parse instead of the file (``onnx_path`` still names it in errors); ``max_batch``: the largest batch the
    optimisation profile of a dynamic batch axis allows."""
    builder = _created(trt, lambda: trt.Builder(logger), logger, "builder")
    network = builder.create_network(0)  # explicit batch: the only kind in 10 (no flag needed) and 11
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(onnx_path)) if model is None else parser.parse(model)
    if not parsed:
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        reasons = "; ".join(errors) or _last_error(logger)
        raise SegnetError(f"TensorRT cannot parse {onnx_path}: {reasons}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    if fp16_flag and api_path(trt) == "10":
        _allow_fp16_trt10(trt, config)
    _batch_profile(builder, network, config, max_batch)
    seed = cache.read_timing_cache(timing_cache_path) if timing_cache_path else b""
    timing_cache = config.create_timing_cache(seed) or config.create_timing_cache(b"")  # a damaged file: start over
    if not config.set_timing_cache(timing_cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SegnetError(f"TensorRT could not build an engine for {onnx_path}: {_last_error(logger)}")
    if timing_cache_path:
        timing_cache = config.get_timing_cache()

        def merge(current: bytes) -> bytes:
            shared_cache = config.create_timing_cache(current)
            if shared_cache is None or not shared_cache.combine(timing_cache, False):
                return bytes(timing_cache.serialize())  # nothing usable on disk: ours replaces it
            return bytes(shared_cache.serialize())

        cache.merge_timing_cache(timing_cache_path, merge)
    return bytes(plan)


def load_engine(runtime, data: bytes, logger):
    """Deserialize an engine; ``EngineUnusable`` (so the cache rebuilds it) when TensorRT refuses it."""
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise cache.EngineUnusable(f"TensorRT cannot deserialize it: {_last_error(logger)}")
    return engine


def _allow_fp16_trt10(trt, config) -> None:
    config.set_flag(trt.BuilderFlag.FP16)


def _batch_profile(builder, network, config, max_batch: int = 1) -> None:
    """A model with a dynamic batch dimension gets an optimisation profile of batch 1 to ``max_batch``,
    optimised for ``max_batch``."""
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape[1:]:
            raise SegnetError(f"input '{tensor.name}' has shape {list(shape)}; only the batch may be dynamic")
        if shape and shape[0] == -1:
            profile = profile or builder.create_optimization_profile()
            one, most = (1, *shape[1:]), (max_batch, *shape[1:])
            profile.set_shape(tensor.name, one, most, most)
    if profile is None and max_batch > 1:
        raise SegnetError(f"the model has no input with a dynamic batch axis for --batch-size {max_batch}")
    if profile is not None:
        config.add_optimization_profile(profile)


def _leading(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The start of a buffer allocated for the largest batch, seen as ``shape`` (a smaller batch)."""
    size = int(np.prod(shape))
    if size > array.size:
        raise SegnetError(f"TensorRT wants a tensor of shape {list(shape)}, larger than its buffer "
                          f"{list(array.shape)}")
    return array.reshape(-1)[:size].reshape(shape)


def _parser_error(error) -> str:
    where = f" (node {error.node()} '{error.node_name()}', {error.node_operator()})" if error.node() >= 0 else ""
    return f"{error.desc()}{where}"


def _runtime(trt, logger):
    return _created(trt, lambda: trt.Runtime(logger), logger, "runtime")


def _created(trt, factory, logger, what: str):
    """TensorRT's factories return null when the library cannot work here (no GPU or driver it can use, a
    broken install); pybind11 turns that into a TypeError, which becomes a one-line reason."""
    try:
        return factory()
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        raise SegnetError(f"TensorRT {trt.__version__} not usable: it could not create its {what} "
                          f"({_last_error(logger, 'no GPU or driver it can use?')})") from None


def _logger(trt):
    class Logger(trt.ILogger):
        """Keeps TensorRT's errors for our one-line messages instead of printing them."""

        def __init__(self):
            super().__init__()
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def _last_error(logger, default: str = "no reason given") -> str:
    """TensorRT's latest error message (first line), for a one-line SegnetError."""
    return logger.errors[-1].splitlines()[0] if logger.errors else default


def _onnx_io(model_path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The model's inputs and outputs read with onnx, so a wrong blob name fails before a long build."""
    try:
        import onnx
    except ImportError:
        raise SegnetError(f"the TensorRT backend needs the onnx package: {INSTALL}") from None
    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises protobuf's and its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegnetError(f"cannot load model {model_path}: {reason}") from None
    weights = {t.name for t in graph.initializer}

    def info(value) -> TensorInfo:
        dims = value.type.tensor_type.shape.dim
        return TensorInfo(value.name, tuple(d.dim_value if d.dim_value > 0 else None for d in dims))

    return [info(v) for v in graph.input if v.name not in weights], [info(v) for v in graph.output]
