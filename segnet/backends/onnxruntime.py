"""onnxruntime backend: CPU everywhere, the CUDA execution provider where onnxruntime-gpu sees a GPU. With
``precision="fp16"`` it runs the checked FP16 copy of the model (``fp16.py``), with ``precision="int8"`` its
calibrated INT8 copy (``int8.py``), instead of the model itself.

On the CUDA provider the segmenter fuses pre-processing and the class map into the graph (``fuse``,
``backends/fused.py``) and ``infer_images`` runs it: the uint8 images are copied into device buffers bound
to the session (I/O binding), the stretch indices stay on the device, and each batch shape's run is
captured once as a CUDA graph and then replayed. ``CUDA_PROVIDER_OPTIONS``, ``CUDA_GRAPHS`` and
``IO_BINDING`` hold the settings measured best on the GPU machine (BENCHMARKS.md, issue 16).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegnetError
from .base import TensorInfo, check_contract, onnx_io
from .fused import CLASS_MAP, COLS, IMAGE, ROWS, FusedSpec, fused_model
from .fused import indices as fused_indices

log = logging.getLogger(__name__)

#: The CUDA provider's settings (onnxruntime's names). cuDNN tries every convolution algorithm once per
#: shape (EXHAUSTIVE) with the largest workspace, and may run convolutions channels-last (prefer_nhwc).
CUDA_PROVIDER_OPTIONS: dict[str, str] = {
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "cudnn_conv_use_max_workspace": "1",
    "prefer_nhwc": "1",
}
#: Fused runs on CUDA are captured as a CUDA graph per batch shape, then replayed (through bound buffers).
CUDA_GRAPHS = True
#: Bound device buffers without CUDA graphs (measured no faster than ``session.run`` with host arrays).
IO_BINDING = False
#: Batch shapes (images, height, width) that keep bound device buffers (and a CUDA graph); others run plain.
MAX_BOUND_SHAPES = 8


class OnnxRuntimeBackend:
    """Runs an ONNX model with onnxruntime; ``infer`` maps ``[N,3,H,W]`` to ``[N,C,gh,gw]`` scores."""

    def __init__(self, model_path: str | Path, input_blob: str | None = None, output_blob: str | None = None,
                 providers: list[str] | None = None, batch_size: int = 1, threads: int = 0, precision: str = "fp32",
                 cache: str | Path | None = None):
        self.model_path = Path(model_path)
        self.precision = precision  # "fp16": the checked FP16 copy, made in ``cache`` (see cache_dir.cache_dir)
        self.cache = cache
        self.input_blob = input_blob
        self.output_blob = output_blob
        self.providers = providers
        self.batch_size = batch_size
        self.threads = threads  # onnxruntime's intra-op threads; 0: one per core
        self.session: Any = None

    def __enter__(self) -> OnnxRuntimeBackend:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegnetError("onnxruntime is not installed: pip install onnxruntime "
                              "(or onnxruntime-gpu for NVIDIA GPUs)") from None
        self._ort = ort
        self.fused: FusedSpec | None = None
        self._graphs = self._cuda = False
        self._bound: dict[tuple[int, ...], _Bound] = {}
        self._indices: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        try:
            path = self._fp16_copy() if self.precision == "fp16" else \
                self._int8_copy() if self.precision == "int8" else self.model_path
            model: str | bytes = str(path)
            if self.batch_size > 1:  # the named (or only) input and output get a symbolic batch axis
                inp, out = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob,
                                          self.output_blob)
                model = dynamic_batch(path, inp.name, out.name)
            self.session = self._session(model)
            self._cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
            self._check()
        except SegnetError:
            raise
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SegnetError(f"cannot load model {self.model_path}: {_first_line(exc)}") from None
        self._source = path  # what fuse() wraps: the model, or its FP16 copy
        note = {"fp16": ", FP16 model", "int8": ", INT8 model"}.get(self.precision, "")
        self.description = f"onnxruntime ({self.session.get_providers()[0]}{note})"
        return self

    def _fp16_copy(self) -> Path:
        from . import fp16
        from .cache_dir import cache_dir

        inp, out = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob, self.output_blob)
        providers = list(self.providers or _default_providers(self._ort))
        return fp16.fp16_model(self.model_path, cache_dir(self.model_path, self.cache), input_blob=inp.name,
                               output_blob=out.name, providers=providers)

    def _int8_copy(self) -> Path:
        from . import int8
        from .cache_dir import cache_dir

        inp, _ = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob, self.output_blob)
        return int8.int8_model(self.model_path, cache_dir(self.model_path, self.cache, beside=False),
                               int8.preparer(self.model_path, inp.shape), input_blob=inp.name).path

    def _session(self, model: str | bytes, graphs: bool = False):
        ort = self._ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would break our one-line output
        options.intra_op_num_threads = self.threads
        providers: list = list(self.providers or _default_providers(ort))
        if "CUDAExecutionProvider" in providers:
            cuda = dict(CUDA_PROVIDER_OPTIONS, **({"enable_cuda_graph": "1"} if graphs else {}))
            providers[providers.index("CUDAExecutionProvider")] = ("CUDAExecutionProvider", cuda)
        return ort.InferenceSession(model, options, providers=providers)

    @property
    def on_cuda(self) -> bool:
        return self.session is not None and self._cuda

    def _check(self) -> None:
        inputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_inputs()]
        outputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_outputs()]
        self.input, self.output = check_contract(self.model_path, inputs, outputs,
                                                 self.input_blob, self.output_blob)

    def __exit__(self, *exc) -> None:
        self._bound = {}
        self.session = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            (scores,) = self.session.run([self.output.name], {self.input.name: batch})
        except Exception as exc:  # onnxruntime's own exception types: shapes the model refuses, kernels that fail
            raise SegnetError(f"model {self.model_path} cannot run on an input of shape {list(batch.shape)}: "
                              f"{_first_line(exc)}") from None
        return scores

    def fuse(self, spec: FusedSpec) -> None:
        """Run the network with the pre-processing and class map of ``spec`` around it from now on
        (``infer_images``); the plain session is replaced."""
        import onnx

        try:
            model = fused_model(onnx.load(str(self._source)), self.input.name, self.output.name, spec)
            serialized = model.SerializeToString()
            graphs = CUDA_GRAPHS and self.on_cuda
            try:
                session = self._session(serialized, graphs)
            except Exception:
                if not graphs:
                    raise
                graphs = False  # a graph onnxruntime cannot capture whole: run it without
                session = self._session(serialized)
            self.session, self._fused_model = session, serialized
        except SegnetError:
            raise
        except Exception as exc:
            raise SegnetError(f"cannot load model {self.model_path} with pre-processing fused: "
                              f"{_first_line(exc)}") from None
        self.fused, self._graphs = spec, graphs
        self._bound = {}

    def infer_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``images`` uint8 ``[N, H, W, 3]`` RGB -> (class maps uint8 ``[N, gh, gw]``, scores float32
        ``[N, C, gh, gw]``), through the fused graph (``fuse`` first)."""
        if self.fused is None:
            raise SegnetError("infer_images needs the fused graph: call fuse first")
        n, h, w = images.shape[:3]
        key = (h, w)
        if key not in self._indices:
            self._indices[key] = fused_indices(h, w, self.fused)
        rows, cols = self._indices[key]
        if (self._graphs or IO_BINDING) and self.on_cuda and None not in self.output.shape[1:]:
            bound = self._bound.get((n, h, w))
            if bound is None and len(self._bound) < MAX_BOUND_SHAPES:
                bound = self._bound[(n, h, w)] = _Bound(self, images.shape, rows, cols, len(self._bound))
            if bound is not None:
                try:
                    return bound.run(images)
                except Exception as exc:  # onnxruntime's own types
                    if not self._graphs:
                        raise
                    log.debug("running without CUDA graphs: %s", _first_line(exc))
                    self._graphs, self._bound = False, {}  # capture failed: the same graph, run plainly
                    self.session = self._session(self._fused_model)
                    return self.infer_images(images)
        run_options = None
        if self._graphs:  # a shape without bound buffers: no capture, no replay
            run_options = self._ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", "-1")
        class_map, scores = self.session.run([CLASS_MAP, self.output.name],
                                             {IMAGE: images, ROWS: rows, COLS: cols}, run_options)
        return class_map, scores


