"""The FP16 model conversion for TensorRT 11, TensorRT-RTX and onnxruntime, run for real with onnxruntime's
converter: on the CPU provider everywhere, and for FCN-ResNet18 on the CUDA provider where onnxruntime-gpu sees a
GPU (there onnxruntime really computes in FP16). ``SEGNET_REQUIRE_GPU=1`` turns that skip into a failure."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from segnet.backends import fp16
from segnet.errors import SegnetError
from tests.support.models import make_fcn

REQUIRE_GPU = os.environ.get("SEGNET_REQUIRE_GPU") == "1"


def record(**fields) -> None:
    """Measurements for BENCHMARKS (``SEGNET_DEVICE_REPORT=FILE`` appends JSON lines)."""
    if os.environ.get("SEGNET_DEVICE_REPORT"):
        with open(os.environ["SEGNET_DEVICE_REPORT"], "a") as f:
            f.write(json.dumps(fields) + "\n")


def test_conversion_keeps_fp32_io_and_agrees_with_fp32(tmp_path):
    model = make_fcn(tmp_path / "m.onnx")
    converted = onnx.load_from_string(fp16.convert_to_fp16(model))
    io = list(converted.graph.input) + list(converted.graph.output)
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    assert {w.data_type for w in converted.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert fp16.argmax_agreement(model.read_bytes(), converted.SerializeToString()) >= fp16.MIN_AGREEMENT


def test_converted_model_is_cached_by_model_hash_and_converter_version(tmp_path, monkeypatch):
    calls = []
    convert = fp16.convert_to_fp16
    monkeypatch.setattr(fp16, "convert_to_fp16", lambda path: calls.append(path) or convert(path))
    model = make_fcn(tmp_path / "m.onnx")
    first = fp16.fp16_model(model, tmp_path)
    assert fp16.fp16_model(model, tmp_path) == first and len(calls) == 1
    assert f".ort{fp16.converter_version()}." in first.name
    other = fp16.fp16_model(make_fcn(tmp_path / "m.onnx", seed=1), tmp_path)
    assert other != first and len(calls) == 2


def test_conversion_that_changes_the_class_map_is_refused(tmp_path, monkeypatch):
    model = make_fcn(tmp_path / "m.onnx")
    wrong = make_fcn(tmp_path / "other.onnx", seed=7)
    monkeypatch.setattr(fp16, "convert_to_fp16", lambda path: wrong.read_bytes())
    (tmp_path / "cache").mkdir()
    with pytest.raises(SegnetError, match="precision='fp32'") as info:
        fp16.fp16_model(model, tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert not any(p.suffix == ".onnx" for p in (tmp_path / "cache").glob("*"))


def test_model_beyond_fp16_range_is_refused(tmp_path):
    # weights scaled so that scores pass FP16's largest value (65504); onnxruntime's CPU provider computes
    # these convolutions in FP32, so only the range check can see it
    model = make_fcn(tmp_path / "m.onnx", scale=300.0)
    assert fp16.largest_activation(model.read_bytes()) > fp16.FP16_MAX
    with pytest.raises(SegnetError, match=r"beyond what FP16 holds .*precision=.fp32."):
        fp16.fp16_model(model, tmp_path)


def test_ordinary_model_is_within_fp16_range(tmp_path):
    model = make_fcn(tmp_path / "m.onnx")
    assert 0 < fp16.largest_activation(model.read_bytes()) < fp16.FP16_MAX


# --- on a CUDA GPU: FCN-ResNet18 (random weights) through onnxruntime's CUDA provider ---------------------------

def fcn_resnet18(path, width: int, height: int, classes: int = 21):
    """FCN-ResNet18 as jetson exports it (ResNet-18 trunk, FCN head, no final upsample: stride-32 scores),
    with random weights whose batch-norm statistics are calibrated on random images, exported with torch."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.segmentation.fcn import FCNHead

    torch.manual_seed(0)
    trunk = torchvision.models.resnet18(weights=None)
    model = torch.nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2,
                                trunk.layer3, trunk.layer4, FCNHead(512, classes))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(4, 3, height, width))
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, height, width), str(path), input_names=["input_0"],
                      output_names=["output_0"], opset_version=17, dynamo=False)
    return path


def median_ms(session, x, runs: int = 50) -> float:
    import time

    session.run(None, {"input_0": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"input_0": x})
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


@pytest.mark.parametrize("width, height", [(512, 256), (2048, 1024)])
def test_fp16_fcn_resnet18_on_cuda_provider(tmp_path, width, height):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        if REQUIRE_GPU:
            pytest.fail(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here")
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU")
    cuda = ["CUDAExecutionProvider"]
    model = fcn_resnet18(tmp_path / "fcn_resnet18.onnx", width, height)
    converted = fp16.fp16_model(model, tmp_path, providers=cuda)  # raises if refused
    fp32_bytes, fp16_bytes = model.read_bytes(), converted.read_bytes()
    agreement = fp16.argmax_agreement(fp32_bytes, fp16_bytes, providers=cuda)
    sessions = [fp16._session(m, cuda) for m in (fp32_bytes, fp16_bytes)]
    assert [s.get_providers()[0] for s in sessions] == cuda * 2
    x = np.random.default_rng(1).standard_normal((1, 3, height, width), dtype=np.float32)
    ref, half = (s.run(None, {"input_0": x})[0] for s in sessions)
    record(test="fp16_fcn_resnet18_cuda", onnxruntime=ort.__version__, input=f"{width}x{height}",
           fp32_mb=len(fp32_bytes) / 1e6, fp16_mb=len(fp16_bytes) / 1e6,
           largest_activation=fp16.largest_activation(fp32_bytes, providers=cuda), argmax_agreement=agreement,
           strict_argmax_agreement=float((ref.argmax(axis=1) == half.argmax(axis=1)).mean()),
           max_abs_diff=float(np.abs(ref - half).max()), score_range=float(np.abs(ref).max()),
           fp32_ms=median_ms(sessions[0], x), fp16_ms=median_ms(sessions[1], x))
    assert agreement >= fp16.MIN_AGREEMENT and half.dtype == np.float32
