"""``segnet-build-engine`` in this process, with a stand-in TensorRT-RTX module where the real one would be
imported from (the real library builds in ``tests/backends/tensorrt/rtx``): what it prints, what it writes where a
later run looks, and its one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from segnet.backends import tensorrt as trt_backend
from segnet.backends.tensorrt import cuda as cuda_layer
from tests.backends.tensorrt.fakes import FakeCuda, fake_tensorrt
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_fcn, write_network

MODULES = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings")
IMAGES = Path(__file__).resolve().parents[2] / "data" / "images"


@pytest.fixture
def rtx(monkeypatch):
    """A stand-in TensorRT-RTX, importable as ``tensorrt_rtx``; no GPU and no CUDA package."""
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    record: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", fake_tensorrt(FakeCuda(), record, "tensorrt_rtx"))

    def no_cuda(*args, **kwargs):
        raise AssertionError("building with TensorRT-RTX must not touch CUDA")

    monkeypatch.setattr(cuda_layer, "open_cuda", no_cuda)
    trt_backend.unusable_reason.cache_clear()
    return record


@pytest.fixture
def network(tmp_path):
    return write_network(tmp_path / "net", make_fcn, names=list("abcde"))


def build(*args):
    return run_cli(*args, prog="segnet-build-engine")


def test_builds_the_portable_engine_into_the_cache_then_finds_it(rtx, network, tmp_path):
    proc = build("--model", network, "--precision", "fp32", "--engine-cache", tmp_path / "engines", "--fuse", "off")
    assert proc.returncode == 0, proc.stderr
    summary, path = proc.stdout.splitlines()
    assert summary.startswith("built in ") and summary.endswith(" MB")
    assert ": FP32 TensorRT-RTX 1.7.1.116 engine for every GPU it supports by default (sm80, sm86, sm89, sm120, " \
           "sm121), " in summary
    assert path.startswith(str(tmp_path / "engines" / "fcn_resnet18.onnx.fp32.rtx1.7.1.116.portable."))
    assert proc.stderr.startswith("segnet: building FP32 TensorRT-RTX 1.7.1.116 engine for every GPU")
    again = build("--model", network, "--precision", "fp32", "--engine-cache", tmp_path / "engines", "--fuse", "off")
    assert again.returncode == 0 and again.stdout.splitlines() == [summary.replace(
        summary[:summary.index(":")], "already in the cache"), path]
    assert rtx["builds"] == 1


def test_the_fused_engines_a_run_on_a_gpu_loads_are_built_too(rtx, network, tmp_path):
    proc = build("--model", network, "--precision", "fp32", "--engine-cache", tmp_path, "--visualize", "mask")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 6 and rtx["builds"] == 3
    assert ", with pre-processing, class map in the graph, " in lines[2]
    assert ", with pre-processing, class map and mask drawing in the graph, " in lines[4]
    names = [Path(line).name for line in lines[1::2]]
    assert [name.split(".rtx")[0] for name in names] == ["fcn_resnet18.onnx.fp32", "fcn_resnet18.onnx.fp32.fused",
                                                         "fcn_resnet18.onnx.fp32.fused-mask"]
    assert rtx["profiles"][0]["segnet_image"][2] == [1, 4096, 4096, 3]  # the last one built: the mask's
    again = build("--model", network, "--precision", "fp32", "--engine-cache", tmp_path, "--visualize", "mask")
    assert [line.split(":")[0] for line in again.stdout.splitlines()[::2]] == ["already in the cache"] * 3
    assert again.stdout.splitlines()[1::2] == lines[1::2] and rtx["builds"] == 3


def test_targets_and_batch_size_make_their_own_engine(rtx, network, tmp_path):
    proc = build("--model", network, "--target", "sm120,sm89", "--batch-size", "4", "--engine-cache", tmp_path,
                 "--fuse", "off")
    assert proc.returncode == 0, proc.stderr
    assert ": FP16 TensorRT-RTX 1.7.1.116 engine for sm89, sm120, " in proc.stdout
    assert ".fp16-model.rtx1.7.1.116.sm89-sm120." in proc.stdout.splitlines()[1]
    assert rtx["targets"] == [89, 120] and rtx["profiles"][0]["input_0"][2][0] == 4


@pytest.mark.parametrize("args, code, words", [
    (["--target", "sm90"], 2, "--target sm90: TensorRT-RTX builds for sm75, sm80, sm86, sm89, sm120, sm121"),
    (["--precision", "int4"], 2, "--precision int4: choose fp16, fp32 or int8"),
    (["--threads", "2"], 2, "unrecognized option --threads (see --help)"),
    (["--backend", "tensorrt"], 2, "unrecognized option --backend (see --help)"),
])
def test_usage_errors_are_one_line(rtx, network, args, code, words):
    assert_one_line_error(build("--model", network, *args), code, words, prog="segnet-build-engine")


def test_without_tensorrt_says_what_to_install(network, monkeypatch):
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    assert_one_line_error(build("--model", network), 1, "pip install 'segnet[tensorrt-rtx]'",
                          prog="segnet-build-engine")


def test_broken_model_is_one_line(rtx, network):
    rtx["fail"].add("parse")
    assert_one_line_error(build("--model", network, "--precision", "fp32"), 1,
                          "TensorRT-RTX 1.7.1.116 cannot parse", prog="segnet-build-engine")


def test_help_lists_the_network_and_engine_options_only():
    proc = build("--help")
    assert proc.returncode == 0
    for flag in ("--network", "--model", "--labels", "--precision", "--batch-size", "--engine-cache",
                 "--tensorrt-flavour", "--target", "--fuse", "--visualize", "--ignore-class", "--mean"):
        assert flag in proc.stdout, flag
    for flag in ("--backend", "--threads", "--alpha", "--workers"):
        assert flag not in proc.stdout, flag


def test_calibrate_makes_both_int8_copies_without_tensorrt(network, tmp_path, monkeypatch):
    for name in MODULES:  # calibration alone needs onnxruntime only
        monkeypatch.setitem(sys.modules, name, None)
    proc = build("--model", network, "--calibrate", IMAGES, "--engine-cache", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("calibrated in ") and lines[2].startswith("calibrated in ")
    assert lines[0].endswith(f" on {len(list(IMAGES.iterdir()))} images: INT8 copy (QOperator, for onnxruntime), "
                             f"{Path(lines[1]).stat().st_size / 1e6:.1f} MB")
    assert ": INT8 copy (QDQ, for TensorRT), " in lines[2]
    assert Path(lines[1]).name.startswith("fcn_resnet18.int8-qoperator.")
    assert Path(lines[3]).name.startswith("fcn_resnet18.int8-qdq.")
    for copy in (Path(lines[1]), Path(lines[3])):
        record = json.loads(copy.with_suffix(".json").read_text())
        assert record["calibration_folder"] == str(IMAGES) and record["method"] == "minmax"
    assert proc.stderr.count("segnet: calibrating the INT8 copy") == 2
    # the run finds the copy: --precision int8 on onnxruntime, no calibration again
    run = run_cli("--model", network, "--backend", "onnxruntime", "--precision", "int8", "--engine-cache",
                  tmp_path / "cache", "--stats", IMAGES / "city_0.jpg")
    assert run.returncode == 0, run.stderr
    assert "calibrating" not in run.stderr and "num classes: 5" in run.stdout


def test_calibrate_on_too_few_images_is_one_usage_line(network, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.jpg").write_bytes((IMAGES / "city_0.jpg").read_bytes())
    proc = build("--model", network, "--calibrate", few, "--engine-cache", tmp_path / "cache")
    assert_one_line_error(proc, 2, f"--calibrate {few}: 1 image; INT8 calibration needs at least 8 images",
                          prog="segnet-build-engine")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.onnx"))


def test_calibrate_and_precision_int8_build_the_engine_from_the_qdq_copy(rtx, network, tmp_path):
    proc = build("--model", network, "--calibrate", IMAGES, "--precision", "int8", "--engine-cache", tmp_path,
                 "--fuse", "off")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 6 and lines[4].startswith("built in ")
    assert ": INT8 TensorRT-RTX 1.7.1.116 engine for every GPU it supports by default" in lines[4]
    assert ".int8-qdq.rtx1.7.1.116.portable." in lines[5]
    assert "(its calibrated INT8 QDQ copy)" in proc.stderr
    ops = {n.op_type for n in rtx["parsed_model"].graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # explicit quantization: what TensorRT fuses
    # a later build finds it; a new calibration is a new engine (its key holds the copy's hash)
    again = build("--model", network, "--precision", "int8", "--engine-cache", tmp_path, "--fuse", "off")
    assert again.returncode == 0 and again.stdout.splitlines()[1] == lines[5] and rtx["builds"] == 1
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for image in sorted(IMAGES.iterdir())[:8]:
        (fewer / image.name).write_bytes(image.read_bytes())
    other = build("--model", network, "--calibrate", fewer, "--precision", "int8", "--engine-cache", tmp_path,
                  "--fuse", "off")
    assert other.returncode == 0 and other.stdout.splitlines()[5] != lines[5] and rtx["builds"] == 2


def test_precision_int8_without_calibration_says_how(rtx, network, tmp_path):
    assert_one_line_error(build("--model", network, "--precision", "int8", "--engine-cache", tmp_path), 1,
                          "has no INT8 copy yet: calibrate one on images like those it will see with "
                          "segnet-build-engine --model ", prog="segnet-build-engine")
