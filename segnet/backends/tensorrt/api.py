"""TensorRT itself: importing it, which version path runs, its logger, and every TensorRT name segnet uses.

Rules that keep the TensorRT code checkable against the real TensorRT bindings (tests/backends/tensorrt/api):
- ``TRT_API`` lists every TensorRT name used anywhere in this sub-package, with the arguments passed, per
  version path; functions named ``*_trt10`` / ``*_trt11`` run on that version alone and are only called under
  ``if ... == "10"`` (or ``"11"``); everything else runs on both.
- TensorRT objects live in variables named as in ``TRT_VARIABLES`` (``self.context`` counts too).
Only this sub-package imports TensorRT or CUDA.
"""

from __future__ import annotations

from ...errors import SegnetError

INSTALL = "pip install 'segnet[tensorrt]'"

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


def create_runtime(trt, logger):
    return created(trt, lambda: trt.Runtime(logger), logger, "runtime")


def created(trt, factory, logger, what: str):
    """TensorRT's factories return null when the library cannot work here (no GPU or driver it can use, a
    broken install); pybind11 turns that into a TypeError, which becomes a one-line reason."""
    try:
        return factory()
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        raise SegnetError(f"TensorRT {trt.__version__} not usable: it could not create its {what} "
                          f"({last_error(logger, 'no GPU or driver it can use?')})") from None


def make_logger(trt):
    class Logger(trt.ILogger):  # type: ignore[name-defined]  # a class of the imported module
        """Keeps TensorRT's errors for our one-line messages instead of printing them."""

        def __init__(self):
            super().__init__()
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def last_error(logger, default: str = "no reason given") -> str:
    """TensorRT's latest error message (first line), for a one-line SegnetError."""
    return logger.errors[-1].splitlines()[0] if logger.errors else default