class _Bound:
    """Device buffers for one batch shape, bound to the session once: the image buffer is refilled from
    the host per call, the stretch indices stay, and the outputs are copied back. With CUDA graphs, the
    first runs capture the graph and later ones replay it (the buffers never move)."""

    def __init__(self, backend: OnnxRuntimeBackend, shape: tuple[int, ...], rows: np.ndarray, cols: np.ndarray,
                 graph_id: int):
        ort = backend._ort
        value = ort.OrtValue
        n = shape[0]
        _, c, gh, gw = backend.output.shape
        self.image = value.ortvalue_from_shape_and_type(list(shape), np.uint8, "cuda", 0)
        self.rows = value.ortvalue_from_numpy(rows, "cuda", 0)
        self.cols = value.ortvalue_from_numpy(cols, "cuda", 0)
        self.class_map = value.ortvalue_from_shape_and_type([n, gh, gw], np.uint8, "cuda", 0)
        self.scores = value.ortvalue_from_shape_and_type([n, c, gh, gw], np.float32, "cuda", 0)
        self.binding = backend.session.io_binding()
        self.binding.bind_ortvalue_input(IMAGE, self.image)
        self.binding.bind_ortvalue_input(ROWS, self.rows)
        self.binding.bind_ortvalue_input(COLS, self.cols)
        self.binding.bind_ortvalue_output(CLASS_MAP, self.class_map)
        self.binding.bind_ortvalue_output(backend.output.name, self.scores)
        self.session = backend.session
        self.run_options = ort.RunOptions()
        if backend._graphs:
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.image.update_inplace(np.ascontiguousarray(images))
        self.session.run_with_iobinding(self.binding, self.run_options)
        return self.class_map.numpy(), self.scores.numpy()


def dynamic_batch(path: Path, input_blob: str, output_blob: str) -> bytes:
    """The model with a symbolic batch axis on the named input and output, serialised, so one call can
    run several images (the FCN networks are fully convolutional; jetson exports fix the batch at 1).
    Intermediate shapes recorded in the graph are dropped: onnxruntime infers them again."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name in (input_blob, output_blob) and len(dims) == 4:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model.SerializeToString()


def _default_providers(ort) -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and _cuda_device_visible():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _cuda_device_visible() -> bool:
    """True when the NVIDIA driver reports at least one GPU (checked without any CUDA Python package)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def _first_line(exc: BaseException) -> str:
    """onnxruntime's message without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix, one line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.rsplit(" : ", 1)[-1] if line.startswith("[ONNXRuntimeError]") else line


def _dims(shape) -> tuple[int | None, ...]:
    """Fixed sizes as ints (0 too: the contract check refuses it), symbolic ones as None."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
