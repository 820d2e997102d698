"""Backend agreement (``segnet-eval --compare``): two runs of a network on the same images, compared per image and in
total. Exact numbers with constant networks whose class maps are known; for real, onnxruntime FP32 against the
checked FP16 copy of a model, on the CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from segnet import Segmenter
from segnet.evaluation import upsample_bilinear
from segnet.evaluation.agreement import compare
from tests.conftest import IMAGES, one_hot
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_fcn

A = np.array([[0, 1, 2, 0]], np.uint8)
B = np.array([[0, 1, 1, 1]], np.uint8)  # differs from A in 2 of 4 cells


@pytest.fixture
def folder(tmp_path):
    """Three 64x16 images and labels: each label is A's class map upsampled, with its first 4 columns void."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    label = np.kron(A, np.ones((16, 16), np.uint8))
    label[:, :4] = 255
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 64, 3), dtype=np.uint8)).save(images / f"f{i}.png")
        Image.fromarray(label, mode="L").save(labels / f"f{i}.png")
    return images, labels


def test_agreement_accuracy_and_delta_of_two_known_runs(constant_net, folder):
    net_a = constant_net(one_hot(A, 3), width=64, height=16, names=["x", "y", "z"])
    net_b = constant_net(one_hot(B, 3), width=64, height=16, names=["x", "y", "z"])
    with Segmenter(model=net_a) as first, Segmenter(model=net_b) as second:
        result = compare(first, second, *folder)
    assert result["images"] == 3 and len(result["per_image"]) == 3
    assert result["agreement"] == 0.5  # 2 of the 4 grid cells
    # at label size (bilinear, then argmax) B differs from A where A says z and B says y: columns 32..47, plus the
    # half-cell blends around them; A matches its own labels everywhere the label is not void
    assert result["first"]["pixel_accuracy"] == 1.0 and result["first"]["mean_iou"] == 1.0
    picked = upsample_bilinear(one_hot(B, 3), 64, 16).argmax(0)
    truth = np.kron(A, np.ones((16, 16), np.uint8))
    counted = np.ones((16, 64), bool)
    counted[:, :4] = False
    assert result["second"]["pixel_accuracy"] == pytest.approx((picked == truth)[counted].mean())
    assert result["pixel_agreement"] == pytest.approx((picked == truth).mean())
    assert result["delta"]["pixel_accuracy"] == pytest.approx(result["second"]["pixel_accuracy"] - 1.0)
    assert result["delta"]["mean_iou"] < 0
    row = result["per_image"][0]
    assert row["image"] == "f0.png" and row["agreement"] == 0.5 and row["first"]["pixel_accuracy"] == 1.0


def test_without_labels_only_agreement(constant_net, folder):
    net = constant_net(one_hot(A, 3), width=64, height=16)
    with Segmenter(model=net) as first, Segmenter(model=net) as second:
        result = compare(first, second, folder[0])
    assert result["agreement"] == 1.0 and result["score_difference"] == 0.0
    assert "delta" not in result and "pixel_agreement" not in result
    assert set(result["per_image"][0]) == {"image", "agreement", "score_difference"}


def test_runs_of_different_networks_are_refused(constant_net, folder):
    with Segmenter(model=constant_net(one_hot(A, 3), width=64, height=16)) as first, \
            Segmenter(model=constant_net(one_hot(A, 4), width=64, height=16)) as second, \
            pytest.raises(Exception, match="score 3 and 4 classes: compare the same network"):
        compare(first, second, folder[0])


