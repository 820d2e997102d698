"""An FP16 copy of an FP32 ONNX model, for TensorRT 11, TensorRT-RTX and onnxruntime.

TensorRT 11 and TensorRT-RTX networks are strongly typed: precision comes from the model, and the FP16 builder
flag is gone. So the model is converted first with onnxruntime's maintained converter
(``onnxruntime.transformers.float16``), keeping FP32 inputs and outputs, and the copy is used only after
onnxruntime has shown that the FP32 model's activations fit FP16's range and that the copy's class map
agrees with the FP32 model's. Copies are cached by the source model's hash and the converter's version.
onnxruntime runs the same copy for ``precision="fp16"`` (to compare precisions on any machine; its CPU provider
computes many FP16 operators in FP32, so there it shows the effect of FP16 weights and conversion, not of FP16
arithmetic).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import SegnetError, option
from ..util import atomic_write, file_sha256

log = logging.getLogger(__name__)

CONVERTER = "onnxruntime.transformers.float16"
#: Least fraction of grid cells whose class must agree; a pick within NEAR_TIE of the score range of the
#: best class counts as agreeing (on FCN-ResNet18 with random weights, 0.7% of cells flip at such ties).
MIN_AGREEMENT = 0.99
NEAR_TIE = 0.02
SAMPLES = 3
FP16_MAX = 65504.0


def converter_version() -> str:
    """The converter ships inside onnxruntime, so its version is onnxruntime's."""
    import onnxruntime

    return onnxruntime.__version__


def fp16_model_path(model_path: str | Path, folder: Path, model_sha256: str) -> Path:
    return folder / f"{Path(model_path).stem}.fp16.{model_sha256[:16]}.ort{converter_version()}.onnx"


def fp16_model(model_path: str | Path, folder: Path, model_sha256: str | None = None, *,
               input_blob: str = "input_0", output_blob: str = "output_0", providers: list[str] | None = None
               ) -> Path:
    """The checked FP16 copy of ``model_path`` in ``folder``, converted on first use (under a file lock, so
    concurrent processes convert once)."""
    from filelock import FileLock

    model_sha256 = model_sha256 or file_sha256(model_path)
    out = fp16_model_path(model_path, folder, model_sha256)
    with FileLock(str(out) + ".lock"):
        if out.exists():
            return out
        log.info(f"converting {model_path} to FP16 with {CONVERTER} (once)")
        try:
            converted = convert_to_fp16(model_path)
            check_fp16(Path(model_path).read_bytes(), converted, input_blob, output_blob, providers=providers,
                       name=str(model_path))
        except SegnetError:
            raise
        except Exception as exc:  # onnx and onnxruntime raise their own types for a model they cannot handle
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SegnetError(f"cannot convert {model_path} to FP16 (onnxruntime cannot run it: {reason}); "
                              f"use {option('precision', 'fp32')} if the model is fine") from None
        atomic_write(out, converted)
    return out


def convert_to_fp16(model_path: str | Path) -> bytes:
    """FP16 weights and compute with FP32 inputs and outputs (casts at the edges), as serialized ONNX."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise SegnetError(f"converting the model to FP16 needs onnx and onnxruntime ({exc}): "
                          f"pip install onnx onnxruntime, or use {option('precision', 'fp32')}") from None
    model = onnx.load(str(model_path))
    return convert_float_to_float16(model, keep_io_types=True).SerializeToString()


def check_fp16(fp32_model: bytes, fp16_model: bytes, input_blob: str = "input_0", output_blob: str = "output_0",
               *, providers: list[str] | None = None, name: str = "the model") -> None:
    """Refuse an FP16 copy whose FP32 original has activations beyond FP16's range, or whose class map
    differs. The range is measured on the FP32 model because onnxruntime's CPU provider computes many FP16
    operators in FP32, where an overflow would not show."""
    largest = largest_activation(fp32_model, input_blob, providers=providers)
    if largest > FP16_MAX:
        raise SegnetError(f"{name} has activations up to {largest:.3g}, beyond what FP16 holds ({FP16_MAX:g}): "
                          f"use {option('precision', 'fp32')}")
    agreement = argmax_agreement(fp32_model, fp16_model, input_blob, output_blob, providers=providers)
    if agreement < MIN_AGREEMENT:
        raise SegnetError(f"the FP16 conversion of {name} picks a different class than FP32 in "
                          f"{100 * (1 - agreement):.1f}% of grid cells: use {option('precision', 'fp32')}")


def argmax_agreement(fp32_model: bytes, fp16_model: bytes, input_blob: str = "input_0",
                     output_blob: str = "output_0", *, providers: list[str] | None = None) -> float:
    """Fraction of grid cells where the FP16 model picks the FP32 model's class, or one whose FP32 score is
    within ``NEAR_TIE`` of the score range below it (FP16 rounding may flip near-ties, nothing more), over
    the sample inputs. Non-finite FP16 scores count as different."""
    ref, half = (_session(m, providers) for m in (fp32_model, fp16_model))
    same = total = 0
    for x in _samples(ref, input_blob):
        a, b = (s.run([output_blob], {input_blob: x})[0] for s in (ref, half))
        picked = np.take_along_axis(a, np.nan_to_num(b).argmax(axis=1)[:, None], axis=1)[:, 0]
        ok = np.isfinite(b).all(axis=1) & (picked >= a.max(axis=1) - NEAR_TIE * float(np.ptp(a)))
        same, total = same + int(ok.sum()), total + ok.size
    return same / total


def largest_activation(fp32_model: bytes, input_blob: str = "input_0", *,
                       providers: list[str] | None = None) -> float:
    """The largest magnitude of any float tensor the model computes, over the sample inputs."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(fp32_model))
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(v for v in model.graph.value_info
                              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in outputs)
    session = _session(model.SerializeToString(), providers)
    return max(float(np.abs(t).max(initial=0)) for x in _samples(session, input_blob)
               for t in session.run(None, {input_blob: x}))


def _samples(session, input_blob: str, count: int = SAMPLES, seed: int = 0):
    """Inputs drawn like normalised images (a standard normal); the first is all zeros."""
    (inp,) = [i for i in session.get_inputs() if i.name == input_blob] or [None]
    if inp is None:
        raise SegnetError(f"model has no input named '{input_blob}' (choose one with {option('input_blob')})")
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    rng = np.random.default_rng(seed)
    yield np.zeros(shape, np.float32)
    for _ in range(count - 1):
        yield rng.standard_normal(shape, dtype=np.float32)


def _session(model: bytes, providers: list[str] | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=providers or _providers(ort))


def _providers(ort) -> list[str]:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
