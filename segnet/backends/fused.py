"""Pre-processing and the class map inside the network's graph, as jetson does them in CUDA (issue 16).

``fused_model`` wraps an ONNX network so that the backend runs, with the network and on the same device:

    uint8 image [N, H, W, 3] ─ nearest stretch ─ /255, -mean, /std ─▶ network ─▶ scores [N, C, gh, gw]
                                                                          └──▶ class map uint8 [N, gh, gw]

The uint8 image goes to the device (a quarter of the bytes of the float input) and only the class map and
the small score grid come back. Every step repeats the CPU path's arithmetic, so the class maps are the same:

- the stretch is two ``Gather`` ops whose indices are graph inputs, computed on the CPU by
  ``preprocess.nearest_indices`` (jetson's float32 ``int(x * float(W_img) / float(W_net))``), so the
  device never re-derives them;
- normalisation is ``Cast``, ``Mul(1/255)``, ``Sub(mean)``, ``Div(std)`` in float32, the order of
  ``preprocess.preprocess`` (channels reversed first for blue-first models);
- the argmax skips the ignored class and keeps the lowest index on ties, as ``classmap.class_map``: the
  ignored class is set to -inf, then the class map is the smallest class index whose score equals the
  maximum (``ReduceMax``, ``Equal``, ``Where``, ``ReduceMin``), which does not depend on how a device's
  ``ArgMax`` breaks ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SegnetError

IMAGE, ROWS, COLS, CLASS_MAP = "segnet_image", "segnet_rows", "segnet_cols", "segnet_class_map"


@dataclass(frozen=True)
class FusedSpec:
    """What the fused graph does around the network: the network's input size and layout, the
    normalisation, and the class map's ignored class."""

    width: int
    height: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    layout: str  # the network input's: NCHW or NHWC
    num_classes: int
    ignore: int | None  # class left out of the argmax (None: none)


def indices(image_height: int, image_width: int, spec: FusedSpec) -> tuple[np.ndarray, np.ndarray]:
    """The ``ROWS`` and ``COLS`` inputs for an image of this size: jetson's nearest-stretch indices."""
    from ..preprocess import nearest_indices

    return (nearest_indices(image_height, spec.height).astype(np.int64),
            nearest_indices(image_width, spec.width).astype(np.int64))