@pytest.fixture
def tiny_network(tmp_path):
    """A random stride-32 network (256x128 input, 5 classes, an 8x4 grid) in the zoo layout, and three of the
    bundled street images."""
    net = tmp_path / "net"
    make_fcn(net / "fcn_resnet18.onnx", width=256, height=128, classes=5)
    (net / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("city_0.jpg", "city_1.jpg", "camvid_0.jpg"):
        shutil.copy(IMAGES / name, images / name)
    return net, images


def test_eval_compare_fp32_against_the_fp16_copy_on_cpu(tiny_network, tmp_path):
    net, images = tiny_network
    # labels: the FP32 run's own class maps at 200x100, so its accuracy is 1 and the FP16 run's is the agreement
    labels = tmp_path / "labels"
    labels.mkdir()
    with Segmenter(model=net, backend="onnxruntime", ignore_class=None) as fp32:
        for image in sorted(images.iterdir()):
            result = fp32(image)
            picked = upsample_bilinear(result.scores, 200, 100).argmax(0).astype(np.uint8)
            Image.fromarray(picked, mode="L").save(labels / f"{image.stem}.png")
    proc = run_cli("--model", net, "--backend", "onnxruntime", "--compare", "backend=onnxruntime,precision=fp16",
                   "--engine-cache", tmp_path / "cache", "--json", images, labels, prog="segnet-eval")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["first"]["description"] == "onnxruntime (CPUExecutionProvider)"
    assert result["second"]["description"] == "onnxruntime (CPUExecutionProvider, FP16 model)"
    assert result["first"]["pixel_accuracy"] == 1.0 and result["first"]["mean_iou"] == 1.0
    assert result["second"]["pixel_accuracy"] == pytest.approx(result["pixel_agreement"])
    assert 0.9 < result["pixel_agreement"] <= 1.0 and 0.9 < result["agreement"] <= 1.0
    # FP16 weights move the scores a little, not the classes much
    assert 0 < result["score_difference"] < 0.05 and result["score_difference"] == max(
        row["score_difference"] for row in result["per_image"])
    assert result["delta"]["pixel_accuracy"] == pytest.approx(result["second"]["pixel_accuracy"] - 1.0)
    assert [row["image"] for row in result["per_image"]] == ["camvid_0.jpg", "city_0.jpg", "city_1.jpg"]
    assert list((tmp_path / "cache").glob("fcn_resnet18.fp16.*.onnx"))  # the checked copy, in the cache folder
    assert "converting" in proc.stderr and "to FP16" in proc.stderr

    table = run_cli("--model", net, "--backend", "onnxruntime", "--compare", "backend=onnxruntime,precision=fp16",
                    "--engine-cache", tmp_path / "cache", images, prog="segnet-eval")  # no labels: agreement only
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "net on 3 images"
    assert lines[1] == "A: onnxruntime (CPUExecutionProvider)"
    assert lines[2] == ("B: onnxruntime (CPUExecutionProvider, FP16 model)   "
                        "(--compare backend=onnxruntime,precision=fp16)")
    assert lines[3].split() == ["image", "agreement", "max", "|Δscore|"] and lines[-1].split()[0] == "total"
    assert float(lines[-1].split()[1]) == pytest.approx(result["agreement"], abs=1e-4)


def test_eval_compare_fp32_against_int8_names_both_sides(tiny_network, tmp_path):
    """``precision=fp32,precision=int8``: A runs FP32 and B the calibrated INT8 copy, whatever the default is."""
    from segnet.backends import int8

    net, images = tiny_network
    model = net / "fcn_resnet18.onnx"
    int8.int8_model(model, tmp_path / "cache", int8.preparer(model, (1, 3, 128, 256)), images=IMAGES)
    labels = tmp_path / "labels"
    labels.mkdir()
    with Segmenter(model=net, backend="onnxruntime", ignore_class=None) as fp32:
        for image in sorted(images.iterdir()):
            picked = upsample_bilinear(fp32(image).scores, 200, 100).argmax(0).astype(np.uint8)
            Image.fromarray(picked, mode="L").save(labels / f"{image.stem}.png")
    proc = run_cli("--model", net, "--backend", "onnxruntime", "--precision", "int8", "--compare",
                   "precision=fp32,precision=int8", "--engine-cache", tmp_path / "cache", "--json", images, labels,
                   prog="segnet-eval")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["first"]["description"] == "onnxruntime (CPUExecutionProvider)"
    assert result["second"]["description"] == "onnxruntime (CPUExecutionProvider, INT8 model)"
    assert result["first"]["pixel_accuracy"] == 1.0
    assert result["second"]["pixel_accuracy"] == pytest.approx(result["pixel_agreement"])
    assert 0.8 < result["pixel_agreement"] <= 1.0 and result["score_difference"] > 0
    assert result["delta"]["mean_iou"] == pytest.approx(result["second"]["mean_iou"] - result["first"]["mean_iou"])


def test_same_run_twice_is_said(constant_net, folder):
    net = constant_net(one_hot(A, 3), width=64, height=16)
    proc = run_cli("--model", net, "--backend", "onnxruntime", "--compare", "threads=1", folder[0],
                   prog="segnet-eval")
    assert proc.returncode == 0, proc.stderr
    assert "both runs use onnxruntime (CPUExecutionProvider): the options that differ do not change how" in proc.stderr


@pytest.mark.parametrize("args, code, words", [
    (["--compare", "alpha=3"], 2, "--compare alpha=3: give options as NAME=VALUE"),
    (["--compare", "precision"], 2, "--compare precision: give options as NAME=VALUE"),
    (["--compare", "precision=fp64"], 2, "--precision fp64: choose fp16, fp32 or int8"),
    (["--compare", "precision=fp32,precision=fp16,precision=int8"], 2,
     "--compare precision=fp32,precision=fp16,precision=int8: precision is given more than twice"),
    ([], 2, "give the folder of labels (or --compare OTHER to compare two runs without labels)"),
])
def test_bad_compare_is_one_line(constant_net, folder, args, code, words):
    net = constant_net(one_hot(A, 3), width=64, height=16)
    proc = run_cli("--model", net, *args, folder[0], prog="segnet-eval")
    assert_one_line_error(proc, code, words, prog="segnet-eval")
