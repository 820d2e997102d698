"""The protocol every inference backend implements (after Polygraphy's runners).

A backend is a context manager: it allocates in ``__enter__`` (session, engine, buffers) and frees in
``__exit__``. Between the two, ``infer`` maps a pre-processed batch to raw class scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import SegnetError, UsageError, option

if TYPE_CHECKING:
    from ..drawing import DrawSpec
    from .fused import FusedSpec


@dataclass(frozen=True)
class TensorInfo:
    """Name and shape of one model input or output; symbolic dimensions are ``None``."""

    name: str
    shape: tuple[int | None, ...]


@runtime_checkable
class Backend(Protocol):
    """Everything the segmenter uses of an inference engine."""

    #: short name shown to the user, e.g. ``"onnxruntime (CPUExecutionProvider)"``
    description: str
    input: TensorInfo
    output: TensorInfo
    #: it can run pre-processing and the class map inside the network's graph (``fuse``, ``infer_images``)
    can_fuse: bool

    @property
    def on_cuda(self) -> bool:
        """It runs on a CUDA device (where fusing pays: ``fuse='auto'``)."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc) -> None: ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[N, 3, H, W]`` -> float32 scores ``[N, C, gh, gw]``."""
        ...

    def fuse(self, spec: FusedSpec, draw: DrawSpec | None = None) -> None:
        """From now on run ``spec``'s pre-processing and class map with the network (``can_fuse`` only), and
        with ``draw`` the picture too (``infer_pictures``)."""
        ...

    def infer_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """After ``fuse``: uint8 images ``[N, H, W, 3]`` -> (class maps uint8 ``[N, gh, gw]``, scores)."""
        ...

    def infer_pictures(self, images: np.ndarray, colors: np.ndarray,
                       draw: DrawSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """After ``fuse(spec, draw)``: (pictures as ``drawing.draw`` makes them, class maps, scores)."""
        ...


#: jetson's tensor names: used when the model has them, whatever else it has
DEFAULT_INPUT, DEFAULT_OUTPUT = "input_0", "output_0"


def check_contract(model: object, inputs: list[TensorInfo], outputs: list[TensorInfo],
                   input_blob: str | None = None, output_blob: str | None = None) -> tuple[TensorInfo, TensorInfo]:
    """Pick the input and output and check what every backend needs of them (SPEC section 2): a 4-d image
    input with an RGB axis (``[N, 3, H, W]``, or ``[N, H, W, 3]`` channels last) and a 4-d score output.

    A tensor named in ``input_blob``/``output_blob`` must exist. Without a name, jetson's ``input_0`` and
    ``output_0`` are used where the model has them, else the model's only input or output; only a model
    with several and none of jetson's names needs to be told. Layouts, sizes and class counts are the
    segmenter's business (``segnet.model_format``)."""

    def listing():
        return (f"its inputs are: {', '.join(f'{t.name} {format_shape(t.shape)}' for t in inputs) or 'none'}; "
                f"its outputs are: {', '.join(f'{t.name} {format_shape(t.shape)}' for t in outputs) or 'none'}")

    def pick(tensors, name, default, kind, flag):
        if name is None:
            found = [t for t in tensors if t.name == default] or (tensors if len(tensors) == 1 else [])
            if found:
                return found[0]
            raise UsageError(f"model {model} has {len(tensors)} {kind}s and none named '{default}'; "
                             f"{listing()} (choose one with {option(flag)})")
        for t in tensors:
            if t.name == name:
                return t
        raise UsageError(f"model {model} has no {kind} named '{name}'; {listing()} (choose with {option(flag)})")

    inp = pick(inputs, input_blob, DEFAULT_INPUT, "input", "input_blob")
    out = pick(outputs, output_blob, DEFAULT_OUTPUT, "output", "output_blob")
    for tensor, kind in ((inp, "input"), (out, "output")):
        if 0 in tensor.shape:
            raise SegnetError(f"model {model}: {kind} '{tensor.name}' declares a dimension of size 0 "
                              f"{format_shape(tensor.shape)}, which no image fits. {listing()}")
    if len(inputs) > 1:  # segnet feeds one image tensor; the others would have no value
        raise SegnetError(f"model {model} has {len(inputs)} inputs; segnet feeds one image input. {listing()}")
    if inp.shape and inp.shape[0] not in (1, None):
        raise SegnetError(f"model {model}: input '{inp.name}' has a fixed batch of {inp.shape[0]}; segnet needs "
                          f"a batch of 1 or a symbolic one (re-export the model with batch 1). {listing()}")
    if len(inp.shape) != 4 or 3 not in (inp.shape[1], inp.shape[3]) and None not in (inp.shape[1], inp.shape[3]):
        raise SegnetError(f"model {model}: input '{inp.name}' has shape {format_shape(inp.shape)}, expected "
                          f"[1, 3, H, W] (planar RGB) or [1, H, W, 3]; {listing()}")
    if len(out.shape) != 4:
        raise SegnetError(f"model {model}: output '{out.name}' has shape {format_shape(out.shape)}, expected "
                          f"[1, classes, grid height, grid width] or [1, height, width, classes]; {listing()}")
    return inp, out


def format_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def onnx_io(model_path: str | Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The model's inputs and outputs read with onnx (no session, no build), weights left out."""
    try:
        import onnx
    except ImportError:
        raise SegnetError("reading the model needs the onnx package: pip install onnx") from None
    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises protobuf's and its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegnetError(f"cannot load model {model_path}: {reason}") from None
    weights = {t.name for t in graph.initializer}

    def info(value) -> TensorInfo:
        dims = value.type.tensor_type.shape.dim
        return TensorInfo(value.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in dims))

    return [info(v) for v in graph.input if v.name not in weights], [info(v) for v in graph.output]
