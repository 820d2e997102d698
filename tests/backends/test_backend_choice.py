"""``open_backend`` on a machine without TensorRT: ``tensorrt`` fails in one line, ``auto`` runs on
onnxruntime and says once why; a TensorRT that fails to build or load also falls back under ``auto``."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import segnet.backends
from segnet import Options
from segnet.backends import open_backend
from segnet.backends import tensorrt as trt_backend
from segnet.errors import SegnetError
from tests.support.models import make_fcn, pooling_model, pooling_reference

REPO = Path(__file__).resolve().parents[2]
no_tensorrt = pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx",
                                                                           "tensorrt_rtx_bindings")),
                                 reason="TensorRT is installed here")
NOT_INSTALLED = ("TensorRT is not installed: pip install 'segnet[tensorrt]' (or pip install 'segnet[tensorrt-rtx]' "
                 "for TensorRT for RTX)")


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """What the process remembers about TensorRT, as in a new process."""
    reason = trt_backend.unusable_reason
    reason.cache_clear()
    monkeypatch.setattr(segnet.backends, "_auto_fallback", None)
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (__file__,))  # as on a machine with a GPU
    yield
    reason.cache_clear()


@pytest.fixture
def model(tmp_path):
    return pooling_model(tmp_path / "fcn.onnx", num_classes=5, width=64, height=32)


def run(backend) -> np.ndarray:
    """Infer one image and check the scores against the model's numpy reference."""
    image = np.random.default_rng(0).standard_normal((3, 32, 64)).astype(np.float32)
    with backend as opened:
        scores = opened.infer(image[None])
    np.testing.assert_allclose(scores[0], pooling_reference(image, 5), rtol=1e-4, atol=1e-5)
    return scores


def backend(model, kind: str, **options):
    return open_backend(model, Options(backend=kind, **options))


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("segnet")]


@no_tensorrt
def test_backend_tensorrt_is_a_one_line_error_naming_the_install(model):
    with pytest.raises(SegnetError) as info:
        backend(model, "tensorrt")
    message = str(info.value)
    assert "\n" not in message and type(info.value) is SegnetError
    assert message == f"backend='tensorrt' cannot run: {NOT_INSTALLED}"


@no_tensorrt
def test_auto_runs_on_onnxruntime_and_says_why_once(model, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="segnet"):
        for _ in range(3):
            opened = backend(model, "auto")
            assert run(opened).shape == (1, 5, 1, 2)
            assert opened.description.startswith("onnxruntime")
    assert capsys.readouterr() == ("", "")  # the library prints nothing: the CLI shows what it logs
    assert said(caplog) == [f"TensorRT not used, running on onnxruntime: {NOT_INSTALLED}"]


def test_auto_falls_back_once_when_tensorrt_cannot_build(model, caplog, monkeypatch):
    tries = []

    def failing_enter(self):
        tries.append(self)
        raise SegnetError("TensorRT could not build an engine for fcn.onnx: out of workspace")

    monkeypatch.setattr(trt_backend, "unusable_reason", lambda flavour="auto": None)
    monkeypatch.setattr(trt_backend.TensorRTBackend, "__enter__", failing_enter)
    with caplog.at_level(logging.INFO, logger="segnet"):
        for _ in range(2):
            opened = backend(model, "auto")
            assert run(opened).shape == (1, 5, 1, 2)
            assert opened.description.startswith("onnxruntime")
    assert len(tries) == 1  # the process remembers: no second attempt
    assert said(caplog) == ["TensorRT not used, running on onnxruntime: "
                            "TensorRT could not build an engine for fcn.onnx: out of workspace"]


