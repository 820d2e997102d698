"""FCN-ResNet18 in jetson-inference's layout, written with onnx.helper: ResNet-18 (batch norm folded into the
convolutions, as torch's ONNX export does in eval mode) and the FCN head, ``input_0 [1, 3, H, W]`` ->
``output_0 [1, classes, ⌈H/32⌉, ⌈W/32⌉]`` logits, random weights from a seed. No torch needed; the real builder
sees the same graph shape as a zoo network's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fcn_resnet18(path: Path, width: int, height: int, classes: int = 21, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool, scale: float = 1.0) -> str:
        name = f"conv{len(weights) // 2}"
        fan_in = cin * k * k
        w = (rng.standard_normal((cout, cin, k, k)) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)
        weights.extend([numpy_helper.from_array(w, f"{name}.w"),
                        numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        return f"{name}.relu"

    def block(x: str, cin: int, cout: int, stride: int) -> str:
        y = conv(x, cin, cout, 3, stride, relu=True)
        y = conv(y, cout, cout, 3, 1, relu=False, scale=0.2)  # residual branches start small (as zero-init BN)
        shortcut = conv(x, cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else x
        out = f"add{len(nodes)}"
        nodes.append(helper.make_node("Add", [y, shortcut], [out]))
        nodes.append(helper.make_node("Relu", [out], [f"{out}.relu"]))
        return f"{out}.relu"

    x = conv("input_0", 3, 64, 7, 2, relu=True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = block(x, cin, cout, stride)
        x = block(x, cout, cout, 1)
        cin = cout
    x = conv(x, 512, 128, 3, 1, relu=True)
    conv(x, 128, classes, 1, 1, relu=False)
    nodes[-1].output[0] = "output_0"
    size = [grid(height), grid(width)]
    graph = helper.make_graph(
        nodes, "fcn_resnet18",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, classes, *size])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def grid(n: int) -> int:
    """The output size along one axis: the 7x7 stem and the max pool halve it, then three stride-2 stages."""
    n = (n + 6 - 7) // 2 + 1
    for _ in range(4):
        n = (n + 2 - 3) // 2 + 1
    return n
