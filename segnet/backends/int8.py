"""INT8 copies of an FP32 ONNX model, calibrated on images with onnxruntime's static quantization.

Two forms of one calibration:
- ``qoperator`` for onnxruntime's CPU provider: QLinearConv and friends, U8 activations, S8 per-channel weights
  with a 7-bit range (``reduce_range``). Without AVX-512 VNNI, onnxruntime's U8xS8 kernels add pairs of
  products in 16 bits, which saturate on a network's first layers; 7-bit weights cannot (on the 2-core AVX2
  machine, full 8-bit weights lost 0.6 point of CamVid pixel accuracy, 7-bit ones none; BENCHMARKS.md).
  QDQ was measured no faster on CPU (issue 21), so onnxruntime gets this form.
- ``qdq`` for TensorRT (explicit quantization): QuantizeLinear/DequantizeLinear pairs, symmetric S8
  activations and S8 per-channel weights, which is what TensorRT fuses into INT8 layers.

Calibration runs the FP32 model on the images, pre-processed exactly as a run prepares them, and keeps each
tensor's range (MinMax). A copy is cached by the source model's hash, its form and onnxruntime's version, in
the user cache (``cache_dir(...)``: never in the package or the checkout), with a JSON record
beside it saying how it was calibrated (images, count, method, settings). A model folder may ship its own
calibration images in ``calibration/`` (the default network ships 16 CamVid *train* images, never val or test):
then its copy is made on first use; any other model is calibrated with ``segnet-build-engine --calibrate DIR``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SegnetError, UsageError, option
from ..image_io import READ_EXTENSIONS, read_image
from ..progress import progress
from ..util import atomic_write, file_sha256

log = logging.getLogger(__name__)

FORMS = ("qoperator", "qdq")
METHOD = "minmax"
#: Fewer images than this give ranges that a next image easily exceeds: a usage error.
MIN_IMAGES = 8
#: More are taken evenly spread over the folder (MinMax gains little from more, and each costs a network run).
MAX_IMAGES = 64
#: Where a model folder keeps the images its INT8 copy is calibrated on by default.
SHIPPED_FOLDER = "calibration"
#: Settings each form is made with (recorded in its JSON; a change here changes what a copy is).
SETTINGS = {
    "qoperator": {"format": "QOperator", "activations": "uint8 (asymmetric)",
                  "weights": "int8 per-channel, 7-bit range (reduce_range)"},
    "qdq": {"format": "QDQ", "activations": "int8 (symmetric)", "weights": "int8 per-channel (symmetric)"},
}


@dataclass(frozen=True)
class Int8Copy:
    """An INT8 copy in the cache and how it was calibrated (the JSON beside it)."""

    path: Path
    record: dict
    made: bool  # False: found in the cache
    seconds: float

    @property
    def record_path(self) -> Path:
        return record_path(self.path)


def quantizer_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def int8_model_path(model_path: str | Path, folder: Path, model_sha256: str, form: str = "qoperator") -> Path:
    return folder / f"{Path(model_path).stem}.int8-{form}.{model_sha256[:16]}.ort{quantizer_version()}.onnx"


def record_path(copy: Path) -> Path:
    return copy.with_suffix(".json")


def shipped_images(model_path: str | Path) -> Path | None:
    """The calibration folder a model folder ships (``calibration/`` beside the model), if any."""
    folder = Path(model_path).resolve().parent / SHIPPED_FOLDER
    return folder if folder.is_dir() else None


def calibration_images(folder: str | Path) -> list[Path]:
    """The images of ``folder`` calibration uses: sorted by name, at most ``MAX_IMAGES`` evenly spread; fewer
    than ``MIN_IMAGES`` is a usage error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{option('calibrate', str(folder))}: not a folder of images")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in READ_EXTENSIONS and p.is_file())
    if len(found) < MIN_IMAGES:
        raise UsageError(f"{option('calibrate', str(folder))}: {len(found)} image{'s' * (len(found) != 1)}; INT8 "
                         f"calibration needs at least {MIN_IMAGES} images like those the network will see")
    if len(found) > MAX_IMAGES:
        step = len(found) / MAX_IMAGES
        found = [found[int(i * step)] for i in range(MAX_IMAGES)]
    return found


