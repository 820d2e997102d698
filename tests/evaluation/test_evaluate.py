"""segnet-eval on a tiny generated dataset whose confusion matrix is known."""

import json

import numpy as np
import pytest
from PIL import Image

from segnet.evaluation import upsample_bilinear
from tests.conftest import one_hot
from tests.support.cli import run_cli

GRID = np.array([[0, 1]], np.uint8)  # predicted halves of every 64x64 image (class 2 never)


@pytest.fixture
def dataset(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    truth = np.kron(GRID, np.ones((64, 32), np.uint8))  # what the network predicts, upsampled
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"f{i}.jpg")
        label = truth.copy()
        label[:8, :32] = 2  # 256 pixels of class 2 predicted as 0
        label[60:, :] = 11 if i else 255  # void rows: ignored
        Image.fromarray(label, mode="L").save(labels / f"f{i}.png")
    return images, labels


def run_eval(*args):
    return run_cli(*args, prog="segnet-eval")


def test_eval_reports_the_known_confusion(constant_net, dataset):
    net = constant_net(one_hot(GRID, 3), width=64, height=64, names=["a", "b", "c"])
    proc = run_eval("--model", net, "--json", *dataset)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    counted = 3 * 60 * 64  # the last 4 rows are void
    assert result["pixels"] == counted and result["images"] == 3
    assert result["pixel_accuracy"] == pytest.approx((counted - 3 * 256) / counted)
    # per image: a has TP 32*60-256 = 1664 and FP 256; b is all right; c (256 pixels) is never predicted
    iou = {row["name"]: row["iou"] for row in result["per_class"]}
    assert iou == pytest.approx({"a": 1664 / 1920, "b": 1.0, "c": 0.0})
    assert result["mean_iou"] == pytest.approx((1664 / 1920 + 1 + 0) / 3)
    table = run_eval("--model", net, *dataset)
    assert table.returncode == 0 and "pixel accuracy 0.9" in table.stdout


def test_eval_errors_are_one_line(constant_net, dataset, tmp_path):
    net = constant_net(one_hot(GRID, 3), width=64, height=64)
    images, labels = dataset
    (labels / "f1.png").unlink()
    proc = run_eval("--model", net, images, labels)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 1 and len(errors) == 1 and errors[0].startswith("segnet-eval: error: no label")
    assert "Traceback" not in proc.stderr


def test_bilinear_upsampling_matches_torch():
    torch = pytest.importorskip("torch")
    scores = np.random.default_rng(0).normal(size=(4, 11, 15)).astype(np.float32)
    ours = upsample_bilinear(scores, 480, 360)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(scores)[None], size=(360, 480), mode="bilinear",
                                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
