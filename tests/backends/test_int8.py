"""INT8 copies made for real with onnxruntime's static quantization, calibrated on real images and run in real
onnxruntime sessions: the default network's copy from the CamVid train images it ships, a tiny model calibrated
on a folder, the QDQ form TensorRT builds from, the cache (never beside the model) and the one-line errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from segnet.backends import int8
from segnet.backends.cache_dir import cache_dir
from segnet.backends.onnxruntime import OnnxRuntimeBackend
from segnet.errors import SegnetError, UsageError
from segnet.image_io import read_image
from segnet.preprocess import preprocess
from tests.support.models import make_fcn

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "fcn-resnet18-camvid-480x352" / "fcn_resnet18.onnx"
IMAGES = REPO / "data" / "images"
CAMVID = REPO.parent / "shared" / "data" / "camvid"


def ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """A user cache folder of its own (no SEGNET_CACHE), so the tests see where copies go by default."""
    monkeypatch.delenv("SEGNET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "segnet" / "engines"


def test_the_default_network_ships_camvid_train_images_only():
    shipped = int8.shipped_images(DEFAULT)
    assert shipped is not None
    names = {p.name for p in int8.calibration_images(shipped)}
    assert len(names) >= int8.MIN_IMAGES
    if (CAMVID / "train").is_dir():  # the shared copy of CamVid, where there is one
        assert names <= {p.name for p in (CAMVID / "train" / "images").iterdir()}
        assert not names & {p.name for p in (CAMVID / "val" / "images").iterdir()}


@pytest.mark.slow
def test_default_network_int8_copy_is_made_on_first_use_in_the_user_cache(user_cache, tmp_path):
    with OnnxRuntimeBackend(DEFAULT, precision="int8") as backend:
        assert backend.description == "onnxruntime (CPUExecutionProvider, INT8 model)"
        tensors = [preprocess(read_image(IMAGES / f"camvid_{i}.jpg"), 480, 352)[None] for i in (0, 1)]
        quantized = [backend.infer(t) for t in tensors]
    (copy,) = user_cache.glob("*.onnx")
    assert copy.name.startswith("fcn_resnet18.int8-qoperator.ba34bd965e1e2255.ort")
    assert not list(DEFAULT.parent.glob("*int8*"))  # never in the package or the checkout
    counts = ops(copy)
    assert counts["QLinearConv"] == 22 and "Conv" not in counts  # every convolution runs in INT8
    record = json.loads(int8.record_path(copy).read_text())
    assert record["method"] == "minmax" and record["format"] == "QOperator"
    assert record["calibration_count"] == len(record["calibration_images"]) == 16
    assert record["calibration_folder"] == str(DEFAULT.parent / "calibration")
    assert record["model_sha256"].startswith("ba34bd965e1e2255")
    with OnnxRuntimeBackend(DEFAULT) as fp32:
        reference = [fp32.infer(t) for t in tensors]
    for a, b in zip(reference, quantized):
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95  # same class in (nearly) every grid cell
    stamp = copy.stat().st_mtime_ns
    with OnnxRuntimeBackend(DEFAULT, precision="int8"):
        pass
    assert copy.stat().st_mtime_ns == stamp  # found in the cache, not calibrated again


def test_a_model_is_calibrated_on_a_folder_and_recorded(tmp_path):
    model = make_fcn(tmp_path / "m.onnx")
    prepare = int8.preparer(model, (1, 3, 32, 64))
    made = int8.int8_model(model, tmp_path / "cache", prepare, images=IMAGES)
    assert made.made and made.path.parent == tmp_path / "cache"
    assert ops(made.path)["QLinearConv"] == 2
    record = json.loads(made.record_path.read_text())
    assert record["calibration_folder"] == str(IMAGES) and record["calibration_count"] == len(list(IMAGES.glob("*")))
    assert record["calibration_images"] == sorted(p.name for p in IMAGES.iterdir())
    assert record["weights"] == "int8 per-channel, 7-bit range (reduce_range)"
    again = int8.int8_model(model, tmp_path / "cache", prepare)
    assert not again.made and again.path == made.path and again.record == record
    with OnnxRuntimeBackend(model, precision="int8", cache=tmp_path / "cache") as backend:
        x = preprocess(read_image(IMAGES / "city_0.jpg"), 64, 32)[None]
        assert backend.infer(x).shape == (1, 5, 1, 2)


def test_the_qdq_form_is_symmetric_int8_for_tensorrt(tmp_path):
    model = make_fcn(tmp_path / "m.onnx")
    made = int8.int8_model(model, tmp_path, int8.preparer(model, (1, 3, 32, 64)), images=IMAGES, form="qdq")
    loaded = onnx.load(str(made.path))
    counts = ops(made.path)
    assert counts["QuantizeLinear"] >= 2 and counts["DequantizeLinear"] >= 4 and counts["Conv"] == 2
    zero_points = [onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer if "zero_point" in t.name]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: what TensorRT's INT8 takes
    assert {z.dtype for z in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}  # int32: the biases


def test_a_model_without_calibration_says_how_to_make_one(tmp_path):
    model = make_fcn(tmp_path / "m.onnx")
    with pytest.raises(SegnetError) as info:
        OnnxRuntimeBackend(model, precision="int8", cache=tmp_path / "cache").__enter__()
    message = str(info.value)
    assert "\n" not in message and f"segnet-build-engine --model {model} --calibrate FOLDER" in message
    assert message.endswith("or use precision='fp32'")


def test_too_few_images_is_a_usage_error(tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for name in ("city_0.jpg", "city_1.jpg", "trail_0.jpg"):
        shutil.copy(IMAGES / name, few / name)
    with pytest.raises(UsageError) as info:
        int8.calibration_images(few)
    assert str(info.value) == (f"calibrate={str(few)!r}: 3 images; INT8 calibration needs at least 8 images like "
                               "those the network will see")
    with pytest.raises(UsageError, match="not a folder of images"):
        int8.calibration_images(tmp_path / "missing")


def test_int8_copies_never_go_beside_the_model(tmp_path, user_cache):
    model = make_fcn(tmp_path / "m.onnx")
    assert cache_dir(model) == user_cache  # nothing derived goes beside a model, INT8 copies included
    assert cache_dir(model, tmp_path / "chosen") == tmp_path / "chosen"


def test_many_images_are_taken_evenly_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "MAX_IMAGES", 4)
    chosen = int8.calibration_images(IMAGES)
    everything = sorted(p.name for p in IMAGES.iterdir())
    assert [p.name for p in chosen] == [everything[i] for i in (0, 3, 7, 10)]


def test_calibration_reports_progress_per_image(tmp_path):
    from segnet.progress import set_progress_factory

    bars: list = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.done, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, n: int = 1):
            self.done += n

        def reset(self, total=None):
            pass

        def close(self):
            self.closed = True

    model = make_fcn(tmp_path / "m.onnx")
    set_progress_factory(Bar)
    try:
        int8.int8_model(model, tmp_path, int8.preparer(model, (1, 3, 32, 64)), images=IMAGES)
    finally:
        set_progress_factory(None)
    (bar,) = bars
    count = len(list(IMAGES.iterdir()))
    assert bar.kwargs == {"total": count, "desc": "calibrating", "unit": "img", "bytes": False}
    assert bar.done == count and bar.closed


def test_segnet_bench_times_the_network_in_fp32_and_int8(tmp_path):
    """``segnet-bench`` on onnxruntime shows both CPU precisions, whichever one the run used; a model without
    an INT8 copy says why in one line instead of a time."""
    from segnet.benchmark import format_report, precisions
    from segnet.options import Options
    from tests.support.models import write_network

    net = write_network(tmp_path / "net", make_fcn, names=list("abcde"))
    options = Options(model=net, backend="onnxruntime", engine_cache=tmp_path / "cache")
    measured = {"batch": 1, "median_ms_per_call": 2.0, "ms_per_image": 2.0}
    missing = precisions(options, "onnxruntime (CPUExecutionProvider)", measured, 2, IMAGES / "city_0.jpg")
    assert missing["fp32"] is measured and "has no INT8 copy yet" in missing["int8"]["error"]
    model = net / "fcn_resnet18.onnx"
    int8.int8_model(model, tmp_path / "cache", int8.preparer(model, (1, 3, 32, 64)), images=IMAGES)
    both = precisions(options, "onnxruntime (CPUExecutionProvider)", measured, 2, IMAGES / "city_0.jpg")
    assert both["fp32"] is measured and both["int8"]["ms_per_image"] > 0
    assert precisions(options, "TensorRT-RTX 1.7.1.116 (FP16 engine)", measured, 2, IMAGES / "city_0.jpg") == {}
    report = {"images": 1, "input_size": [64, 32], "network": "net", "backend": "onnxruntime", "image_size": "as is",
              "visualize": "overlay", "format": "jpg", "batch_size": 1, "workers": 1, "worker_kind": "threads",
              "cores": 2, "network_only": [measured], "network_by_precision": both}
    line = next(x for x in _report_lines(format_report, report) if "by precision" in x)
    ratio = 2.0 / both["int8"]["ms_per_image"]
    assert line == (f"network only on onnxruntime, batch 1, by precision: fp32 2.00 ms/image, int8 "
                    f"{both['int8']['ms_per_image']:.2f} ms/image ({ratio:.2f}x fp32)")


def _report_lines(format_report, report: dict) -> list[str]:
    """The printed report, with made-up stage times (only the network lines are looked at)."""
    from segnet import benchmark

    full = dict.fromkeys(benchmark.STAGES, 0.001)
    run = {"stage_seconds": full, "cpu_stage_seconds": full, "seconds": 1.0, "images_per_s": 1.0,
           "bound": benchmark.bound({"stage_seconds": full, "cpu_stage_seconds": full, "seconds": 1.0,
                                     "cpu_seconds": 0.01}, 1, 2)}
    return format_report({**report, "sequential": run, "pipelined": run, "speedup": 1.0}).splitlines()
