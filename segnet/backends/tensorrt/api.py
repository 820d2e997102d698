"""TensorRT itself: which flavour imports, which version path runs, its logger, and every TensorRT name segnet uses.

Three flavours run the same backend code:

- ``tensorrt`` 10.x (Jetson, older desktops and servers): version path "10";
- ``tensorrt`` 11.x (strongly typed networks, no FP16 builder flag): version path "11";
- ``tensorrt_rtx``, TensorRT for RTX 1.7+ (RTX and RTX PRO cards, A100, Blackwell; not Hopper): version path
  "rtx". Its API is TensorRT 11's for every name segnet uses, plus compute-capability targets, runtime
  configurations with a runtime cache of JIT-compiled kernels, and engine validity checks. Its builder runs
  without a GPU.

Rules that keep the TensorRT code checkable against the real bindings (tests/backends/tensorrt/api):
- ``TRT_API`` lists every TensorRT name used anywhere in this sub-package, with the arguments passed, per
  version path; functions named ``*_trt10`` / ``*_trt11`` / ``*_rtx`` run on that path alone and are only
  called under ``if ... == "10"`` (or ``"11"``, ``"rtx"``); everything else runs on every path.
- TensorRT objects live in variables named as in ``TRT_VARIABLES`` (``self.context`` counts too).
Only this sub-package imports TensorRT or CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import re

from ...errors import SegnetError

log = logging.getLogger(__name__)

INSTALL = "pip install 'segnet[tensorrt]'"
INSTALL_RTX = "pip install 'segnet[tensorrt-rtx]'"
#: The oldest release of each flavour segnet's code is written for.
MINIMUM = {"tensorrt": (10,), "tensorrt_rtx": (1, 7)}

#: Compute capabilities TensorRT-RTX 1.7 runs on. 7.5 (Turing) only with an engine built for it; a build
#: without targets is portable to the others (``PORTABLE``). Hopper (9.0) and Volta are not among them.
RTX_COMPUTE_CAPABILITIES = ((7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1))
PORTABLE = tuple(cc for cc in RTX_COMPUTE_CAPABILITIES if cc != (7, 5))

TRT_VARIABLES = {
    "builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig", "parser": "OnnxParser",
    "error": "ParserError", "tensor": "ITensor", "profile": "IOptimizationProfile", "timing_cache": "ITimingCache",
    "shared_cache": "ITimingCache", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
    "runtime_config": "IRuntimeConfig", "runtime_cache": "IRuntimeCache",
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
        "DataType.UINT8": None,
        "DataType.INT64": None,
    },
    "10": {
        "BuilderFlag.FP16": None,
        "BuilderFlag.INT8": None,
        "IBuilderConfig.set_flag": ("flag",),
    },
    "11": {},
    "rtx": {
        "ComputeCapability.SM75": None,
        "ComputeCapability.SM80": None,
        "ComputeCapability.SM86": None,
        "ComputeCapability.SM89": None,
        "ComputeCapability.SM120": None,
        "ComputeCapability.SM121": None,
        "IBuilderConfig.num_compute_capabilities": None,
        "IBuilderConfig.set_compute_capability": ("compute_capability", "index"),
        "Runtime.get_engine_validity": ("buffer",),
        "EngineValidity.INVALID": None,
        "EngineInvalidityDiagnostics.VERSION_MISMATCH": None,
        "EngineInvalidityDiagnostics.MALFORMED_ENGINE": None,
        "EngineInvalidityDiagnostics.UNSUPPORTED_CC": None,
        "EngineInvalidityDiagnostics.OLD_CUDA_DRIVER": None,
        "EngineInvalidityDiagnostics.OLD_CUDA_RUNTIME": None,
        "EngineInvalidityDiagnostics.INSUFFICIENT_GPU_MEMORY": None,
        "EngineInvalidityDiagnostics.CUDA_ERROR": None,
        "ICudaEngine.create_runtime_config": (),
        "ICudaEngine.create_execution_context": ("runtime_config",),
        "IRuntimeConfig.dynamic_shapes_kernel_specialization_strategy": None,
        "DynamicShapesKernelSpecializationStrategy.EAGER": None,
        "IRuntimeConfig.create_runtime_cache": (),
        "IRuntimeConfig.set_runtime_cache": ("cache",),
        "IRuntimeCache.deserialize": ("blob",),
        "IRuntimeCache.serialize": (),
    },
}


class NotInstalled(SegnetError):
    """The flavour asked for is not installed at all (as opposed to installed and broken)."""


def import_tensorrt(flavour: str = "auto"):
    """The module of ``flavour``: ``tensorrt`` (or its ``tensorrt_bindings`` core where only the bindings wheel
    is installed) or ``tensorrt_rtx`` (or ``tensorrt_rtx_bindings``). ``auto``: TensorRT when it is installed,
    else TensorRT-RTX."""
    if flavour == "tensorrt_rtx":
        return _import("tensorrt_rtx", "tensorrt_rtx_bindings", "TensorRT-RTX", INSTALL_RTX)
    try:
        return _import("tensorrt", "tensorrt_bindings", "TensorRT", INSTALL)
    except NotInstalled:
        if flavour != "auto":
            raise
    try:
        return _import("tensorrt_rtx", "tensorrt_rtx_bindings", "TensorRT-RTX", INSTALL_RTX)
    except NotInstalled:
        raise NotInstalled(f"TensorRT is not installed: {INSTALL} (or {INSTALL_RTX} for TensorRT for RTX)") from None


def _import(name: str, core: str, product: str, install: str):
    import importlib

    for module in (name, core):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module is there but something it needs is not
                raise SegnetError(f"{product} does not import ({exc}): {install}") from None
        except Exception as exc:  # e.g. its native library missing (ImportError, OSError)
            raise SegnetError(f"{product} does not import ({first_line(exc)}): {install}") from None
    raise NotInstalled(f"{product} is not installed: {install}")


def flavour_of(trt) -> str:
    """``"tensorrt"`` or ``"tensorrt_rtx"``: which product the imported module is."""
    return "tensorrt_rtx" if getattr(trt, "__name__", "").startswith("tensorrt_rtx") else "tensorrt"


def product(trt) -> str:
    """``"TensorRT 10.16.1.11"`` or ``"TensorRT-RTX 1.7.1.116"``, for messages."""
    name = "TensorRT-RTX" if flavour_of(trt) == "tensorrt_rtx" else "TensorRT"
    return f"{name} {getattr(trt, '__version__', '(version unknown)')}"


def install_line(trt) -> str:
    return INSTALL_RTX if flavour_of(trt) == "tensorrt_rtx" else INSTALL


def version_problem(trt) -> str | None:
    """Why this release of its flavour is too old for segnet's code (one line), or None."""
    minimum = MINIMUM[flavour_of(trt)]
    numbers = tuple(int(n) for n in re.findall(r"\d+", str(getattr(trt, "__version__", "")))[:len(minimum)])
    if len(numbers) == len(minimum) and numbers >= minimum:
        return None
    needed = ".".join(map(str, minimum))
    return f"{product(trt)} is too old, {needed} or newer is needed: {install_line(trt)}"


