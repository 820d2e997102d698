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
    """Pick the named input and output and check what every backend needs of them (SPEC section 2): a
    4-d image input with an RGB axis (``[N, 3, H, W]``, or ``[N, H, W, 3]`` channels last) and a 4-d score
    output. Layouts, sizes and class counts are the segmenter's business (``segnet.layout``)."""
    from ..errors import SegnetError

    def listing():
        return (f"its inputs are: {', '.join(f'{t.name} {format_shape(t.shape)}' for t in inputs) or 'none'}; "
                f"its outputs are: {', '.join(f'{t.name} {format_shape(t.shape)}' for t in outputs) or 'none'}")

    def pick(tensors, name, kind, flag):
        for t in tensors:
            if t.name == name:
                return t
        raise SegnetError(f"model {model} has no {kind} named '{name}'; {listing()} (choose with {flag})")

    inp = pick(inputs, input_blob, "input", "--input-blob")
    out = pick(outputs, output_blob, "output", "--output-blob")
    if len(inp.shape) != 4 or 3 not in (inp.shape[1], inp.shape[3]) and None not in (inp.shape[1], inp.shape[3]):
        raise SegnetError(f"model {model}: input '{inp.name}' has shape {format_shape(inp.shape)}, expected "
                          f"[1, 3, H, W] (planar RGB) or [1, H, W, 3]; {listing()}")
    if len(out.shape) != 4:
        raise SegnetError(f"model {model}: output '{out.name}' has shape {format_shape(out.shape)}, expected "
                          f"[1, classes, grid height, grid width] or [1, height, width, classes]; {listing()}")
    return inp, out


def format_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


_shape = format_shape  # the name the first backends used
