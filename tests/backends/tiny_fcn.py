"""A tiny FCN-shaped ONNX model built with onnx.helper: ``[1,3,H,W]`` -> ``[1,C,H/32,W/32]`` scores.

Two strided convolutions (stride 32 in all, like FCN-ResNet18) with a ReLU between; random weights from a
seed, so tests can make models with different contents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
