import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["sky", "road", "car"]  # label 3 is void and must be ignored


def write_dataset(folder: Path, count: int, seed: int) -> tuple[Path, Path]:
    """``count`` 64x64 street-like pictures: sky above road, a car box, a void border; index PNG labels."""
    rng = np.random.default_rng(seed)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for i in range(count):
        label = np.zeros((64, 64), np.uint8)
        label[32:] = 1
        x, y = rng.integers(4, 40, size=2)
        label[y : y + 16, x : x + 20] = 2
        label[:2] = 3
        palette = np.array([[120, 160, 230], [90, 90, 90], [200, 30, 30], [0, 0, 0]], np.uint8)
        picture = palette[label] + rng.integers(0, 20, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(picture).save(images / f"frame{i:02d}.jpg", quality=95)
        Image.fromarray(label).save(labels / f"frame{i:02d}.png")
    return images, labels


@pytest.fixture
def tiny_data(tmp_path):
    return write_dataset(tmp_path / "train", 4, seed=0), write_dataset(tmp_path / "val", 2, seed=1)


def test_help_and_missing_torch_need_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from segnet.cli.train import main\n"
        "assert main(['--images', '.', '--labels', '.', '--classes', 'a,b', '--output', 'x']) == 1\n"
        "main(['--help'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--images DIR" in done.stdout and "example" in done.stdout
    assert "segnet-train: error: training needs PyTorch: pip install" in done.stderr


def test_training_exports_a_network_that_meets_the_model_contract(tiny_data, tmp_path, capsys):
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from segnet.cli.train import main

    (train_images, train_labels), (val_images, val_labels) = tiny_data
    out = tmp_path / "net"
    rc = main(["--images", str(train_images), "--labels", str(train_labels),
               "--val-images", str(val_images), "--val-labels", str(val_labels),
               "--classes", ",".join(NAMES), "--colors", "128 128 128;128 64 128",
               "--size", "64x64", "--epochs", "2", "--batch-size", "2", "--device", "cpu",
               "--whole-epochs", "1", "--class-weights", "sqrt-median", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "classes.txt").read_text().splitlines() == NAMES
    # the third class gets jetson's generated colour (VOC palette entry 3)
    assert (out / "colors.txt").read_text().splitlines() == ["128 128 128", "128 64 128", "128 128 0"]

    session = ort.InferenceSession(str(out / "fcn_resnet18.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input_0", [1, 3, 64, 64], "tensor(float)")
    assert outp.name == "output_0"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    (scores,) = session.run(None, {"input_0": x})
    assert scores.shape == (1, 3, 2, 2) and scores.dtype == np.float32
    assert np.isfinite(scores).all()

    summary = json.loads((out / "train.json").read_text())
    assert summary["epochs_done"] == 2
    assert summary["onnx_check"]["max_abs_diff"] < 1e-4
    assert set(summary["val"]["class_iou"]) == set(NAMES)
    assert summary["val"]["pixels"] == 2 * 62 * 64  # void rows are not counted
    assert "val: pixel accuracy" in capsys.readouterr().err


def test_exported_onnx_gives_the_torch_models_logits(tmp_path):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from segnet.training import export_onnx, fcn_resnet18

    torch.manual_seed(0)
    model = fcn_resnet18(5)
    for m in model.modules():  # non-trivial batch-norm statistics, so folding them is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    path = tmp_path / "fcn_resnet18.onnx"
    export_onnx(model, path, (96, 64))
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96), dtype=np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["output_0"], {"input_0": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 5, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_whole_view_is_exactly_the_inference_preprocessing(tmp_path):
    torch = pytest.importorskip("torch")
    from segnet.preprocess import preprocess
    from segnet.training import load_dataset, sample_views

    images, labels = tmp_path / "i", tmp_path / "l"
    images.mkdir(), labels.mkdir()
    rng = np.random.default_rng(2)
    picture = rng.integers(0, 256, size=(75, 100, 3), dtype=np.uint8)
    label = rng.integers(0, 4, size=(75, 100), dtype=np.uint8)
    Image.fromarray(picture).save(images / "a.png")
    Image.fromarray(label).save(labels / "a.png")
    data = load_dataset(images, labels, 3, torch.device("cpu"))

    x, y = sample_views(data, torch.tensor([0]), (64, 32))
    np.testing.assert_allclose(x[0].numpy(), preprocess(picture, 64, 32), atol=1e-5)
    rows = (np.arange(32) * np.float32(75 / 32)).astype(int)
    cols = (np.arange(64) * np.float32(100 / 64)).astype(int)
    expected = label[rows[:, None], cols[None, :]].astype(np.int64)
    expected[expected >= 3] = 255
    assert (y[0].numpy() == expected).all()


def test_zoomed_out_crop_is_padded_with_ignore_and_mean_colour(tiny_data):
    torch = pytest.importorskip("torch")
    from segnet.training import IGNORE, load_dataset, sample_views

    (images, labels), _ = tiny_data
    data = load_dataset(images, labels, 3, torch.device("cpu"))
    x, y = sample_views(data, torch.arange(4), (64, 64), scale=(0.5, 0.5), flip=True, jitter=0.25,
                        generator=torch.Generator().manual_seed(0))
    padded = y == IGNORE
    # half-size picture inside a full-size window: 3/4 of the window is padding, plus the void rows
    assert padded.float().mean().item() == pytest.approx(0.75 + 0.25 * 2 / 64, abs=0.02)
    assert (x.abs().sum(1)[padded & (torch.arange(64)[None, :, None] > 8)] == 0).float().mean() > 0.9
    assert set(y.unique().tolist()) <= {0, 1, 2, IGNORE}


def test_image_without_label_is_a_clear_error(tiny_data, tmp_path, capsys):
    pytest.importorskip("torch")
    from segnet.cli.train import main

    (images, labels), _ = tiny_data
    next(labels.iterdir()).unlink()
    rc = main(["--images", str(images), "--labels", str(labels), "--classes", "a,b,c",
               "--device", "cpu", "--output", str(tmp_path / "out")])
    assert rc == 1
    assert "have no label PNG of the same name" in capsys.readouterr().err


def test_size_must_be_multiples_of_32():
    proc = run_cli("--images", ".", "--labels", ".", "--classes", "a", "--output", "x", "--size", "100x64",
                   prog="segnet-train")
    assert_one_line_error(proc, 2, "100x64: width and height must be positive multiples of 32", prog="segnet-train")


def test_matmul_upsampling_equals_bilinear_interpolate():
    torch = pytest.importorskip("torch")
    from segnet.training import upsample_bilinear

    logits = torch.randn(2, 4, 3, 5)
    for size in [(96, 160), (37, 41), (2, 2)]:
        want = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(upsample_bilinear(logits, size), want, rtol=0, atol=1e-5)