def int8_model(model_path: str | Path, folder: Path, prepare: Callable[[np.ndarray], np.ndarray], *,
               images: str | Path | None = None, form: str = "qoperator", input_blob: str = "input_0",
               model_sha256: str | None = None) -> Int8Copy:
    """The INT8 copy of ``model_path`` of ``form`` in ``folder``. With ``images`` (a folder) it is calibrated on
    them, replacing any copy in the cache; without, the cached copy is used, or one is calibrated on the images
    the model folder ships (``calibration/``), or the error says how to calibrate one. ``prepare`` turns an RGB
    image into the model's input tensor, as a run does. Under a file lock: concurrent processes calibrate once."""
    from filelock import FileLock

    if form not in FORMS:
        raise SegnetError(f"unknown INT8 form {form!r}: one of {', '.join(FORMS)}")
    model_sha256 = model_sha256 or file_sha256(model_path)
    out = int8_model_path(model_path, folder, model_sha256, form)
    with FileLock(str(out) + ".lock"):
        if images is None and out.exists() and record_path(out).exists():
            return Int8Copy(out, json.loads(record_path(out).read_text()), False, 0.0)
        source = Path(images) if images is not None else shipped_images(model_path)
        if source is None:
            raise SegnetError(f"{model_path} has no INT8 copy yet: calibrate one on images like those it will see "
                              f"with segnet-build-engine --model {model_path} --calibrate FOLDER (at least "
                              f"{MIN_IMAGES} images), or use {option('precision', 'fp32')}")
        files = calibration_images(source)
        start = time.perf_counter()
        log.info(f"calibrating the INT8 copy ({form}) of {model_path} on {len(files)} images of {source}"
                 f"{' (once)' if images is None else ''}")
        quantized = quantize(model_path, files, prepare, form=form, input_blob=input_blob)
        record = {"model": Path(model_path).name, "model_sha256": model_sha256, "form": form, **SETTINGS[form],
                  "method": METHOD, "onnxruntime": quantizer_version(), "calibration_folder": str(source.resolve()),
                  "calibration_count": len(files), "calibration_images": [f.name for f in files]}
        atomic_write(out, quantized)
        atomic_write(record_path(out), (json.dumps(record, indent=1) + "\n").encode())
        return Int8Copy(out, record, True, time.perf_counter() - start)


def quantize(model_path: str | Path, files: list[Path], prepare: Callable[[np.ndarray], np.ndarray], *,
             form: str = "qoperator", input_blob: str = "input_0") -> bytes:
    """Calibrate on ``files`` (a progress bar counts them) and quantize: the INT8 model, serialized."""
    import tempfile

    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise SegnetError(f"INT8 calibration needs onnxruntime ({exc}): pip install onnxruntime, or use "
                          f"{option('precision', 'fp32')}") from None

    class Reader(CalibrationDataReader):
        def __init__(self, inputs: Iterator[np.ndarray]):
            self.inputs = inputs

        def get_next(self):
            tensor = next(self.inputs, None)
            return None if tensor is None else {input_blob: tensor}

    qdq = form == "qdq"
    bar = progress(len(files), "calibrating", unit="img")
    try:
        with tempfile.TemporaryDirectory(prefix="segnet-int8-") as tmp:
            out = Path(tmp) / "int8.onnx"
            with _quantizer_quiet():
                quantize_static(str(model_path), str(out), Reader(_inputs(files, prepare, bar)),
                                quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                                activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=True, reduce_range=not qdq,
                                extra_options={"ActivationSymmetric": qdq, "WeightSymmetric": True,
                                               "QuantizeBias": not qdq})
            return out.read_bytes()
    except SegnetError:
        raise
    except Exception as exc:  # onnx and onnxruntime raise their own types for a model they cannot handle
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise SegnetError(f"cannot make an INT8 copy of {model_path} ({reason}); use "
                          f"{option('precision', 'fp32')}") from None
    finally:
        bar.close()