def api_path(trt) -> str:
    """Which version-specific code runs: "10", "11" (TensorRT 11 and later) or "rtx" (TensorRT-RTX)."""
    if flavour_of(trt) == "tensorrt_rtx":
        return "rtx"
    return "10" if int(trt.__version__.split(".")[0]) < 11 else "11"


def unsupported_gpu(trt, gpu_name: str, compute_capability: tuple[int, int]) -> str | None:
    """Why this flavour cannot run on the GPU (one line), or None. Only TensorRT-RTX leaves GPUs out."""
    if flavour_of(trt) != "tensorrt_rtx" or tuple(compute_capability) in RTX_COMPUTE_CAPABILITIES:
        return None
    major, minor = compute_capability
    supported = ", ".join(f"{a}.{b}" for a, b in RTX_COMPUTE_CAPABILITIES)
    return (f"{product(trt)} does not support this GPU ({gpu_name}, compute capability {major}.{minor}): it runs "
            f"on compute capability {supported} (RTX and RTX PRO cards, A100, Blackwell); other NVIDIA GPUs need "
            f"TensorRT: {INSTALL}")


def sm(compute_capability: tuple[int, int]) -> str:
    return f"sm{compute_capability[0]}{compute_capability[1]}"


def parse_targets(text: str) -> tuple[tuple[int, int], ...]:
    """``"sm89,sm120"`` (or ``"8.9,12.0"``) -> ``((8, 9), (12, 0))``: compute capabilities TensorRT-RTX builds
    for, sorted, each one it supports."""
    from ...errors import UsageError, option

    known = {sm(cc): cc for cc in RTX_COMPUTE_CAPABILITIES} | {f"{a}.{b}": (a, b) for a, b in RTX_COMPUTE_CAPABILITIES}
    words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
    unknown = [w for w in words if w not in known]
    if not words or unknown:
        choices = ", ".join(sm(cc) for cc in RTX_COMPUTE_CAPABILITIES)
        raise UsageError(f"{option('target', text)}: TensorRT-RTX builds for {choices} (several joined by ','); "
                         "Hopper (sm90) is not supported")
    return tuple(sorted({known[w] for w in words}))


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
        raise SegnetError(f"{product(trt)} not usable: it could not create its {what} "
                          f"({last_error(logger, 'no GPU or driver it can use?')})") from None


@contextlib.contextmanager
def one_line_errors(trt, doing: str):
    """Whatever fails inside TensorRT's bindings while ``doing`` something (an AttributeError or TypeError from a
    release whose API differs from the one segnet was written for, a RuntimeError from the library) becomes a
    one-line SegnetError, so ``auto`` falls back instead of crashing. The traceback goes to the debug log."""
    try:
        yield
    except SegnetError:
        raise
    except Exception as exc:
        log.debug("%s failed while %s", product(trt), doing, exc_info=True)
        raise SegnetError(f"{product(trt)} failed while {doing}: {type(exc).__name__}: {first_line(exc)} "
                          f"(a release segnet does not know? {install_line(trt)})") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def first_error(logger, since: int = 0, default: str = "no reason given") -> str:
    """The first error TensorRT logged after it had logged ``since`` of them (the cause, usually: later ones are
    often consequences), first line only."""
    new = logger.errors[since:]
    return new[0].splitlines()[0] if new else default
