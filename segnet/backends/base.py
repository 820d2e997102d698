"""The protocol every inference backend implements (after Polygraphy's runners).

A backend is a context manager: it allocates in ``__enter__`` (session, engine, buffers) and frees in
``__exit__``. Between the two, ``infer`` maps a pre-processed batch to raw class scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Name and shape of one model input or output; symbolic dimensions are ``None``."""

    name: str
    shape: tuple[int | None, ...]


@runtime_checkable
class Backend(Protocol):
    """What the segmenter needs from an inference engine."""

    #: short name shown to the user, e.g. ``"onnxruntime (CPUExecutionProvider)"``
    description: str
    input: TensorInfo
    output: TensorInfo

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc) -> None: ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[N, 3, H, W]`` -> float32 scores ``[N, C, gh, gw]``."""
        ...


def check_contract(model: object, inputs: list[TensorInfo], outputs: list[TensorInfo],
                   input_blob: str, output_blob: str) -> tuple[TensorInfo, TensorInfo]:
    """Pick the named input and output and check them against the FCN contract (SPEC section 2):
    input ``[1|N, 3, H, W]`` with fixed H and W, output ``[1|N, C, gh, gw]`` with at most 256 classes."""
    from ..errors import SegnetError

    def listing(tensors):
        return ", ".join(f"{t.name} {_shape(t.shape)}" for t in tensors) or "none"

    def pick(tensors, name, kind, flag):
        for t in tensors:
            if t.name == name:
                return t
        raise SegnetError(f"model {model} has no {kind} named '{name}'; its {kind}s are: {listing(tensors)} "
                          f"(choose one with {flag})")

    inp = pick(inputs, input_blob, "input", "--input-blob")
    out = pick(outputs, output_blob, "output", "--output-blob")
    if len(inp.shape) != 4 or inp.shape[1] != 3:
        raise SegnetError(f"model {model}: input '{inp.name}' has shape {_shape(inp.shape)}, "
                          "expected [1, 3, H, W] (planar RGB)")
    if inp.shape[2] is None or inp.shape[3] is None:
        raise SegnetError(f"model {model}: input '{inp.name}' has shape {_shape(inp.shape)}; "
                          "a fixed height and width are needed")
    if len(out.shape) != 4:
        raise SegnetError(f"model {model}: output '{out.name}' has shape {_shape(out.shape)}, "
                          "expected [1, classes, grid height, grid width]")
    if out.shape[1] is not None and not 1 <= out.shape[1] <= 256:
        raise SegnetError(f"model {model}: output '{out.name}' has {out.shape[1]} classes; "
                          "between 1 and 256 are supported (the class map is uint8)")
    return inp, out


def _shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
