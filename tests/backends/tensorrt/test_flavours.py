"""The three flavours of the TensorRT backend (TensorRT 10, TensorRT 11, TensorRT-RTX) with stand-in TensorRT modules
and a stand-in CUDA layer (``fakes.py``), installed where the real ones would be imported from: which flavour is
chosen, version gates, every failure one line so that ``auto`` falls back, FP16 per flavour, TensorRT-RTX's targets,
runtime cache, kernel specialisation and validity check, and engines built ahead of time being found by a run.
The real TensorRT-RTX builder is exercised in ``rtx/``."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import onnx
import pytest

import segnet.backends
from segnet import Options
from segnet.backends import open_backend
from segnet.backends import tensorrt as trt_backend
from segnet.backends.tensorrt import api, build_ahead, parse_targets
from segnet.backends.tensorrt import cuda as cuda_layer
from segnet.errors import OptionError, SegnetError, UsageError
from tests.backends.tensorrt.fakes import CLASSES, FakeCuda, fake_tensorrt
from tests.support.models import pooling_model, pooling_reference

MODULES = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings")
RTX_4090 = ("NVIDIA GeForce RTX 4090", (8, 9))
H200 = ("NVIDIA H200", (9, 0))
NOT_INSTALLED = ("TensorRT is not installed: pip install 'segnet[tensorrt]' (or pip install 'segnet[tensorrt-rtx]' "
                 "for TensorRT for RTX)")


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """No TensorRT importable, and nothing remembered about it, as in a new process on a machine without it."""
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    trt_backend.unusable_reason.cache_clear()
    monkeypatch.setattr(segnet.backends, "_auto_fallback", None)
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (__file__,))  # the stand-in GPUs' machine shows one
    yield
    trt_backend.unusable_reason.cache_clear()


class Installed:
    """A stand-in TensorRT of one flavour importable under its real module name, and a stand-in GPU."""

    def __init__(self, monkeypatch, flavour: str, version: str | None, gpu):
        self.cuda = FakeCuda(*gpu) if gpu else None
        self.record: dict = {}
        self.module = fake_tensorrt(self.cuda or FakeCuda(), self.record, flavour, version)
        monkeypatch.setitem(sys.modules, "tensorrt_rtx" if flavour == "tensorrt_rtx" else "tensorrt", self.module)

        def open_cuda(*args, **kwargs):
            if self.cuda is None:
                raise cuda_layer.CudaError("no CUDA package for Python is installed: pip install cuda-python")
            return self.cuda

        monkeypatch.setattr(cuda_layer, "open_cuda", open_cuda)


@pytest.fixture
def install(monkeypatch):
    def make(flavour: str = "tensorrt_rtx", version: str | None = None, gpu=RTX_4090) -> Installed:
        return Installed(monkeypatch, flavour, version, gpu)
    return make


@pytest.fixture
def model(tmp_path):
    (tmp_path / "net").mkdir()
    return pooling_model(tmp_path / "net" / "fcn.onnx", num_classes=CLASSES, width=64, height=32)


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 32, 64)).astype(np.float32)


def opened(model, **options):
    options.setdefault("backend", "tensorrt")
    options.setdefault("engine_cache", model.parent.parent / "engines")
    return open_backend(model, Options(**options))


def open_error(model, **options) -> str:
    """The one-line error opening the backend gives."""
    with pytest.raises(SegnetError) as info, opened(model, **options):
        pass
    return str(info.value)


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("segnet")]


# --- which flavour ------------------------------------------------------------------------------------------


def test_auto_takes_tensorrt_first_then_tensorrt_rtx_and_either_can_be_forced(install):
    with pytest.raises(SegnetError) as info:
        api.import_tensorrt("auto")
    assert str(info.value) == NOT_INSTALLED
    rtx = install("tensorrt_rtx").module
    assert api.import_tensorrt("auto") is rtx and api.import_tensorrt("tensorrt_rtx") is rtx
    with pytest.raises(SegnetError) as info:
        api.import_tensorrt("tensorrt")
    assert str(info.value) == "TensorRT is not installed: pip install 'segnet[tensorrt]'"
    trt = install("tensorrt").module
    assert api.import_tensorrt("auto") is trt and api.import_tensorrt("tensorrt_rtx") is rtx
    assert [api.api_path(m) for m in (trt, rtx)] == ["10", "rtx"]


def test_the_flavour_is_an_option_checked_like_the_others():
    assert Options(tensorrt_flavour="TensorRT_RTX").tensorrt_flavour == "tensorrt_rtx"
    with pytest.raises(OptionError, match="tensorrt_flavour='rtx': choose auto, tensorrt or tensorrt_rtx"):
        Options(tensorrt_flavour="rtx")


def test_forced_flavour_is_the_one_used(install, model):
    install("tensorrt_rtx")
    install("tensorrt")
    with opened(model, tensorrt_flavour="tensorrt_rtx", precision="fp32") as backend:
        assert backend.description == "TensorRT-RTX 1.7.1.116 (FP32, NVIDIA GeForce RTX 4090)"
    with opened(model, precision="fp32") as backend:
        assert backend.description == "TensorRT 10.16.1.11 (FP32, NVIDIA GeForce RTX 4090)"


@pytest.mark.parametrize("flavour, version, expected", [
    ("tensorrt_rtx", "1.6.0.12", "TensorRT-RTX 1.6.0.12 is too old, 1.7 or newer is needed: "
                                 "pip install 'segnet[tensorrt-rtx]'"),
    ("tensorrt", "9.3.0.1", "TensorRT 9.3.0.1 is too old, 10 or newer is needed: pip install 'segnet[tensorrt]'"),
])
def test_each_flavour_has_its_version_gate(install, flavour, version, expected):
    install(flavour, version)
    assert trt_backend.unusable_reason("auto") == expected
    install(flavour, "2.0.0" if flavour == "tensorrt_rtx" else "12.0.0")
    trt_backend.unusable_reason.cache_clear()
    assert trt_backend.unusable_reason("auto") is None


# --- every failure is one line, and auto falls back ----------------------------------------------------------------


def no_memory_pools(installed):  # a release that renamed an enum segnet uses
    del installed.module.MemoryPoolType


def parser_takes_other_arguments(installed):  # a release whose constructor changed
    installed.module.OnnxParser = lambda network: None


@pytest.mark.parametrize("setup, expected", [
    pytest.param(lambda install: None, NOT_INSTALLED, id="no-tensorrt"),
    pytest.param(lambda install: install("tensorrt_rtx", gpu=H200),
                 "TensorRT-RTX 1.7.1.116 does not support this GPU (NVIDIA H200, compute capability 9.0): it runs on "
                 "compute capability 7.5, 8.0, 8.6, 8.9, 12.0, 12.1 (RTX and RTX PRO cards, A100, Blackwell); "
                 "other NVIDIA GPUs need TensorRT: pip install 'segnet[tensorrt]'", id="rtx-on-hopper"),
    pytest.param(lambda install: no_memory_pools(install("tensorrt", "11.9.0")),
                 "TensorRT 11.9.0 failed while building or loading the engine: AttributeError: ", id="attribute-error"),
    pytest.param(lambda install: parser_takes_other_arguments(install("tensorrt_rtx")),
                 "TensorRT-RTX 1.7.1.116 failed while building or loading the engine: TypeError: ", id="type-error"),
    pytest.param(lambda install: install("tensorrt").record["fail"].add("build"),
                 "TensorRT 10.16.1.11 could not build an engine for ", id="failing-build"),
])
def test_auto_falls_back_to_onnxruntime_in_one_line(install, model, caplog, setup, expected):
    setup(install)
    caplog.set_level(logging.INFO, logger="segnet")
    for _ in range(2):
        with opened(model, backend="auto") as backend:
            scores = backend.infer(images(1))
        assert backend.description.startswith("onnxruntime")
        np.testing.assert_allclose(scores[0], pooling_reference(images(1)[0], CLASSES), rtol=1e-4, atol=1e-5)
    lines = [line for line in said(caplog) if "not used" in line]
    assert len(lines) == 1 and "\n" not in lines[0], said(caplog)
    assert lines[0].startswith(f"TensorRT not used, running on onnxruntime: {expected}"), lines[0]
    error = open_error(model)  # and backend='tensorrt' says the same, as an error
    assert expected.split(":")[0] in error and "\n" not in error


def test_failing_build_names_the_first_error_tensorrt_logged(install, model):
    install("tensorrt").record["fail"].add("build")
    assert open_error(model, precision="fp32").endswith(": Error Code 2: Internal Error (out of builder memory)")


def test_an_invalid_optimisation_profile_is_an_error(install, model):
    installed = install("tensorrt")
    installed.record["fail"].add("profile")
    assert open_error(model, precision="fp32", batch_size=8) == (
        "TensorRT 10.16.1.11 refused the optimisation profile of batch 1 to 8 for input input_0: "
        "IOptimizationProfile::isValid: Error Code 4: MIN<=OPT<=MAX")
    assert "builds" not in installed.record


# --- FP16 per flavour -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour, version, flags, weights, name", [
    ("tensorrt", "10.16.1.11", ["fp16"], onnx.TensorProto.FLOAT, ".fp16-flag.trt10.16.1.11.sm89."),
    ("tensorrt", "11.4.0.106", [], onnx.TensorProto.FLOAT16, ".fp16-model.trt11.4.0.106.sm89."),
    ("tensorrt_rtx", "1.7.1.116", [], onnx.TensorProto.FLOAT16, ".fp16-model.rtx1.7.1.116.sm89."),
])
def test_fp16_is_the_flag_on_10_and_the_converted_model_on_11_and_rtx(install, model, flavour, version, flags,
                                                                     weights, name):
    record = install(flavour, version).record
    with opened(model, precision="fp16"):
        pass
    assert record["flags"] == flags
    assert {w.data_type for w in record["parsed_model"].graph.initializer} == {weights}
    (engine,) = (model.parent.parent / "engines").glob("*.engine")
    assert name in engine.name
    assert record["timing_cache"] == (flavour == "tensorrt")  # TensorRT-RTX's timing cache calls are no-ops


# --- TensorRT-RTX at run time -------------------------------------------------------------------------------------


def test_rtx_specialises_kernels_per_batch_size_and_keeps_them_in_the_runtime_cache(install, model):
    installed = install("tensorrt_rtx")
    with opened(model, precision="fp32", batch_size=4) as backend:
        for n in (2, 4, 2, 1):
            scores = backend.infer(images(n))
            np.testing.assert_allclose(scores, [pooling_reference(i, CLASSES) for i in images(n)], rtol=1e-5,
                                       atol=1e-6)
    assert installed.record["compiled"] == [(2, "eager"), (4, "eager"), (1, "eager")]  # never a generic kernel
    (engine,) = (model.parent.parent / "engines").glob("*.engine")
    saved = engine.with_name(engine.name.removesuffix(".engine") + ".NVIDIA-GeForce-RTX-4090.sm89.runtime.cache")
    assert saved.read_bytes() == b"kernels:[1, 2, 4]"
    with opened(model, precision="fp32", batch_size=4) as backend:  # a second process: nothing compiled again
        backend.infer(images(2))
    assert installed.record["cache_loaded"] == [b"kernels:[1, 2, 4]"]
    assert installed.record["compiled"] == [(2, "eager"), (4, "eager"), (1, "eager")]
    assert installed.record["builds"] == 1


def test_rtx_runtime_cache_from_elsewhere_is_said_and_replaced(install, model, caplog):
    install("tensorrt_rtx")
    with opened(model, precision="fp32") as backend:
        backend.infer(images(1))
    (saved,) = (model.parent.parent / "engines").glob("*.runtime.cache")
    saved.write_bytes(b"another GPU's kernels")
    caplog.set_level(logging.INFO, logger="segnet")
    with opened(model, precision="fp32") as backend:
        backend.infer(images(1))
    assert any("is for another GPU, driver or TensorRT-RTX release" in line for line in said(caplog))
    assert saved.read_bytes() == b"kernels:[1]"


def test_a_run_finds_the_engine_built_ahead_of_time_without_a_gpu(install, model, caplog):
    installed = install("tensorrt_rtx", gpu=None)  # no GPU, no CUDA package: building needs neither
    cache = model.parent.parent / "engines"
    portable = build_ahead(model=model, precision="fp32", tensorrt_flavour="tensorrt_rtx", engine_cache=cache)
    assert portable.built and installed.record["targets"] == []
    assert portable.path.name.startswith("fcn.onnx.fp32.rtx1.7.1.116.portable.") and portable.size > 0
    assert portable.description.startswith("FP32 TensorRT-RTX 1.7.1.116 engine for every GPU it supports by default")
    two = build_ahead(Options(model=model, precision="fp32", engine_cache=cache), ((8, 9), (12, 0)))
    assert installed.record["targets"] == [89, 120] and ".sm89-sm120." in two.path.name
    assert not build_ahead(model=model, precision="fp32", engine_cache=cache).built  # already there
    assert installed.record["builds"] == 2 and "deserialized" not in installed.record  # nothing loaded

    caplog.set_level(logging.INFO, logger="segnet")
    for gpu, chosen in [(RTX_4090, two.path), (("NVIDIA RTX A6000", (8, 6)), portable.path)]:
        installed.cuda = FakeCuda(*gpu)
        with opened(model, precision="fp32", engine_cache=cache):
            pass
        assert said(caplog)[-1] == f"loaded TensorRT engine from cache {chosen}"
    assert installed.record["builds"] == 2
    installed.cuda = FakeCuda("NVIDIA GeForce RTX 2080 Ti", (7, 5))  # Turing: not in the portable engine
    with opened(model, precision="fp32", engine_cache=cache):
        pass
    assert installed.record["builds"] == 3 and installed.record["targets"] == [75]


@pytest.mark.parametrize("diagnostics, kept, reason", [
    (4, True, "the CUDA driver is too old"),
    (64 | 1, True, "it was built by another TensorRT-RTX release; the CUDA driver or runtime is not installed"),
    (2, True, "it was not built for this GPU's compute capability"),
    (0, True, "no reason given"),
    (1, False, "it was built by another TensorRT-RTX release"),
    (32, False, "it is malformed"),
])
def test_rtx_validity_decides_between_rebuilding_and_reporting(install, model, caplog, diagnostics, kept, reason):
    installed = install("tensorrt_rtx")
    with opened(model, precision="fp32"):
        pass
    (engine,) = (model.parent.parent / "engines").glob("*.engine")
    answers = iter([(2, diagnostics)])
    installed.record["validity"] = lambda: next(answers, (0, 0))  # invalid once, then valid
    caplog.set_level(logging.INFO, logger="segnet")
    if kept:
        error = open_error(model, precision="fp32")
        assert error.startswith("TensorRT-RTX 1.7.1.116 cannot load the engine on this machine: " + reason)
        assert error.endswith(f"(the engine {engine} is kept)") and "\n" not in error
        assert engine.is_file() and installed.record["builds"] == 1
    else:
        with opened(model, precision="fp32"):
            pass
        assert installed.record["builds"] == 2
        assert f"TensorRT-RTX 1.7.1.116 refuses it: {reason}" in "\n".join(said(caplog))


@pytest.mark.parametrize("error, kept", [
    ("IRuntime::deserializeCudaEngine: Error Code 1: Cuda Runtime (cudaError 35: CUDA driver version is "
     "insufficient for CUDA runtime version)", True),
    ("IRuntime::deserializeCudaEngine: Error Code 1: Myelin (out of memory)", True),
    ("IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not compatible with "
     "this version of TensorRT, expecting library version 10.16.1.11 got 10.15.0.0)", False),
    ("Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match", False),
])
def test_tensorrt_driver_problems_keep_the_engine_other_refusals_rebuild_it(install, model, error, kept):
    installed = install("tensorrt")
    with opened(model, precision="fp32"):
        pass
    (engine,) = (model.parent.parent / "engines").glob("*.engine")
    installed.record["fail"].add("deserialize")
    installed.record["deserialize_error"] = error
    error = open_error(model, precision="fp32")
    if kept:
        assert error.endswith(f"(the engine {engine} is kept)") and installed.record["builds"] == 1
        assert engine.is_file()
    else:  # removed, built again, and the fresh one refused too: an error, not a loop
        assert "cannot load the engine it just made" in error and installed.record["builds"] == 2


# --- ahead of time with TensorRT 10/11, targets ---------------------------------------------------------------


def test_tensorrt_builds_ahead_for_this_gpu_and_refuses_targets(install, model):
    installed = install("tensorrt", gpu=H200)
    cache = model.parent.parent / "engines"
    with pytest.raises(UsageError, match="target is for TensorRT-RTX: TensorRT 10.16.1.11 builds for the GPU"):
        build_ahead(model=model, engine_cache=cache, targets=((8, 9),))
    built = build_ahead(model=model, engine_cache=cache)
    assert ".fp16-flag.trt10.16.1.11.sm90." in built.path.name
    assert built.description == "FP16 TensorRT 10.16.1.11 engine for NVIDIA H200 (sm90)"
    with opened(model, engine_cache=cache):  # the run finds it
        pass
    assert installed.record["builds"] == 1
    record = json.loads(built.path.with_name(built.path.name + ".json").read_text())
    assert record["key"]["gpu_name"] == "NVIDIA H200" and record["key"]["targets"] == [[9, 0]]


def test_targets_are_read_from_sm_or_dotted_names():
    assert parse_targets("sm120, 8.9,sm89") == ((8, 9), (12, 0))
    for bad in ("sm90", "", "sm89,hopper"):
        with pytest.raises(UsageError, match="TensorRT-RTX builds for sm75, sm80, sm86, sm89, sm120, sm121") as info:
            parse_targets(bad)
        assert "Hopper (sm90) is not supported" in str(info.value)