def _inputs(files: list[Path], prepare: Callable[[np.ndarray], np.ndarray], bar) -> Iterator[np.ndarray]:
    for file in files:
        tensor = prepare(read_image(file))
        yield tensor if tensor.ndim == 4 else tensor[None]
        bar.update(1)


@contextmanager
def _quantizer_quiet() -> Iterator[None]:
    """onnxruntime's quantizer advises through the root logger ("consider pre-processing"), and
    ``logging.warning`` would install a stderr handler on the root logger if it had none: a null handler and a
    filter on the root logger keep its records off the terminal, which shows segnet's own status lines only."""
    root = logging.getLogger()
    null = logging.NullHandler()

    def not_root(record: logging.LogRecord) -> bool:
        return record.name != "root"

    root.addHandler(null)
    root.addFilter(not_root)
    try:
        yield
    finally:
        root.removeHandler(null)
        root.removeFilter(not_root)


def preparer(model_path: str | Path, input_shape: tuple[int | None, ...],
             fmt=None) -> Callable[[np.ndarray], np.ndarray]:
    """How a run turns an RGB image into this model's input: its ``ModelFormat`` (``fmt``, else the model's
    ``segnet.json`` and jetson's defaults) at the input's fixed size."""
    from .. import model_format
    from ..options import Options
    from ..preprocess import prepare

    fmt = fmt or model_format.resolve(Options(), model_format.read_sidecar(Path(model_path)))
    layout = model_format.input_layout(input_shape, fmt.input_layout, lambda: str(model_path))
    height, width = model_format.spatial(input_shape, layout)
    if (not width or not height) and fmt.input_size:
        width, height = fmt.input_size
    if not width or not height:
        raise SegnetError(f"{model_path} has a symbolic input size {list(input_shape)}: INT8 calibration needs a "
                          "model of fixed input size")

    def prepared(image: np.ndarray) -> np.ndarray:
        return prepare(image, width, height, mean=fmt.mean, std=fmt.std, bgr=fmt.bgr, resize_mode=fmt.resize,
                       layout=layout)[0]

    return prepared


def calibrate(options=None, images: str | Path | None = None, forms: tuple[str, ...] = FORMS,
              **given) -> list[Int8Copy]:
    """Calibrate the INT8 copies of the network the options name (``network``, or ``model`` with its
    ``segnet.json``) on the images of the folder ``images``, pre-processed as a run with these options prepares
    them, replacing those in the cache: one per form (``qoperator``: what ``precision='int8'`` runs on
    onnxruntime; ``qdq``: what an INT8 TensorRT engine is built from). ``engine_cache`` chooses the cache as for
    a run. Too few images is a ``UsageError``, checked before any work."""
    from .. import model_format
    from ..options import Options
    from ..zoo.resolve import locate
    from .base import check_contract, onnx_io
    from .cache_dir import cache_dir

    options = Options.create(options, **given)
    if images is None:
        raise UsageError(f"give the folder of images to calibrate on ({option('calibrate')})")
    calibration_images(images)
    files = locate(options)
    sidecar = model_format.read_sidecar(options.model if options.model is not None else files.model)
    fmt = model_format.resolve(options, sidecar)
    inp, _ = check_contract(files.model, *onnx_io(files.model), options.input_blob or sidecar.get("input_blob"),
                            options.output_blob or sidecar.get("output_blob"))
    folder = cache_dir(files.model, options.engine_cache)
    prepare = preparer(files.model, inp.shape, fmt)
    sha = file_sha256(files.model)
    return [int8_model(files.model, folder, prepare, images=images, form=form, input_blob=inp.name,
                       model_sha256=sha) for form in forms]
