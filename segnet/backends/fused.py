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

With a ``drawing.DrawSpec`` (``fused_model(..., draw=...)``) the graph also draws the picture segnet
writes, from the same uint8 image and the class map it computed (``drawing``'s contract):

    class map ─ Gather(colours) ─ x: Gather x1, x2, lerp ─ y: Gather y1, y2, lerp ─▶ RGBA [N, H, W, 4]
    image ─ Gather(source y, source x) ─ blend with RGBA (overlay) ─▶ picture uint8 [N, H, W(+W//2), 3]

Only the kind of picture (overlay, mask, composite, classes) is in the graph. The colour table and every
per-axis sample (cells and weights) are inputs, computed on the CPU by ``draw_inputs`` with the functions
``colorize`` itself uses, so the filter, the region and the colours change without a new graph and the
device never re-derives a position. The point filter is fed as the linear form with equal cells and zero
weights, which gives its colours bit for bit. The blend repeats ``colorize.overlay``'s float32 operations
in order (``a = alpha / 255``, ``src - a * (src - colour)``) and the cast to uint8 truncates, so on
onnxruntime's CPU provider the pictures equal ``drawing.draw``'s.

TensorRT's ONNX parser refuses a uint8 tensor anywhere but at a Cast, and takes a Pad's amounts from an input
only as a shape tensor (host memory, a profile of values). ``fused_model(..., tensorrt=True)`` is the same
graph in the form it takes: the image is cast to float32 first (exact for 0..255) and every Gather reads
that; the drawing reads the class index as float32 before its cast to uint8; the composite's rows below
the half-size mask come from the shapes, so it has no ``segnet_half_pads`` input. Its other inputs, its
outputs and its values are those of the other form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..drawing import DrawSpec, axis_samples, spans
from ..errors import SegnetError

IMAGE, ROWS, COLS, CLASS_MAP = "segnet_image", "segnet_rows", "segnet_cols", "segnet_class_map"
#: The drawing's output and its colour-table input ([C, 4] float32 RGBA after the alpha rules).
PICTURE, COLORS = "segnet_picture", "segnet_colors"
#: The image as float32, where the graph is TensorRT's (``fused_model(..., tensorrt=True)``).
_IMAGE_FLOAT = "segnet_image_float"


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


def fused_model(model, input_name: str, output_name: str, spec: FusedSpec, draw: DrawSpec | None = None, *,
                tensorrt: bool = False):
    """``model`` (an ``onnx.ModelProto``, changed in place and returned) with the pre-processing in front
    of ``input_name`` and the class map after ``output_name``, and with ``draw``, the picture of
    ``draw.kind`` as the output ``PICTURE`` (inputs: ``draw_inputs``); the batch axis becomes symbolic.
    ``tensorrt``: the form TensorRT's ONNX parser takes, the same arithmetic with no uint8 tensor but the
    graph's inputs and outputs (see the module's docstring).
    Raises SegnetError when the model cannot be wrapped (non-float tensors, opset below 11)."""
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
    image = IMAGE
    nodes = []
    if tensorrt:  # its Gather takes no uint8 tensor: the image as float32 first (exact), not after the stretch
        nodes.append(helper.make_node("Cast", [IMAGE], [_IMAGE_FLOAT], to=TensorProto.FLOAT, name=_IMAGE_FLOAT))
        image = _IMAGE_FLOAT
    nodes += [helper.make_node("Gather", [image, ROWS], ["segnet_rows_taken"], axis=1, name="segnet_stretch_y"),
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
    if not tensorrt:
        nodes.append(helper.make_node("Cast", [pixels], ["segnet_float"], to=TensorProto.FLOAT, name="segnet_float"))
        pixels = "segnet_float"
    nodes += [
        helper.make_node("Mul", [pixels, "segnet_inv255"], ["segnet_scaled"], name="segnet_scale"),
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

    draw_values: list = []
    if draw is not None:
        draw_nodes, draw_values = _drawing(helper, TensorProto, draw.kind, c, constants, tensorrt)
        post += draw_nodes

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
        *draw_values,
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
    if draw is not None:
        width = "picture_width" if draw.kind == "composite" else "image_width"
        picture_dims: list[str | int] = ["batch", "image_height", width, *([] if draw.kind == "classes" else [3])]
        graph.output.append(helper.make_tensor_value_info(PICTURE, TensorProto.UINT8, picture_dims))
    del graph.value_info[:]  # shapes recorded for batch 1; onnxruntime infers them again
    return model


def _reduce(helper, op: str, source: str, target: str, *, keepdims: int, opset: int, constants: dict):
    """``op`` over the class axis (1): axes an attribute before opset 18, an input from 18."""
    if opset >= 18:
        constants["segnet_class_axis"] = np.array([1], np.int64)
        return helper.make_node(op, [source, "segnet_class_axis"], [target], keepdims=keepdims, name=target)
    return helper.make_node(op, [source], [target], axes=[1], keepdims=keepdims, name=target)


#: The per-axis samples of a picture, by the prefix of their input names: cells ``x1``, ``x2`` and weight
#: ``dx`` (shaped ``[W, 1]`` to broadcast over RGBA), ``y1``, ``y2`` and ``dy`` (``[H, 1, 1]``).
_AXES = ("x1", "x2", "dx", "y1", "y2", "dy")


def draw_inputs(image_height: int, image_width: int, grid_height: int, grid_width: int,
                draw: DrawSpec) -> dict[str, np.ndarray]:
    """The drawing's inputs for an image of this size and a class grid of this size, but the colour table
    (``COLORS``): every sample position and weight, from ``drawing.axis_samples`` (``colorize``'s own)."""
    from ..colorize import point_axis

    xspan, yspan = spans(draw.region)
    h, w = image_height, image_width
    if draw.kind == "classes":  # the class of every pixel: the point filter's cells, nothing to blend
        return {"segnet_draw_x1": point_axis(w, grid_width, xspan).astype(np.int64),
                "segnet_draw_y1": point_axis(h, grid_height, yspan).astype(np.int64)}

    def samples(prefix: str, height: int, width: int) -> dict[str, np.ndarray]:
        x1, x2, dx = axis_samples(width, grid_width, draw.filter_mode, xspan)
        y1, y2, dy = axis_samples(height, grid_height, draw.filter_mode, yspan)
        values = (x1, x2, dx.reshape(-1, 1), y1, y2, dy.reshape(-1, 1, 1))
        return {f"{prefix}_{axis}": value for axis, value in zip(_AXES, values)}

    inputs = samples("segnet_draw", h, w)
    if draw.kind in ("overlay", "composite"):  # jetson samples the input at (int(px * in_w), int(py * in_h))
        inputs["segnet_source_x"] = point_axis(w, w).astype(np.int64)
        inputs["segnet_source_y"] = point_axis(h, h).astype(np.int64)
    if draw.kind == "composite":  # the half-size mask, then black below it
        inputs.update(samples("segnet_half", h // 2, w // 2))
        inputs["segnet_half_pads"] = np.array([0, 0, 0, 0, 0, h - h // 2, 0, 0], np.int64)
    return inputs


def _drawing(helper, TensorProto, kind: str, num_classes: int, constants: dict,
             tensorrt: bool = False) -> tuple[list, list]:
    """The nodes that draw the picture of ``kind`` from ``IMAGE`` and ``CLASS_MAP`` into ``PICTURE``, and
    the inputs they read (``draw_inputs`` and ``COLORS``). ``tensorrt``: from the float32 image and class
    index instead (the same values), so that no node but the last Cast touches a uint8 tensor."""
    f32, i64, u8 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.UINT8
    node = helper.make_node
    values = []
    classes = "segnet_class_index" if tensorrt else CLASS_MAP

    def value(name: str, elem: int, dims: list) -> str:
        values.append(helper.make_tensor_value_info(name, elem, dims))
        return name

    if kind == "classes":
        x, y = value("segnet_draw_x1", i64, ["image_width"]), value("segnet_draw_y1", i64, ["image_height"])
        taken = "segnet_classes_taken" if tensorrt else PICTURE
        nodes = [node("Gather", [classes, y], ["segnet_classes_rows"], axis=1, name="segnet_classes_rows"),
                 node("Gather", ["segnet_classes_rows", x], [taken], axis=2, name="segnet_classes")]
        if tensorrt:
            nodes.append(node("Cast", [taken], [PICTURE], to=u8, name="segnet_classes_bytes"))
        return nodes, values

    constants["segnet_one"] = np.array(np.float32(1))
    constants["segnet_255"] = np.array(np.float32(255))
    constants["segnet_rgb"] = np.array([0, 1, 2], np.int64)
    constants["segnet_alpha"] = np.array([3], np.int64)
    value(COLORS, f32, [num_classes, 4])
    nodes = [node("Cast", [classes], ["segnet_class_long"], to=i64, name="segnet_class_long"),
             node("Gather", [COLORS, "segnet_class_long"], ["segnet_grid_rgba"], axis=0, name="segnet_grid_rgba")]

    def upsample(prefix: str, height: str, width: str) -> str:
        """``colorize.color_rows``: along x, ``a * (1 - dx) + b * dx``; then along y, ``dy * (b - t) + t``."""
        x1, x2, dx, y1, y2, dy = (f"{prefix}_{axis}" for axis in _AXES)
        value(x1, i64, [width]), value(x2, i64, [width]), value(dx, f32, [width, 1])
        value(y1, i64, [height]), value(y2, i64, [height]), value(dy, f32, [height, 1, 1])
        t = f"{prefix}_"
        nodes.extend([
            node("Gather", ["segnet_grid_rgba", x1], [t + "left"], axis=2, name=t + "left"),
            node("Gather", ["segnet_grid_rgba", x2], [t + "right"], axis=2, name=t + "right"),
            node("Sub", ["segnet_one", dx], [t + "left_weight"], name=t + "left_weight"),
            node("Mul", [t + "left", t + "left_weight"], [t + "left_part"], name=t + "left_part"),
            node("Mul", [t + "right", dx], [t + "right_part"], name=t + "right_part"),
            node("Add", [t + "left_part", t + "right_part"], [t + "rows"], name=t + "rows"),
            node("Gather", [t + "rows", y1], [t + "top"], axis=1, name=t + "top"),
            node("Gather", [t + "rows", y2], [t + "bottom"], axis=1, name=t + "bottom"),
            node("Sub", [t + "bottom", t + "top"], [t + "step"], name=t + "step"),
            node("Mul", [dy, t + "step"], [t + "part"], name=t + "part"),
            node("Add", [t + "part", t + "top"], [t + "rgba"], name=t + "rgba"),
            node("Gather", [t + "rgba", "segnet_rgb"], [t + "rgb"], axis=3, name=t + "rgb"),
        ])
        return t

    full = upsample("segnet_draw", "image_height", "image_width")
    if kind == "mask":
        nodes.append(node("Cast", [full + "rgb"], [PICTURE], to=u8, name="segnet_mask"))
        return nodes, values
    sx, sy = value("segnet_source_x", i64, ["image_width"]), value("segnet_source_y", i64, ["image_height"])
    image, source = (_IMAGE_FLOAT, "segnet_source_float") if tensorrt else (IMAGE, "segnet_source")
    nodes.extend([
        node("Gather", [image, sy], ["segnet_source_rows"], axis=1, name="segnet_source_rows"),
        node("Gather", ["segnet_source_rows", sx], [source], axis=2, name="segnet_source"),
    ])
    if not tensorrt:
        nodes.append(node("Cast", ["segnet_source"], ["segnet_source_float"], to=f32, name="segnet_source_float"))
    nodes.extend([  # colorize.overlay: a = alpha / 255; out = src - a * (src - colour), truncated
        node("Gather", [full + "rgba", "segnet_alpha"], ["segnet_alpha_value"], axis=3, name="segnet_alpha_value"),
        node("Div", ["segnet_alpha_value", "segnet_255"], ["segnet_opacity"], name="segnet_opacity"),
        node("Sub", ["segnet_source_float", full + "rgb"], ["segnet_difference"], name="segnet_difference"),
        node("Mul", ["segnet_difference", "segnet_opacity"], ["segnet_delta"], name="segnet_delta"),
        node("Sub", ["segnet_source_float", "segnet_delta"], ["segnet_overlay"], name="segnet_overlay"),
    ])
    if kind == "overlay":
        nodes.append(node("Cast", ["segnet_overlay"], [PICTURE], to=u8, name="segnet_overlay_bytes"))
        return nodes, values
    half = upsample("segnet_half", "half_height", "half_width")
    if tensorrt:  # a pads input would be a shape tensor to TensorRT: the rows below, from the shapes, instead
        constants["segnet_height_axis"] = np.array([1], np.int64)
        constants["segnet_no_pads"] = np.zeros(5, np.int64)
        constants["segnet_no_pads_after"] = np.zeros(2, np.int64)
        nodes.extend([
            node("Shape", [IMAGE], ["segnet_image_shape"], name="segnet_image_shape"),
            node("Shape", [half + "rgb"], ["segnet_half_shape"], name="segnet_half_shape"),
            node("Gather", ["segnet_image_shape", "segnet_height_axis"], ["segnet_height"], axis=0,
                 name="segnet_height"),
            node("Gather", ["segnet_half_shape", "segnet_height_axis"], ["segnet_half_height"], axis=0,
                 name="segnet_half_height"),
            node("Sub", ["segnet_height", "segnet_half_height"], ["segnet_rows_below"], name="segnet_rows_below"),
            node("Concat", ["segnet_no_pads", "segnet_rows_below", "segnet_no_pads_after"], ["segnet_half_pads"],
                 axis=0, name="segnet_half_pads"),
        ])
        pads = "segnet_half_pads"
    else:
        pads = value("segnet_half_pads", i64, [8])
    nodes.extend([  # the overlay, the half-size mask beside it with black below; one cast (it truncates alike)
        node("Pad", [half + "rgb", pads], ["segnet_half_padded"], mode="constant", name="segnet_half_padded"),
        node("Concat", ["segnet_overlay", "segnet_half_padded"], ["segnet_composite"], axis=2,
             name="segnet_composite"),
        node("Cast", ["segnet_composite"], [PICTURE], to=u8, name="segnet_composite_bytes"),
    ])
    return nodes, values