@no_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_auto_falling_back_to_onnxruntime_keeps_the_precision_asked(precision, tmp_path, caplog):
    """Not FP32 behind the user's back: onnxruntime runs the FP16 copy and the calibrated INT8 copy too."""
    net = make_fcn(tmp_path / "net.onnx")
    if precision == "int8":  # a model without shipped calibration images is calibrated ahead, on a folder
        from segnet.backends import int8

        int8.int8_model(net, tmp_path / "cache", int8.preparer(net, (1, 3, 32, 64)), images=REPO / "data" / "images")
    with caplog.at_level(logging.INFO, logger="segnet"), \
            backend(net, "auto", precision=precision, engine_cache=tmp_path / "cache") as opened:
        assert opened.description == f"onnxruntime (CPUExecutionProvider, {precision.upper()} model)"
        assert opened.infer(np.zeros((1, 3, 32, 64), np.float32)).shape == (1, 5, 1, 2)
    assert f"TensorRT not used, running on onnxruntime: {NOT_INSTALLED}" in said(caplog)


def test_backend_tensorrt_does_not_fall_back_on_build_failure(model, monkeypatch):
    monkeypatch.setattr(trt_backend, "unusable_reason", lambda flavour="auto": None)
    monkeypatch.setattr(trt_backend.TensorRTBackend, "__enter__",
                        lambda self: (_ for _ in ()).throw(SegnetError("TensorRT could not build")))
    with pytest.raises(SegnetError, match="could not build"):
        run(backend(model, "tensorrt"))


def test_tensorrt_options_are_ignored_by_onnxruntime(model):
    assert run(backend(model, "onnxruntime", precision="fp32", engine_cache="/nonexistent")).shape == (1, 5, 1, 2)


def test_fp16_on_onnxruntime_runs_the_checked_fp16_copy(tmp_path, caplog):
    model = make_fcn(tmp_path / "net" / "fcn.onnx")
    caplog.set_level(logging.INFO, logger="segnet")
    with backend(model, "onnxruntime", precision="fp16", engine_cache=tmp_path / "cache") as half, \
            backend(model, "onnxruntime") as full:
        image = np.random.default_rng(1).standard_normal((1, 3, 32, 64)).astype(np.float32)
        a, b = full.infer(image), half.infer(image)
    assert half.description == "onnxruntime (CPUExecutionProvider, FP16 model)"
    assert full.description == "onnxruntime (CPUExecutionProvider)"
    (copy,) = (tmp_path / "cache").glob("fcn.fp16.*.onnx")  # made once, in the cache folder, not beside the model
    assert sorted(p.name for p in model.parent.iterdir()) == ["fcn.onnx"]
    assert {t.data_type for t in onnx.load(str(copy)).graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05 * np.ptp(a)  # FP16 weights: close, not equal
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.9
    assert any("converting" in line and "to FP16" in line for line in said(caplog))


def test_fp16_copy_that_disagrees_is_refused_in_one_line(tmp_path, monkeypatch):
    from segnet.backends import fp16

    model = make_fcn(tmp_path / "fcn.onnx")
    monkeypatch.setattr(fp16, "convert_to_fp16", lambda path: make_fcn(tmp_path / "other.onnx", seed=7).read_bytes())
    with pytest.raises(SegnetError, match="use precision='fp32'") as info:
        run(backend(model, "onnxruntime", precision="fp16"))
    assert "\n" not in str(info.value)


def test_tensorrt_backend_module_imports_no_tensorrt_or_cuda():
    code = ("import sys, segnet.backends.tensorrt, segnet.backends.tensorrt.cuda, "
            "segnet.backends.tensorrt.engine_cache, segnet.backends.tensorrt.recipe, segnet.backends.fp16; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorrt', 'tensorrt_bindings', 'tensorrt_rtx', 'tensorrt_rtx_bindings', 'cuda', 'pycuda', "
            "'onnxruntime', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_auto_without_an_nvidia_gpu_runs_onnxruntime_without_advice(model, caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (str(tmp_path / "nvidia[0-9]*"),))
    monkeypatch.setattr(trt_backend, "unusable_reason", lambda flavour="auto": pytest.fail("TensorRT was tried"))
    with caplog.at_level(logging.INFO, logger="segnet"):
        opened = backend(model, "auto")
        assert run(opened).shape == (1, 5, 1, 2) and opened.description.startswith("onnxruntime")
    assert said(caplog) == []
    (tmp_path / "nvidia3").touch()  # a container that sees only its own GPU
    assert segnet.backends.nvidia_gpu_present()
