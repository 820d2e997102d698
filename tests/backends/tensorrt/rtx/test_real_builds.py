"""Real TensorRT-RTX engine builds with segnet's own code, on a machine without a GPU: the shipped default network
FP32, FP16 and INT8 (explicit quantization: its QDQ copy calibrated on the CamVid train images it ships), a batch
profile of 1..8, compute-capability targets, the fused graph around it (uint8 images in, class map and every kind
of picture out, with the profile of image sizes), the PAN model, jetson-layout FCN-ResNet18 at
every zoo input size, the ``segnet-build-engine`` command, a broken model, and what a run then does with the
engines on a GPU TensorRT-RTX does not support or on one it does but cannot reach (no driver here).

The builds take half a minute, so these tests are marked ``rtx_build`` and deselected by default; ``.ci/run``
runs them apart (``python -m pytest -m rtx_build``) and prints the table of engine sizes and build times they
write to ``$SEGNET_BUILD_REPORT``. They need the TensorRT-RTX libraries and bindings in their own folder
(``$SEGNET_TRT_RTX``, default ``.trt-rtx`` in the project, where ``.ci/run`` installs them); without it they
skip, except in CI (``CI=true``), where that is a failure. No engine is loaded or run here: TensorRT-RTX refuses
to without a GPU and driver, and the tests check that it is refused cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segnet.util import file_sha256
from segnet.zoo.registry import NETWORKS

pytestmark = pytest.mark.rtx_build

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
RTX = Path(os.environ.get("SEGNET_TRT_RTX") or REPO / ".trt-rtx")
IN_CI = os.environ.get("CI", "").lower() == "true"
DEFAULT = REPO / "models" / "fcn-resnet18-camvid-480x352"
PAN = REPO / "data" / "models" / "pan-skin-clothes-hair" / "skin_clothes_hair_PAN_mnv3s_simplifier.onnx"
ZOO_SIZES = sorted({n.input_size for n in NETWORKS if n.archive.startswith("FCN-ResNet18-")} - {(480, 352)},
                   key=lambda s: (s[0] * s[1], s))
VERSION = "1.7.1.116"


def environment() -> dict:
    if not (RTX / "tensorrt_rtx_bindings").is_dir() or not (RTX / "tensorrt_rtx_libs").is_dir():
        reason = f"no TensorRT-RTX libraries and bindings in {RTX} (.ci/run installs them there)"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true)")
        pytest.skip(reason)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(RTX), str(REPO)]),
            "LD_LIBRARY_PATH": str(RTX / "tensorrt_rtx_libs")}


def broken_model(path: Path) -> Path:
    """A model whose convolution weights do not fit its kernel (onnx saves it; a parser must refuse it)."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input_0", "w"], ["output_0"], kernel_shape=[4, 4], strides=[32, 32])], "broken",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, 32, 64])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 5, 1, 2])],
        [numpy_helper.from_array(np.ones((5, 3, 2, 2), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    """Every job of ``realbuild.py`` in one subprocess (one import of the 230 MB library); results by id."""
    env = environment()
    root = tmp_path_factory.mktemp("rtx")
    cache, zoo = root / "engines", root / "zoo"
    rtx = {"engine_cache": str(cache), "tensorrt_flavour": "tensorrt_rtx"}
    jobs = [
        {"id": "default-fp32", "kind": "build", "options": {"model": str(DEFAULT), "precision": "fp32", **rtx}},
        {"id": "default-fp16", "kind": "build", "options": {"model": str(DEFAULT), "precision": "fp16", **rtx}},
        {"id": "default-int8", "kind": "build", "options": {"model": str(DEFAULT), "precision": "int8", **rtx}},
        {"id": "default-fp32-batch8", "kind": "build",
         "options": {"model": str(DEFAULT), "precision": "fp32", "batch_size": 8, **rtx}},
        {"id": "default-fp32-again", "kind": "build", "options": {"model": str(DEFAULT), "precision": "fp32", **rtx}},
        {"id": "default-fp32-sm89-sm120", "kind": "build", "targets": [[12, 0], [8, 9]],
         "options": {"model": str(DEFAULT), "precision": "fp32", **rtx}},
        {"id": "default-fp32-sm75", "kind": "build", "targets": [[7, 5]],
         "options": {"model": str(DEFAULT), "precision": "fp32", **rtx}},
        {"id": "default-fp16-fused", "kind": "build", "fused": "class map",
         "options": {"model": str(DEFAULT), "precision": "fp16", **rtx}},
        {"id": "default-fp16-fused-overlay", "kind": "build", "fused": "overlay",
         "options": {"model": str(DEFAULT), "precision": "fp16", **rtx}},
        *({"id": f"default-fp16-fused-{kind}", "kind": "build", "fused": kind, "remove": "engine",
           "options": {"model": str(DEFAULT), "precision": "fp16", **rtx}}
          for kind in ("mask", "composite", "classes")),
        {"id": "default-fp32-fused-overlay-batch8", "kind": "build", "fused": "overlay", "remove": "engine",
         "options": {"model": str(DEFAULT), "precision": "fp32", "batch_size": 8, **rtx}},
        {"id": "pan-fp16", "kind": "build", "options": {"model": str(PAN), "precision": "fp16", **rtx}},
        *({"id": f"zoo-{w}x{h}", "kind": "build", "generate": [w, h, 21], "remove": True,
           "options": {"model": str(zoo / f"{w}x{h}" / "fcn_resnet18.onnx"), "precision": "fp32", **rtx}}
          for w, h in ZOO_SIZES),
        {"id": "broken", "kind": "build", "options": {"model": str(broken_model(root / "broken.onnx")),
                                                      "precision": "fp32", **rtx}},
        {"id": "broken-fp16", "kind": "build", "options": {"model": str(root / "broken.onnx"), **rtx}},
        {"id": "open-h200-auto", "kind": "open", "gpu": ["NVIDIA H200", [9, 0]],
         "options": {"model": str(DEFAULT / "fcn_resnet18.onnx"), "precision": "fp32", "backend": "auto", **rtx}},
        {"id": "open-4090-tensorrt", "kind": "open", "gpu": ["NVIDIA GeForce RTX 4090", [8, 9]],
         "options": {"model": str(DEFAULT / "fcn_resnet18.onnx"), "precision": "fp32", "backend": "tensorrt", **rtx}},
        {"id": "open-4090-auto", "kind": "open", "gpu": ["NVIDIA GeForce RTX 4090", [8, 9]],
         "options": {"model": str(DEFAULT / "fcn_resnet18.onnx"), "precision": "fp32", "backend": "auto", **rtx}},
    ]
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(HERE / "realbuild.py"), str(root / "jobs.json")], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    results = {r["id"]: r for r in out["results"]}
    write_report(out, results)
    return {"meta": out, "cache": cache, "env": env, **results}


def write_report(out: dict, results: dict) -> None:
    """The table of engine sizes and build times, for the CI log (``$SEGNET_BUILD_REPORT``)."""
    lines = [f"Real TensorRT-RTX {out['version']} builds on this machine (no GPU; no CUDA package for Python), "
             "by segnet.backends.tensorrt.build_ahead:",
             f"{'build':<34} {'precision':<10} {'graph':<15} {'batch':>5} {'targets':<12} {'engine MB':>9} "
             f"{'build s':>8}"]
    for job_id, r in results.items():
        if "size" not in r:
            continue
        key = r["key"]
        batch = dict(key["builder_settings"]).get("batch_profile", [1, 1, 1])[2]
        graph = dict(key["builder_settings"]).get("graph", "network")
        targets = "-".join(f"sm{a}{b}" for a, b in key["targets"]) or "portable"
        seconds = f"{r['seconds']:.2f}" if r["built"] else "cached"
        lines.append(f"{job_id:<34} {key['precision']:<10} {graph:<15} {batch:>5} {targets:<12} "
                     f"{r['size'] / 1e6:>9.1f} {seconds:>8}")
    lines.append("(build s: parse, FP16 conversion and check where FP16, INT8 calibration where INT8, the fused "
                 "graph where fused, build, serialise, write to the cache. "
                 "No engine was loaded or run.)")
    text = "\n".join(lines) + "\n"
    print(text)
    if os.environ.get("SEGNET_BUILD_REPORT"):
        Path(os.environ["SEGNET_BUILD_REPORT"]).write_text(text)


def engine_file(result: dict) -> Path:
    return Path(result["path"])


def test_the_real_library_builds_without_a_gpu_or_cuda_package(real):
    meta = real["meta"]
    assert meta["module"] == "tensorrt_rtx_bindings" and meta["version"] == VERSION
    assert Path(meta["library"]).parent.parent == RTX  # the folder of its own, not the test environment
    built = [r for r in meta["results"] if "size" in r]
    assert len(built) == 14 + len(ZOO_SIZES)  # realbuild.py blocks CUDA packages: none was needed for any


def test_default_network_fp32_and_fp16(real):
    fp32, fp16 = real["default-fp32"], real["default-fp16"]
    assert fp32["built"] and fp16["built"]
    assert fp32["name"].startswith(f"fcn_resnet18.onnx.fp32.rtx{VERSION}.portable.")
    assert fp16["name"].startswith(f"fcn_resnet18.onnx.fp16-model.rtx{VERSION}.portable.")
    for result in (fp32, fp16):
        key = result["key"]
        assert key["flavour"] == "tensorrt_rtx" and key["gpu_name"] == "" and key["targets"] == []
        assert key["input_shape"] == [1, 3, 352, 480]
        assert engine_file(result).stat().st_size == result["size"]
    # FP16 weights: the FP16 engine is about half the FP32 one (11 classes, 11.2 M parameters: 45 MB in FP32)
    assert 40e6 < fp32["size"] < 60e6 and 0.4 < fp16["size"] / fp32["size"] < 0.6
    assert [line for line in fp16["status"] if "converting" in line]  # through fp16.py's checked converter
    (copy,) = real["cache"].glob("fcn_resnet18.fp16.*.onnx")
    assert {t.data_type for t in onnx.load(str(copy)).graph.initializer} == {TensorProto.FLOAT16}


def test_default_network_int8_from_its_calibrated_qdq_copy(real):
    result = real["default-int8"]
    assert "error" not in result, result.get("error")
    assert result["built"] and result["name"].startswith(f"fcn_resnet18.onnx.int8-qdq.rtx{VERSION}.portable.")
    assert engine_file(result).stat().st_size == result["size"]
    # INT8 weights: about a quarter of the FP32 engine, a little more (scales, FP32 biases)
    assert 0.2 < result["size"] / real["default-fp32"]["size"] < 0.4
    assert [line for line in result["status"] if "(its calibrated INT8 QDQ copy)" in line]
    (copy,) = real["cache"].glob("fcn_resnet18.int8-qdq.*.onnx")
    assert dict(result["key"]["builder_settings"])["int8_copy"] == file_sha256(copy)[:16]
    record = json.loads(copy.with_suffix(".json").read_text())
    assert record["calibration_folder"] == str(DEFAULT / "calibration") and record["calibration_count"] == 16


def test_a_second_build_finds_the_engine_in_the_cache(real):
    again = real["default-fp32-again"]
    assert not again["built"] and again["path"] == real["default-fp32"]["path"]
    assert again["status"] == []  # no "building" line: nothing built, nothing loaded


def test_batch_profile_1_to_8(real):
    result = real["default-fp32-batch8"]
    assert dict(result["key"]["builder_settings"])["batch_profile"] == [1, 8, 8]
    assert result["path"] != real["default-fp32"]["path"] and result["size"] > 0


def test_targets_name_the_engine_and_turing_needs_its_own(real):
    two, turing = real["default-fp32-sm89-sm120"], real["default-fp32-sm75"]
    assert ".fp32.rtx1.7.1.116.sm89-sm120." in two["name"] and two["key"]["targets"] == [[8, 9], [12, 0]]
    assert ".fp32.rtx1.7.1.116.sm75." in turing["name"]
    assert len({two["path"], turing["path"], real["default-fp32"]["path"]}) == 3
    assert turing["size"] != real["default-fp32"]["size"]  # Turing kernels differ from the portable set


def test_fused_graph_class_map_only_and_overlay(real):
    plain, fused, overlay = real["default-fp16"], real["default-fp16-fused"], real["default-fp16-fused-overlay"]
    for result, graph, words in ((fused, "fused", "class map"), (overlay, "fused-overlay", "class map and overlay "
                                                                                         "drawing")):
        assert "error" not in result, result.get("error")
        assert result["built"]
        assert result["name"].startswith(f"fcn_resnet18.onnx.fp16-model.{graph}.rtx{VERSION}.portable.")
        settings = dict(result["key"]["builder_settings"])
        assert settings["graph"] == graph and settings["image_sides"] == [1, 4096]
        spec = settings["fused"]
        assert (spec["width"], spec["height"], spec["num_classes"], spec["layout"]) == (480, 352, 11, "NCHW")
        assert result["key"]["input_shape"] == [1, 3, 352, 480] and engine_file(result).stat().st_size == result["size"]
        assert 0.95 < result["size"] / plain["size"] < 1.1  # the FP16 network, and a few small layers around it
        assert [line for line in result["status"] if f", with pre-processing, {words} in the graph — once" in line]
    assert len({plain["path"], fused["path"], overlay["path"]}) == 3


@pytest.mark.parametrize("kind", ["mask", "composite", "classes"])
def test_fused_graph_drawing_every_other_picture(real, kind):
    result = real[f"default-fp16-fused-{kind}"]
    assert "error" not in result, result.get("error")
    assert result["built"] and f".fp16-model.fused-{kind}.rtx{VERSION}.portable." in result["name"]
    assert 0.95 < result["size"] / real["default-fp16"]["size"] < 1.1
    assert not engine_file(result).exists()  # removed after measuring, to keep the disk small


def test_fused_graph_with_a_batch_profile(real):
    result = real["default-fp32-fused-overlay-batch8"]
    assert "error" not in result, result.get("error")
    settings = dict(result["key"]["builder_settings"])
    assert settings["batch_profile"] == [1, 8, 8] and settings["graph"] == "fused-overlay"
    # 8 images of 1440x1440 at most: at 4096x4096 the build asked for 1.1 GB of workspace and failed
    assert settings["image_sides"] == [1, 1440]
    assert 0.95 < result["size"] / real["default-fp32"]["size"] < 1.1


def test_pan_model(real):
    result = real["pan-fp16"]
    assert "error" not in result, result.get("error")
    assert result["key"]["input_shape"] == [1, 3, 512, 512] and result["size"] > 1e6


@pytest.mark.parametrize("size", ZOO_SIZES, ids=[f"{w}x{h}" for w, h in ZOO_SIZES])
def test_jetson_layout_fcn_resnet18_at_every_zoo_size(real, size):
    w, h = size
    result = real[f"zoo-{w}x{h}"]
    assert "error" not in result, result.get("error")
    assert result["built"] and result["key"]["input_shape"] == [1, 3, h, w]
    assert 40e6 < result["size"] < 60e6  # ResNet-18 + FCN head, 21 classes, FP32 weights
    assert not engine_file(result).exists()  # removed after measuring, to keep the disk small


def test_broken_model_gives_the_real_parsers_error_in_one_line(real):
    error = real["broken"]["error"]
    assert error.startswith(f"TensorRT-RTX {VERSION} cannot parse ") and "\n" not in error
    assert "(node 0 " in error  # the real parser names the node
    assert not list(real["cache"].glob("broken.onnx.*.engine"))
    fp16 = real["broken-fp16"]["error"]  # FP16 first converts and checks with onnxruntime, which refuses it
    assert fp16.startswith(f"cannot convert {real['cache'].parent / 'broken.onnx'} to FP16 (onnxruntime cannot run it")
    assert fp16.endswith("use --precision fp32 if the model is fine") and "\n" not in fp16


def test_auto_on_a_gpu_tensorrt_rtx_does_not_support_falls_back_in_one_line(real):
    result = real["open-h200-auto"]
    assert result["description"] == "onnxruntime (CPUExecutionProvider)" and result["shape"] == [1, 11, 11, 15]
    assert result["status"] == [
        f"TensorRT not used, running on onnxruntime: TensorRT-RTX {VERSION} does not support this GPU (NVIDIA H200, "
        "compute capability 9.0): it runs on compute capability 7.5, 8.0, 8.6, 8.9, 12.0, 12.1 (RTX and RTX PRO "
        "cards, A100, Blackwell); other NVIDIA GPUs need TensorRT: pip install 'segnet[tensorrt]'"]


def test_an_engine_the_machine_cannot_load_is_reported_and_kept(real):
    # a supported GPU (stand-in) but no driver: the real validity check refuses; the engine is not deleted
    chosen = Path(real["default-fp32-sm89-sm120"]["path"])  # built ahead for sm89: what a run on an RTX 4090 takes
    error = real["open-4090-tensorrt"]["error"]
    assert error.startswith(f"TensorRT-RTX {VERSION} cannot load the engine on this machine: ") and "\n" not in error
    assert error.endswith(f"(the engine {chosen} is kept)")
    assert chosen.is_file() and chosen.stat().st_size == real["default-fp32-sm89-sm120"]["size"]
    auto = real["open-4090-auto"]
    assert auto["description"] == "onnxruntime (CPUExecutionProvider)"
    assert auto["status"] == [f"TensorRT not used, running on onnxruntime: {error}"]
    assert not any("building" in line for line in auto["status"])  # found in the cache, not built again


def test_segnet_build_engine_command(real, tmp_path):
    command = [sys.executable, "-m", "segnet.cli.build_engine", "--model", str(DEFAULT), "--tensorrt-flavour",
               "tensorrt_rtx", "--engine-cache", str(tmp_path)]
    done = subprocess.run(command, env=real["env"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    summary, path, fused_summary, fused_path, overlay_summary, overlay_path = done.stdout.splitlines()
    assert summary.startswith("built in ") and summary.endswith(" MB")
    assert f": FP16 TensorRT-RTX {VERSION} engine for every GPU it supports by default (sm80, sm86, sm89, sm120, " \
           "sm121), " in summary
    assert fused_summary.endswith(" MB") and ", with pre-processing, class map in the graph, " in fused_summary
    assert ", with pre-processing, class map and overlay drawing in the graph, " in overlay_summary
    # the same keys the library builds had, whatever machine builds them: a later run looks for these names
    assert Path(path).parent == tmp_path and Path(path).name == real["default-fp16"]["name"]
    assert Path(fused_path).name == real["default-fp16-fused"]["name"]
    assert Path(overlay_path).name == real["default-fp16-fused-overlay"]["name"]
    again = subprocess.run(command + ["--target", "sm90"], env=real["env"], capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 2 and again.stderr.startswith("segnet-build-engine: error: --target sm90: ")
    assert len(again.stderr.splitlines()) == 1
