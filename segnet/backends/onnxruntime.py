"""onnxruntime backend: CPU everywhere, the CUDA execution provider where onnxruntime-gpu sees a GPU. With
``precision="fp16"`` it runs the checked FP16 copy of the model (``fp16.py``) instead of the model itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegnetError
from .base import TensorInfo, check_contract, onnx_io


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
        providers = self.providers or _default_providers(ort)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would break our one-line output
        options.intra_op_num_threads = self.threads
        try:
            path = self._fp16_copy(providers) if self.precision == "fp16" else self.model_path
            model: str | bytes = str(path)
            if self.batch_size > 1:  # the named (or only) input and output get a symbolic batch axis
                inp, out = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob,
                                          self.output_blob)
                model = dynamic_batch(path, inp.name, out.name)
            self.session = ort.InferenceSession(model, options, providers=providers)
            self._check()
        except SegnetError:
            raise
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SegnetError(f"cannot load model {self.model_path}: {_first_line(exc)}") from None
        fp16_note = ", FP16 model" if self.precision == "fp16" else ""
        self.description = f"onnxruntime ({self.session.get_providers()[0]}{fp16_note})"
        return self

    def _fp16_copy(self, providers: list[str]) -> Path:
        from . import fp16
        from .cache_dir import cache_dir

        inp, out = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob, self.output_blob)
        return fp16.fp16_model(self.model_path, cache_dir(self.model_path, self.cache), input_blob=inp.name,
                               output_blob=out.name, providers=providers)

    def _check(self) -> None:
        inputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_inputs()]
        outputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_outputs()]
        self.input, self.output = check_contract(self.model_path, inputs, outputs,
                                                 self.input_blob, self.output_blob)

    def __exit__(self, *exc) -> None:
        self.session = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            (scores,) = self.session.run([self.output.name], {self.input.name: batch})
        except Exception as exc:  # onnxruntime's own exception types: shapes the model refuses, kernels that fail
            raise SegnetError(f"model {self.model_path} cannot run on an input of shape {list(batch.shape)}: "
                              f"{_first_line(exc)}") from None
        return scores


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
