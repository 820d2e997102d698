"""What a new user meets first, through the entry point: no tracebacks, models that just run, quiet
failures that now speak, the colour legend, and the exit codes the README promises."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segnet import Segmenter
from tests.conftest import GRID, IMAGES, ROOT, one_hot
from tests.support.cli import assert_one_line_error, run_cli, run_process


def save(path, nodes, inputs, outputs, weights=()):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(weights))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_model(path, input_name="sub_7", output_name="logits:0", batch=1, height=64, width=96):
    """A 1x1 convolution to 4 classes under names nobody would guess."""
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    return save(path, [helper.make_node("Conv", [input_name, "w"], [output_name])],
                [tensor(input_name, [batch, 3, height, width])], [tensor(output_name, [batch, 4, height, width])],
                [numpy_helper.from_array(w, "w")])


@pytest.fixture
def net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64, names=["void", "road", "car", "sky"])


def test_input_size_on_a_fixed_size_model_is_a_usage_error(tmp_path):
    proc = run_cli("--input-size", "640x320", IMAGES / "camvid_0.jpg", tmp_path / "o.jpg")
    assert_one_line_error(proc, 2, "has a fixed input size of 480x352; --input-size 640x320 is for models whose "
                                   "size is symbolic")
    assert not (tmp_path / "o.jpg").exists()


def test_a_symbolic_size_model_runs_without_input_size_in_console_and_bench(tmp_path):
    model = conv_model(tmp_path / "sym.onnx", input_name="x", output_name="y", batch="N", height="H", width="W")
    proc = run_cli("--model", model, "--stats", IMAGES / "room_0.jpg")
    assert proc.returncode == 0, proc.stderr
    assert "grid size:" in proc.stdout and "(4 classes)" in proc.stderr
    bench = run_cli("--model", model, "--images", IMAGES / "room_0.jpg", "--repeat", "1", "--network-runs", "1",
                    prog="segnet-bench")
    assert bench.returncode == 0, bench.stderr
    assert "(image-sized input)" in bench.stdout


def test_a_third_party_model_with_one_input_and_one_output_needs_no_names(tmp_path):
    model = conv_model(tmp_path / "third_party.onnx")
    proc = run_cli("--model", model, IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert proc.returncode == 0, proc.stderr
    with Segmenter(model=model) as net:
        assert net.backend.input.name == "sub_7" and net.backend.output.name == "logits:0"


@pytest.mark.parametrize("build, words", [
    (lambda p: save(p, [helper.make_node("Add", ["a", "b"], ["c"])], [tensor("a", [1, 3, 64, 96]),
                                                                       tensor("b", [1, 3, 64, 96])],
                    [tensor("c", [1, 3, 64, 96])]), "has 2 inputs and none named 'input_0'"),
    (lambda p: save(p, [helper.make_node("Add", ["input_0", "b"], ["output_0"])],
                    [tensor("input_0", [1, 3, 64, 96]), tensor("b", [1, 3, 64, 96])],
                    [tensor("output_0", [1, 3, 64, 96])]), "has 2 inputs; segnet feeds one image input"),
    (lambda p: conv_model(p, batch=4), "has a fixed batch of 4; segnet needs a batch of 1 or a symbolic one"),
    (lambda p: conv_model(p, height=0), "declares a dimension of size 0 [1, 3, 0, 96]"),
])
def test_models_segnet_cannot_feed_are_one_line_errors(tmp_path, build, words):
    model = build(tmp_path / "m.onnx")
    proc = run_cli("--model", model, IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert words in assert_one_line_error(proc, proc.returncode) and proc.returncode in (1, 2)
    assert not (tmp_path / "o.png").exists()


def test_an_error_while_the_model_runs_is_one_line_per_image(tmp_path):
    """A Reshape that only fits one size: the model loads, then fails on the image; the folder goes on."""
    shape = numpy_helper.from_array(np.array([1, 4, 2, 3], np.int64), "shape")
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    model = save(tmp_path / "picky.onnx", [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[32, 32]),
        helper.make_node("Reshape", ["c", "shape"], ["y"]),
    ], [tensor("x", [1, 3, "H", "W"])], [tensor("y", [1, 4, 2, 3])], [shape, w])
    proc = run_cli("--model", model, "--input-size", "100x100", IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert_one_line_error(proc, 1, "cannot run on an input of shape [1, 3, 100, 100]")


def test_quiet_failures_now_speak(net, tmp_path):
    assert_one_line_error(run_cli("--model", net, "--ignore-class", "sidewalk", "--stats", IMAGES / "city_0.jpg"), 2,
                          "--ignore-class sidewalk: net0 has no such class; its classes are void, road, car, sky")
    assert_one_line_error(run_cli("--model", net, "--threshold", "0.3", "--stats", IMAGES / "city_0.jpg"), 2,
                          "--threshold 0.3 is for models with sigmoid scores (--scores sigmoid)")
    assert_one_line_error(run_cli("--model", net, "--ray-actors", "0", "--stats", IMAGES / "city_0.jpg"), 2,
                          "--ray-actors 0: give a whole number from 1")
    assert_one_line_error(run_cli("--model", net, "--mean", "nan,0,0", "--stats", IMAGES / "city_0.jpg"), 2,
                          "--mean nan,0,0: give three numbers")
    ok = run_cli("--model", net, "--ignore-class", "none", "--stats", IMAGES / "city_0.jpg")
    assert ok.returncode == 0, ok.stderr


def test_a_byte_order_mark_does_not_hide_the_first_class(net, tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_bytes(b"\xef\xbb\xbfvoid\r\nroad\r\ncar\r\nsky\r\n")  # as Notepad saves it
    proc = run_cli("--model", net, "--labels", labels, "--stats", IMAGES / "city_0.jpg")
    assert proc.returncode == 0 and "  0  void " in proc.stdout
    assert " 0.000000" in proc.stdout.splitlines()[3]  # void is ignored: no cell is void


def test_an_all_skipped_rerun_does_not_load_the_network(net, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--model", net, str(IMAGES / "city_[01].jpg"), out).returncode == 0
    (net / "fcn_resnet18.onnx").write_bytes(b"gone")  # would fail to load
    again = run_cli("--model", net, "--skip-existing", str(IMAGES / "city_[01].jpg"), out)
    assert again.returncode == 0, again.stderr
    assert "0 of 0 images done" in again.stderr and "2 skipped (output exists)" in again.stderr


def test_the_legend_shows_every_class(net, tmp_path):
    legend = tmp_path / "legend.png"
    proc = run_cli("--model", net, "--legend", legend)  # no input: only the legend
    assert proc.returncode == 0, proc.stderr
    picture = np.asarray(Image.open(legend))
    assert picture.shape[0] >= 4 * 28 and picture.shape[1] > 200
    with Segmenter(model=net) as segmenter:
        for c, color in enumerate(segmenter.colors[:, :3].astype(np.uint8)):
            assert (picture.reshape(-1, 3) == color).all(axis=1).sum() > 100, f"class {c}'s swatch"
    both = run_cli("--model", net, "--legend", tmp_path / "l2.png", IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert both.returncode == 0 and (tmp_path / "l2.png").is_file() and (tmp_path / "o.png").is_file()
    assert_one_line_error(run_cli("--model", net, "--legend", tmp_path / "l.xyz"), 2, "cannot write '.xyz'")
    assert "--legend legend.png" in run_cli("--list", prog="segnet-download-models").stdout
    assert "--legend" in run_cli("--help").stdout


def test_ray_with_a_video_says_so(net, tmp_path):
    from tests.support.golden import CLIP

    assert_one_line_error(run_cli("--model", net, CLIP, tmp_path / "v.mp4", "--ray=auto"), 2,
                          "--ray runs image folders; run videos without it")


def test_a_closed_pipe_ends_quietly():
    """``segnet-download-models --list | head -1``: no BrokenPipeError."""
    command = [sys.executable, "-m", "segnet.cli.download", "--list"]
    listing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    listing.stdout.readline()
    listing.stdout.close()  # as head does after its line
    err = listing.stderr.read().decode()
    listing.stderr.close()
    assert listing.wait(60) == 0 and "Error" not in err and "Traceback" not in err


def test_a_file_name_that_is_not_text_does_not_break_strict_stdout(net, tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    odd.write_bytes((IMAGES / "city_0.jpg").read_bytes())
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": str(ROOT)}
    proc = run_process("--model", net, "--stats", str(tmp_path / "*.jpg"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "caf\\udce9.jpg:" in proc.stdout and "Traceback" not in proc.stderr


def test_an_fp16_run_of_the_shipped_network_writes_nothing_into_models(tmp_path, user_cache):
    """An editable install wrote the FP16 copy (23 MB) and a lock into models/, which git and wheels then took."""
    shipped = ROOT / "models"

    def listing():
        return sorted((p.relative_to(shipped).as_posix(), p.stat().st_size) for p in shipped.rglob("*"))

    before = listing()
    source = IMAGES / "camvid_0.jpg"
    source_bytes = source.read_bytes()
    proc = run_process("--backend=onnxruntime", "--precision=fp16", source, tmp_path / "out.png")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.png").is_file() and source.read_bytes() == source_bytes
    assert listing() == before
    assert list((user_cache / "segnet" / "engines").glob("fcn_resnet18.fp16.*.onnx"))  # made, in the user cache
