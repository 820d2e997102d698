"""segnet-console through its real entry point, on tiny constant-score networks and real images."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segnet
from segnet import labels
from tests.conftest import GRID, IMAGES, one_hot
from tests.support import reference
from tests.support.cli import assert_one_line_error, run_cli, run_process

NAMES = ["background", "road", "car", "sky"]
VOID_NAMES = ["void", "road", "car", "sky"]
COLORS = [(10, 20, 30), (200, 100, 0, 90), (0, 255, 0), (40, 40, 220, 255)]  # class 1: explicit alpha


@pytest.fixture
def grid_net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64, names=NAMES, colors=COLORS)


def expected(image, mode, visualize, alpha=120.0, classes=GRID):
    colors = labels.class_colors(4, [(*c, None) if len(c) == 3 else c for c in COLORS], alpha)
    h, w = image.shape[:2]
    if visualize == "mask":
        return reference.mask(classes, colors, w, h, mode)
    if visualize == "overlay":
        return reference.overlay(image, classes, colors, mode)
    return reference.composite(image, classes, colors, mode)


def close_to(actual, wanted):
    assert actual.shape == wanted.shape
    diff = np.abs(actual.astype(int) - wanted.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()}"


@pytest.mark.parametrize("mode", ["point", "linear"])
@pytest.mark.parametrize("visualize", ["mask", "overlay", "overlay,mask", "mask|overlay"])
def test_pictures_match_the_spec(grid_net, tmp_path, mode, visualize):
    source = IMAGES / "object_0.jpg"  # 500x333: odd height, not a multiple of the grid
    out = tmp_path / "out.png"
    proc = run_cli("--model", grid_net, f"--filter-mode={mode}", f"--visualize={visualize}", source, out)
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(Image.open(source).convert("RGB"))
    kind = visualize if visualize in ("mask", "overlay") else "composite"
    close_to(np.asarray(Image.open(out)), expected(image, mode, kind))


def test_alpha_option_changes_default_classes_only(grid_net, tmp_path):
    source = IMAGES / "peds_2.jpg"
    out = tmp_path / "out.png"
    assert run_cli("--model", grid_net, "--alpha=200", "--filter-mode=point", source, out).returncode == 0
    image = np.asarray(Image.open(source).convert("RGB"))
    actual = np.asarray(Image.open(out))
    close_to(actual, expected(image, "point", "overlay", alpha=200))
    # the cell of class 1 (explicit alpha 90) is the same as with the default alpha
    default = expected(image, "point", "overlay", alpha=120)
    h, w = image.shape[:2]
    cell = (slice(0, h // 2 - 1), slice(w // 4 + 1, w // 2 - 1))  # grid cell (1, 0): class 1
    assert np.abs(actual[cell].astype(int) - default[cell].astype(int)).max() <= 1


def test_ignore_class_removes_it_from_the_argmax(constant_net, tmp_path):
    scores = one_hot(GRID, 4)
    scores[2] += 0.5 * (GRID == 0)  # where void wins, car is second
    net = constant_net(scores, width=128, height=64, names=VOID_NAMES, colors=COLORS)
    source = IMAGES / "humans_0.jpg"
    image = np.asarray(Image.open(source).convert("RGB"))
    without_void = np.where(GRID == 0, 2, GRID).astype(np.uint8)
    for flag, classes in (([], without_void), (["--ignore-class=none"], GRID),
                          (["--ignore-class=VOID"], without_void)):
        out = tmp_path / "mask.png"
        proc = run_cli("--model", net, "--visualize=mask", *flag, source, out)
        assert proc.returncode == 0, proc.stderr
        close_to(np.asarray(Image.open(out)), expected(image, "linear", "mask", classes=classes))


def test_generated_colours_for_missing_lines(constant_net, tmp_path):
    net = constant_net(one_hot(np.array([[5]], np.uint8), 6), width=32, height=32)  # no labels/colors
    out = tmp_path / "m.bmp"
    assert run_cli("--model", net / "fcn_resnet18.onnx", "--visualize=mask", IMAGES / "room_0.jpg",
                   out).returncode == 0
    assert np.unique(np.asarray(Image.open(out)).reshape(-1, 3), axis=0).tolist() == [[0, 128, 128]]


def test_stats_prints_the_histogram(constant_net):
    net = constant_net(one_hot(GRID, 4), width=128, height=64, names=VOID_NAMES, colors=COLORS)
    proc = run_cli("--model", net, "--stats", IMAGES / "city_0.jpg")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "grid size: 4x2" and lines[1] == "num classes: 4"
    rows = {int(line.split()[0]): line.split() for line in lines[3:]}
    # void is ignored by default: its 2 cells go to the next best class (all 0 there -> class 1)
    assert rows[0][1:] == ["void", "0", "0.000000"]
    assert rows[1][1:] == ["road", "4", "0.500000"]
    assert rows[3][1:] == ["sky", "2", "0.250000"]


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tga", ".bmp"])
def test_output_format_follows_extension(grid_net, tmp_path, ext):
    out = tmp_path / f"out{ext}"
    assert run_cli("--model", grid_net, IMAGES / "trail_0.jpg", out).returncode == 0
    with Image.open(out) as im:
        assert im.size == (869, 479)
        assert im.format == {".jpg": "JPEG", ".png": "PNG", ".tga": "TGA", ".bmp": "BMP"}[ext]


def test_directory_and_glob_inputs_write_a_directory(grid_net, tmp_path):
    for spec in (IMAGES, str(IMAGES / "city_*.jpg")):
        out = tmp_path / f"out{len(str(spec))}"
        proc = run_cli("--model", grid_net, spec, out)
        assert proc.returncode == 0, proc.stderr
        names = sorted(p.name for p in out.iterdir())
        if spec == IMAGES:
            assert names == sorted(p.name for p in IMAGES.glob("*.jpg"))
        else:
            assert names == [f"city_{i}.jpg" for i in range(6)]


def test_tiny_and_odd_images(grid_net, tmp_path):
    for w, h in ((1, 1), (7, 3), (719, 1080)):
        src = tmp_path / f"in{w}x{h}.png"
        Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src)
        out = tmp_path / f"out{w}x{h}.png"
        proc = run_cli("--model", grid_net, "--visualize=overlay,mask", src, out)
        assert proc.returncode == 0, proc.stderr
        assert Image.open(out).size == (w + w // 2, h)


def test_no_output_and_no_stats_is_a_usage_error_that_writes_nothing(grid_net, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("--model", grid_net, IMAGES / "city_1.jpg", cwd=work)
    assert_one_line_error(proc, 2, "give an output (a picture, a folder, a sequence like out_%04i.jpg, a video, a "
                                   "stream or display://0) or --stats: without either nothing would be written or "
                                   "printed")
    stats = run_cli("--model", grid_net, "--stats", IMAGES / "city_1.jpg", cwd=work)
    assert stats.returncode == 0 and "grid size: 4x2" in stats.stdout and list(work.iterdir()) == []


def test_console_scripts_are_installed(tmp_path):
    for name in ("segnet-console", "segnet"):
        exe = shutil.which(name)
        assert exe, f"{name} is not on PATH (pip install -e .)"
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.startswith("segnet-console ")


def test_help_and_version_work_without_onnxruntime(tmp_path):
    """A stub onnxruntime that fails to import stands first on the path, as in a bare environment."""
    stub = tmp_path / "stub"
    for module in ("onnxruntime", "tensorrt", "torch", "pycuda", "cuda"):
        (stub / module).mkdir(parents=True)
        (stub / module / "__init__.py").write_text(f"raise ImportError('{module} is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub), str(Path(__file__).parents[1])])}
    help_ = run_process("--help", env=env)
    assert help_.returncode == 0 and "--filter-mode" in help_.stdout and "fcn-resnet18-voc-320x320" in help_.stdout
    version = run_process("--version", env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"segnet-console {segnet.__version__}"
    # and running without onnxruntime says how to install it
    proc = run_process("--model", tmp_path / "x.onnx", IMAGES / "city_0.jpg", env=env)
    assert proc.returncode == 2  # the model does not exist: a usage error found before any import


def test_tensorrt_backend_is_one_line_and_auto_says_once_why(grid_net, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is importable here")
    proc = run_cli("--model", grid_net, "--backend=tensorrt", IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert_one_line_error(proc, 1, "pip install 'segnet[tensorrt]'")
    assert not (tmp_path / "o.png").exists()
    # a fresh process, as a user starts one, on a machine with a GPU: a folder is many images, the line comes once
    auto = console_where(True, "--model", grid_net, IMAGES, tmp_path / "out")
    assert auto.returncode == 0, auto.stderr
    assert auto.stderr.count("TensorRT not used, running on onnxruntime: TensorRT is not installed: pip install") == 1
    assert "on onnxruntime (CPUExecutionProvider)" in auto.stderr


def console_where(gpu: bool, *args):
    """segnet-console in a fresh process on a machine that shows an NVIDIA GPU (``gpu``) or none."""
    sign = __file__ if gpu else "/nonexistent/nvidia0"
    code = (f"import sys, segnet.backends as b; b.NVIDIA_GPU_SIGNS = ({sign!r},); "
            "from segnet.cli.console import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_tensorrt_advice_only_where_an_nvidia_gpu_is_and_never_for_legend_alone(grid_net, tmp_path, gpu):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is importable here")
    run = console_where(gpu, "--model", grid_net, IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert run.returncode == 0 and (tmp_path / "o.png").is_file(), run.stderr
    assert run.stderr.count("pip install 'segnet[tensorrt]'") == (1 if gpu else 0), run.stderr
    legend = console_where(gpu, "--model", grid_net, "--legend", tmp_path / "legend.png")
    assert legend.returncode == 0 and (tmp_path / "legend.png").is_file(), legend.stderr
    assert "TensorRT" not in legend.stderr


def test_quiet_auto_run_writes_nothing_to_stderr(tmp_path):
    """A fresh process, the default network and --backend auto (whose TensorRT notice is a status line)."""
    out = tmp_path / "out.jpg"
    proc = run_process("-q", "--backend=auto", IMAGES / "camvid_0.jpg", out)
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "") and out.is_file()
    loud = run_process("-v", "--backend=auto", IMAGES / "camvid_0.jpg", tmp_path / "loud.jpg")
    assert "fcn-resnet18-camvid-480x352 (480x352, 11 classes)" in loud.stderr