def fused_model(model, input_name: str, output_name: str, spec: FusedSpec):
    """``model`` (an ``onnx.ModelProto``, changed in place and returned) with the pre-processing in front
    of ``input_name`` and the class map after ``output_name``; the batch axis becomes symbolic. Raises
    SegnetError when the model cannot be wrapped (non-float tensors, opset below 11)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inp = next((v for v in graph.input if v.name == input_name), None)
    out = next((v for v in graph.output if v.name == output_name), None)
    if inp is None or out is None:
        raise SegnetError(f"cannot fuse pre-processing: the model has no input '{input_name}' or output "
                          f"'{output_name}'")
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT or out.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SegnetError("cannot fuse pre-processing: the model's input and output must be float32")
    if opset < 11:
        raise SegnetError(f"cannot fuse pre-processing: the model's opset {opset} is older than 11")

    f32 = np.float32
    nchw = spec.layout == "NCHW"
    shape = (1, 3, 1, 1) if nchw else (1, 1, 1, 3)
    mean = np.array(spec.mean[::-1] if spec.bgr else spec.mean, f32).reshape(shape)
    std = np.array(spec.std[::-1] if spec.bgr else spec.std, f32).reshape(shape)
    c = spec.num_classes
    constants = {
        "segnet_inv255": np.array(f32(1.0 / 255.0)),
        "segnet_mean": mean,
        "segnet_std": std,
        "segnet_class_ids": np.arange(c, dtype=f32).reshape(1, c, 1, 1),
        "segnet_num_classes": np.array(f32(c)),
        "segnet_last_class": np.array(f32(c - 1)),
    }
    nodes = [helper.make_node("Gather", [IMAGE, ROWS], ["segnet_rows_taken"], axis=1, name="segnet_stretch_y"),
             helper.make_node("Gather", ["segnet_rows_taken", COLS], ["segnet_resized"], axis=2,
                              name="segnet_stretch_x")]
    pixels = "segnet_resized"
    if spec.bgr:
        constants["segnet_bgr_order"] = np.array([2, 1, 0], np.int64)
        nodes.append(helper.make_node("Gather", [pixels, "segnet_bgr_order"], ["segnet_bgr"], axis=3,
                                      name="segnet_bgr"))
        pixels = "segnet_bgr"
    if nchw:
        nodes.append(helper.make_node("Transpose", [pixels], ["segnet_planar"], perm=[0, 3, 1, 2],
                                      name="segnet_planar"))
        pixels = "segnet_planar"
    nodes += [
        helper.make_node("Cast", [pixels], ["segnet_float"], to=TensorProto.FLOAT, name="segnet_float"),
        helper.make_node("Mul", ["segnet_float", "segnet_inv255"], ["segnet_scaled"], name="segnet_scale"),
        helper.make_node("Sub", ["segnet_scaled", "segnet_mean"], ["segnet_centred"], name="segnet_mean"),
        helper.make_node("Div", ["segnet_centred", "segnet_std"], [input_name], name="segnet_std"),
    ]

    scores = output_name
    post = []
    if spec.ignore is not None and 0 <= spec.ignore < c and c > 1:
        ignored = np.zeros((1, c, 1, 1), bool)
        ignored[0, spec.ignore] = True
        constants["segnet_ignored"] = ignored
        constants["segnet_minus_inf"] = np.array(f32(-np.inf))
        post.append(helper.make_node("Where", ["segnet_ignored", "segnet_minus_inf", scores], ["segnet_eligible"],
                                     name="segnet_ignore"))
        scores = "segnet_eligible"
    post += [
        _reduce(helper, "ReduceMax", scores, "segnet_best", keepdims=1, opset=opset, constants=constants),
        helper.make_node("Equal", [scores, "segnet_best"], ["segnet_is_best"], name="segnet_is_best"),
        helper.make_node("Where", ["segnet_is_best", "segnet_class_ids", "segnet_num_classes"],
                         ["segnet_candidates"], name="segnet_candidates"),
        _reduce(helper, "ReduceMin", "segnet_candidates", "segnet_first_best", keepdims=0, opset=opset,
                constants=constants),
        # only a NaN score leaves no candidate: keep the index a valid class
        helper.make_node("Min", ["segnet_first_best", "segnet_last_class"], ["segnet_class_index"],
                         name="segnet_valid_class"),
        helper.make_node("Cast", ["segnet_class_index"], [CLASS_MAP], to=TensorProto.UINT8, name="segnet_class_map"),
    ]

    network = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *network, *post])
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    kept_inputs = [v for v in graph.input if v.name != input_name]
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["batch", "image_height", "image_width", 3]),
        helper.make_tensor_value_info(ROWS, TensorProto.INT64, [spec.height]),
        helper.make_tensor_value_info(COLS, TensorProto.INT64, [spec.width]),
        *kept_inputs,  # initializers listed as inputs (old exporters) stay
    ])
    dims = list(out.type.tensor_type.shape.dim)
    score_shape: list[int | str | None] = ["batch", *(d.dim_value if d.dim_value > 0 else (d.dim_param or None)
                                                      for d in dims[1:])]
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(CLASS_MAP, TensorProto.UINT8, ["batch", *score_shape[2:]]),
        helper.make_tensor_value_info(output_name, TensorProto.FLOAT, score_shape),
    ])
    del graph.value_info[:]  # shapes recorded for batch 1; onnxruntime infers them again
    return model


def _reduce(helper, op: str, source: str, target: str, *, keepdims: int, opset: int, constants: dict):
    """``op`` over the class axis (1): axes an attribute before opset 18, an input from 18."""
    if opset >= 18:
        constants["segnet_class_axis"] = np.array([1], np.int64)
        return helper.make_node(op, [source, "segnet_class_axis"], [target], keepdims=keepdims, name=target)
    return helper.make_node(op, [source], [target], axes=[1], keepdims=keepdims, name=target)
