"""Tiny FCN-shaped ONNX models built with onnx.helper, each with what its output must be.

- ``constant_model``: scores are a fixed grid whatever the image, so the expected pictures can be computed
  independently of the network.
- ``pooling_model``: a real stride-32 network (average pool + 1x1 conv), so the scores depend on the
  image; ``pooling_reference`` computes them in numpy.
- ``make_fcn``: two strided convolutions (stride 32 in all, like FCN-ResNet18) with a ReLU between and
  random weights from a seed, for the TensorRT and FP16 tests (``scale`` makes activations overflow FP16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def constant_model(path: Path, scores: np.ndarray, width: int, height: int,
                   input_name: str = "input_0", output_name: str = "output_0") -> Path:
    """``input [1,3,height,width] -> output = scores[None]`` (plus 0 x the input's mean, so the input is
    really consumed)."""
    scores = np.asarray(scores, np.float32)
    c, gh, gw = scores.shape
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "scores"], ["y"]),
    ]
    nodes[0].input[0] = input_name
    nodes[-1].output[0] = output_name
    graph = helper.make_graph(
        nodes, "constant_scores",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, c, gh, gw])],
        [numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
         numpy_helper.from_array(scores[None], "scores")],
    )
    return _save(graph, path)


def pooling_weights(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(num_classes, 3, 1, 1)).astype(np.float32),
            rng.normal(size=(num_classes,)).astype(np.float32))


def pooling_model(path: Path, num_classes: int, width: int, height: int, seed: int = 0) -> Path:
    """``input [1,3,H,W] -> AveragePool 32x32 stride 32 -> Conv 1x1 -> output [1,C,H/32,W/32]``."""
    weight, bias = pooling_weights(num_classes, seed)
    nodes = [
        helper.make_node("AveragePool", ["input_0"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["output_0"]),
    ]
    graph = helper.make_graph(
        nodes, "pooling_fcn",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT,
                                       [1, num_classes, height // 32, width // 32])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return _save(graph, path)


def pooling_reference(tensor: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """What ``pooling_model`` computes for a pre-processed ``[3, H, W]`` tensor: ``[C, H/32, W/32]``."""
    weight, bias = pooling_weights(num_classes, seed)
    _, h, w = tensor.shape
    pooled = tensor[:, : h // 32 * 32, : w // 32 * 32].reshape(3, h // 32, 32, w // 32, 32).mean(axis=(2, 4))
    return np.einsum("kc,cyx->kyx", weight[:, :, 0, 0], pooled) + bias[:, None, None]


def write_network(folder: Path, model_builder, names=None, colors=None, **kwargs) -> Path:
    """A network folder in the zoo layout: fcn_resnet18.onnx + classes.txt + colors.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    model_builder(folder / "fcn_resnet18.onnx", **kwargs)
    if names is not None:
        (folder / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    if colors is not None:
        (folder / "colors.txt").write_text("".join(" ".join(map(str, c)) + "\n" for c in colors))
    return folder


def make_fcn(path: Path, width: int = 64, height: int = 32, classes: int = 5, seed: int = 0,
             scale: float = 1.0, dynamic_batch: bool = False) -> Path:
    """Write the model to ``path``; ``scale`` multiplies the weights (large values overflow FP16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array((scale * rng.normal(0, 0.3, (16, 3, 4, 4))).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b1"),
        numpy_helper.from_array((scale * rng.normal(0, 0.3, (classes, 16, 8, 8))).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input_0", "w1", "b1"], ["c1"], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["output_0"], strides=[8, 8]),
    ]
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny_fcn",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [batch, classes, height // 32, width // 32])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
