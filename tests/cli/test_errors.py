"""Every bad input gives one line on stderr, the right exit code, and leaves nothing half-written."""

import re
import struct
import zlib

import numpy as np
import pytest

from segnet import image_io
from segnet.errors import SegnetError
from tests.conftest import GRID, IMAGES, one_hot
from tests.support import models
from tests.support.cli import assert_one_line_error, run_cli


@pytest.fixture
def net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64)


def _bomb_png(path, width=40000, height=40000):
    """A PNG header claiming 1.6 gigapixels (no need to store them: Pillow refuses at open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def bad_images(tmp_path):
    good = (IMAGES / "city_0.jpg").read_bytes()
    files = {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        "text.jpg": b"this is not a picture, it is a text file\n" * 10,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    _bomb_png(tmp_path / "bomb.png")
    return {"empty.jpg": "empty", "truncated.jpg": "truncated", "corrupt.png": "",
            "text.jpg": "not an image", "bomb.png": "decompression bomb"}


def test_each_bad_image_fails_alone_with_exit_1(net, tmp_path):
    cases = bad_images(tmp_path)
    for name, pattern in cases.items():
        out = tmp_path / f"{name}.out.png"
        proc = run_cli("--model", net, tmp_path / name, out)
        assert_one_line_error(proc, 1, pattern)
        assert name in proc.stderr and not out.exists()


def test_directory_with_bad_files_processes_the_rest(net, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad_images(folder)
    for name in ("city_0.jpg", "trail_0.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    out = tmp_path / "out"
    proc = run_cli("--model", net, folder, out)
    assert proc.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["city_0.jpg", "trail_0.jpg"]  # no partial files
    assert proc.stderr.count("segnet-console: error:") == 5 and "Traceback" not in proc.stderr
    assert re.search(r"2 of 7 images done in .*, 5 failed", proc.stderr)


def test_failed_image_keeps_the_existing_output(net, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")
    (tmp_path / "t.jpg").write_bytes((IMAGES / "city_0.jpg").read_bytes()[:5000])
    assert run_cli("--model", net, tmp_path / "t.jpg", out).returncode == 1
    assert out.read_bytes() == b"previous result"


def test_write_failure_mid_save_leaves_nothing(tmp_path, monkeypatch):
    """The disk fills up half-way through the file: an error, and neither the picture nor its temporary."""
    import builtins

    from segnet import util

    out = tmp_path / "out.png"
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(util, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                        if "x" in mode else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(SegnetError, match="no space left on the device"):
        image_io.write_image(np.zeros((4, 4, 3), np.uint8), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, pattern", [
    (["--alpha=300"], "--alpha 300: give a number from 0 to 255"),
    (["--alpha=-1"], "--alpha -1: give a number from 0 to 255"),
    (["--visualize=overlay,heatmap"], "--visualize overlay,heatmap: use overlay, mask, overlay,mask or classes"),
    (["--filter-mode=cubic"], "--filter-mode cubic: choose point or linear"),
    (["--backend=cuda"], "--backend cuda: choose auto, onnxruntime or tensorrt"),
    (["--alpha=abc"], "--alpha abc: give a number from 0 to 255"),
    (["--precision=int4"], "--precision int4: choose fp16, fp32 or int8"),
    (["--batch-size=0"], "--batch-size 0: give a whole number from 1 to 1024"),
    (["--no-such-flag"], "unrecognized option --no-such-flag (see --help)"),
])
def test_bad_flags_are_usage_errors(net, tmp_path, args, pattern):
    assert_one_line_error(run_cli("--model", net, *args, IMAGES / "city_0.jpg", tmp_path / "o.png"), 2,
                          pattern)


@pytest.mark.parametrize("prog, args, flag", [
    ("segnet-console", ["--alpa", "200"], "--alpha"),
    ("segnet-console", ["--filter-mdoe=point"], "--filter-mode"),
    ("segnet-eval", ["--batch-sise", "2"], "--batch-size"),
    ("segnet-bench", ["--repaet", "2"], "--repeat"),
    ("segnet-download-models", ["--modles-dir", "x"], "--models-dir"),
])
def test_a_misspelt_flag_with_a_value_names_the_flag_it_meant(tmp_path, prog, args, flag):
    """Not "unrecognized arguments: --alpa out.png": the value must not shift the positionals."""
    proc = run_cli(*args, IMAGES / "city_0.jpg", tmp_path / "o.png", prog=prog)
    line = assert_one_line_error(proc, 2, prog=prog)
    assert line == f"{prog}: error: unrecognized option {args[0].split('=')[0]}: did you mean {flag}?"
    assert list(tmp_path.iterdir()) == []


def test_abbreviated_flags_and_paths_after_double_dash_still_work(net, tmp_path):
    (tmp_path / "--odd.png").write_bytes((IMAGES / "city_0.jpg").read_bytes())
    proc = run_cli("--model", net, "--alph", "200", "--", tmp_path / "--odd.png", tmp_path / "o.png")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.png").is_file()


def test_unknown_network_suggests_close_names(tmp_path):
    proc = run_cli("--network=fcn-resnet18-citiscapes", IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert_one_line_error(proc, 2, "did you mean fcn-resnet18-cityscapes")


def test_missing_input_and_empty_glob(net, tmp_path):
    assert_one_line_error(run_cli("--model", net, tmp_path / "nope.jpg"), 2, "no such file")
    assert_one_line_error(run_cli("--model", net, str(tmp_path / "*.jpg"), tmp_path / "o"), 2, "no files match")


def test_unknown_output_extension(net, tmp_path):
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / "out.xyz")
    assert_one_line_error(proc, 2, "cannot write '.xyz' pictures")
    assert not (tmp_path / "out.xyz").exists()


def test_unwritable_output_directory(net, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", blocker / "sub" / "out.png")
    assert_one_line_error(proc, 2, "cannot write to output directory")
    proc = run_cli("--model", net, IMAGES, blocker)  # several inputs, output is a file
    assert_one_line_error(proc, 2, "not a folder (a file of that name exists)")
    # /proc refuses new files even to root, which is what CI runs as
    assert_one_line_error(run_cli("--model", net, IMAGES / "city_0.jpg", "/proc/segnet-out.png"), 2,
                          "cannot write to output directory")


def test_model_that_does_not_load(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf" * 3)
    assert_one_line_error(run_cli("--model", bad, IMAGES / "city_0.jpg", "--stats"), 1, "cannot load model")


def test_unknown_blob_lists_the_model_names(net):
    proc = run_cli("--model", net, "--input-blob=data", IMAGES / "city_0.jpg", "--stats")
    assert_one_line_error(proc, 2, "has no input named 'data'; its inputs are: input_0 [1, 3, 64, 128]")
    proc = run_cli("--model", net, "--output_blob=scores", IMAGES / "city_0.jpg", "--stats")
    assert_one_line_error(proc, 2, "its outputs are: output_0 [1, 4, 2, 4] (choose with --output-blob)")


def test_other_blob_names_work_with_both_spellings(constant_net, tmp_path):
    net = constant_net(one_hot(GRID, 4), width=64, height=32, input_name="data", output_name="score_fr")
    for flags in (["--input-blob=data", "--output-blob=score_fr"], ["--input_blob=data", "--output_blob=score_fr"]):
        assert run_cli("--model", net, *flags, IMAGES / "city_0.jpg", tmp_path / "o.png").returncode == 0


def test_model_with_wrong_shapes(tmp_path):
    rank3 = models.constant_model(tmp_path / "rank3.onnx", np.zeros((2, 2, 2)), 64, 32)
    import onnx

    m = onnx.load(rank3)  # make the declared output rank 3 and feed a 3-d constant
    m.graph.output[0].type.tensor_type.shape.dim.pop()
    m.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 2, 2), np.float32), "scores"))
    onnx.save(m, rank3)
    assert_one_line_error(run_cli("--model", rank3, IMAGES / "city_0.jpg", "--stats"), 1, "expected [1, classes, grid")
    gray = tmp_path / "gray.onnx"
    models.constant_model(gray, np.zeros((2, 2, 2)), 64, 32)
    m = onnx.load(gray)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(m, gray)
    assert_one_line_error(run_cli("--model", gray, IMAGES / "city_0.jpg", "--stats"), 1, "expected [1, 3, H, W]")


@pytest.mark.parametrize("which, text, pattern", [
    ("colors", "10 20 30\n1 2\n", "colors.txt line 2"),
    ("labels", "road\n\ncar\n", "classes.txt line 2: empty line"),
])
def test_bad_label_files_name_the_line(net, tmp_path, which, text, pattern):
    path = tmp_path / f"{'colors' if which == 'colors' else 'classes'}.txt"
    path.write_text(text)
    proc = run_cli("--model", net / "fcn_resnet18.onnx", f"--{which}={path}", IMAGES / "city_0.jpg", "--stats")
    assert_one_line_error(proc, 1, pattern)


def test_missing_labels_file_is_a_usage_error(net, tmp_path):
    assert_one_line_error(run_cli("--model", net, "--labels", tmp_path / "no.txt", IMAGES / "city_0.jpg", "--stats"), 2,
                          "--labels")
