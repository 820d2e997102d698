"""ONNX models beyond jetson's FCN layout: a real third-party network, and generated NHWC, full-resolution,
sigmoid and symbolic-size models whose expected outputs are computed independently here."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segnet import Segmenter
from tests.conftest import IMAGES, ROOT
from tests.support.cli import assert_one_line_error, run_cli

PAN = ROOT / "data" / "models" / "pan-skin-clothes-hair" / "skin_clothes_hair_PAN_mnv3s_simplifier.onnx"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def save(path, nodes, inputs, outputs, weights=()):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(weights))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


W = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)  # 1x1 conv: 3 channels -> 4 classes
B = np.array([0.1, -0.2, 0.0, 0.3], np.float32)


def conv_weights():
    return [numpy_helper.from_array(W[:, :, None, None], "w"), numpy_helper.from_array(B, "b")]


def stretched(path, w, h):
    """The nearest stretch written independently: integer arithmetic on pixel centres' left edges."""
    image = np.asarray(Image.open(path).convert("RGB"))
    ys = np.arange(h) * image.shape[0] // h
    xs = np.arange(w) * image.shape[1] // w
    return image[ys][:, xs]


def normalised(pixels):
    return (pixels / 255.0 - MEAN) / STD  # [H, W, 3] float64


def test_real_pan_model_needs_no_flags_and_finds_skin_clothes_hair(tmp_path):
    out = tmp_path / "mask.png"
    proc = run_cli("--model", PAN, "--visualize=mask", "--stats", IMAGES / "humans_3.jpg", out)
    assert proc.returncode == 0, proc.stderr
    assert "num classes: 4" in proc.stdout and "grid size: 512x512" in proc.stdout
    with Segmenter(model=PAN) as net:
        result = net(IMAGES / "humans_3.jpg")
    assert result.class_names == ["background", "skin", "clothes", "hair"]
    classes = result.class_map
    share = np.bincount(classes.ravel(), minlength=4) / classes.size
    assert share[0] > 0.5 and share[1] > 0.02 and share[2] > 0.10 and share[3] > 0.005
    ys, _ = np.nonzero(classes == 3)
    yc, _ = np.nonzero(classes == 2)
    assert ys.mean() < yc.mean()  # hair sits above clothes
    assert (classes[300:, :150] == 0).mean() > 0.95  # the grass at the bottom left is background
    # the picture is the mask of that class map, at the photo's size
    colors = {tuple(c) for c in np.asarray(Image.open(out)).reshape(-1, 3)[::97]}
    assert (0, 0, 0) in colors and (200, 60, 30) in colors  # background and hair (segnet.json colours)


def test_sidecar_settings_are_overridden_by_flags():
    with Segmenter(model=PAN) as default, Segmenter(model=PAN, threshold=0.95) as strict:
        a, b = default(IMAGES / "humans_3.jpg"), strict(IMAGES / "humans_3.jpg")
    assert (b.class_map == 0).sum() > (a.class_map == 0).sum()


def test_nhwc_model_in_and_out(tmp_path):
    path = save(tmp_path / "nhwc.onnx", [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["scores"]),
        helper.make_node("Transpose", ["scores"], ["logits"], perm=[0, 2, 3, 1]),
    ], [tensor("image", [1, 128, 192, 3])], [tensor("logits", [1, 4, 6, 4])], conv_weights())
    with Segmenter(model=path, input_blob="image", output_blob="logits") as net:
        assert net.input_layout == "NHWC" and net.input_size == (192, 128)
        result = net(IMAGES / "trail_0.jpg")
    x = normalised(stretched(IMAGES / "trail_0.jpg", 192, 128))
    pooled = x.reshape(4, 32, 6, 32, 3).mean(axis=(1, 3))  # [4, 6, 3]
    expected = np.einsum("kc,yxc->kyx", W, pooled) + B[:, None, None]
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)
    assert (result.class_map == expected.argmax(0)).all()


def test_full_resolution_sigmoid_model(tmp_path):
    path = save(tmp_path / "sig.onnx", [
        helper.make_node("Conv", ["input_0", "w", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["output_0"]),
    ], [tensor("input_0", [1, 3, 64, 96])], [tensor("output_0", [1, 4, 64, 96])], conv_weights())
    (tmp_path / "segnet.json").write_text(json.dumps({"scores": "sigmoid", "threshold": 0.7,
                                                      "labels": ["a", "b", "c", "d"]}))
    with Segmenter(model=path) as net:
        result = net(IMAGES / "city_0.jpg")
    x = normalised(stretched(IMAGES / "city_0.jpg", 96, 64))
    probs = 1 / (1 + np.exp(-(np.einsum("kc,yxc->kyx", W, x) + B[:, None, None])))
    expected = np.where(probs.max(0) >= 0.7, probs.argmax(0) + 1, 0)
    assert result.class_names == ["background", "a", "b", "c", "d"]
    assert result.grid_size == (96, 64)
    near = np.abs(probs.max(0) - 0.7) < 1e-4  # float32 vs float64 may differ right at the threshold
    assert (result.class_map == expected)[~near].all()
    assert 0 < (expected == 0).mean() < 1  # the threshold really splits the image


def test_symbolic_size_uses_the_image_or_input_size(tmp_path):
    path = save(tmp_path / "sym.onnx", [
        helper.make_node("AveragePool", ["input_0"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["output_0"]),
    ], [tensor("input_0", [1, 3, "height", "width"])], [tensor("output_0", [1, 4, "gh", "gw"])], conv_weights())
    with Segmenter(model=path) as net:
        assert net.input_size is None and net.num_classes == 4
        result = net(IMAGES / "object_0.jpg")  # 500x333 -> 512x320
        assert result.grid_size == (16, 10)
        small = net(np.zeros((40, 70, 3), np.uint8))  # rounded up to one 64x32 network input
        assert small.grid_size == (2, 1)
    with Segmenter(model=path, input_size=(256, 128)) as net:
        assert net(IMAGES / "object_0.jpg").grid_size == (8, 4)
    proc = run_cli("--model", path, "--input-size=320x160", "--stats", IMAGES / "object_0.jpg")
    assert proc.returncode == 0 and "grid size: 10x5" in proc.stdout


def _mean_model(tmp_path):
    """Scores are the mean of each normalised input channel: the pre-processing made visible."""
    return save(tmp_path / "mean.onnx", [helper.make_node("GlobalAveragePool", ["input_0"], ["output_0"])],
                [tensor("input_0", [1, 3, 32, 32])], [tensor("output_0", [1, 3, 1, 1])])


@pytest.mark.parametrize("flags, mean, std, bgr", [
    ([], MEAN, STD, False),
    (["--mean=0.5,0.5,0.5", "--std=0.5,0.5,0.5"], [0.5] * 3, [0.5] * 3, False),
    (["--mean=0,0,0", f"--std={1 / 255},{1 / 255},{1 / 255}", "--bgr"], [0] * 3, [1 / 255] * 3, True),
])
def test_normalisation_options(tmp_path, flags, mean, std, bgr):
    color = np.array([200, 100, 50])
    src = tmp_path / "flat.png"
    Image.fromarray(np.tile(color.astype(np.uint8), (20, 30, 1))).save(src)
    model = _mean_model(tmp_path)
    from segnet.cli.common import options_from
    from segnet.cli.console import build_parser

    args = build_parser().parse_args(["--model", str(model), "--ignore-class=none", *flags, str(src)])
    with Segmenter(options=options_from(args)) as net:
        scores = net(src).scores[:, 0, 0]
    channels = color[::-1] if bgr else color
    np.testing.assert_allclose(scores, (channels / 255 - np.array(mean)) / np.array(std), rtol=1e-5)


def test_letterbox_keeps_the_aspect_and_cuts_the_padding(constant_net, tmp_path):
    from tests.conftest import one_hot

    net = constant_net(one_hot(np.array([[0], [1], [2], [3]], np.uint8), 4), width=64, height=64,
                       names=["a", "b", "c", "d"], colors=[(10, 0, 0), (20, 0, 0), (30, 0, 0), (40, 0, 0)])
    src = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(src)  # 2:1 in a square network: rows 1-2 only
    for resize, seen in (("letterbox", {20, 30}), ("nearest", {10, 20, 30, 40})):
        out = tmp_path / f"{resize}.png"
        assert run_cli("--model", net, f"--resize={resize}", "--visualize=mask", "--filter-mode=point", src,
                       out).returncode == 0
        mask = np.asarray(Image.open(out))[..., 0]
        assert set(np.unique(mask)) == seen
    top, bottom = mask[:25], mask[25:]
    with Segmenter(model=net, resize="letterbox", filter_mode="point") as seg:
        m = seg(src).mask()[..., 0]
    assert (m[:25] == 20).all() and (m[25:] == 30).all()
    assert top.size and bottom.size


def test_unintelligible_shapes_name_inputs_and_outputs(tmp_path):
    path = save(tmp_path / "rgba.onnx", [helper.make_node("GlobalAveragePool", ["input_0"], ["output_0"])],
                [tensor("input_0", [1, 4, 32, 32])], [tensor("output_0", [1, 4, 1, 1])])
    proc = run_cli("--model", path, IMAGES / "city_0.jpg", "--stats")
    assert_one_line_error(proc, 1, "its inputs are: input_0 [1, 4, 32, 32]; its outputs are: output_0 [1, 4, 1, 1]")
    bad = run_cli("--model", path, "--input-layout=NHWC", IMAGES / "city_0.jpg", "--stats")
    assert bad.returncode == 1 and "3 channels" in bad.stderr or "expected" in bad.stderr


def test_bad_format_flags_are_usage_errors(tmp_path):
    model = _mean_model(tmp_path)
    for flags, words in ((["--resize=cubic"], "--resize cubic: choose nearest, bilinear or letterbox"),
                         (["--mean=1,2"], "--mean 1,2: give three numbers"),
                         (["--input-size=big"], "--input-size big: give WxH"),
                         (["--input-layout=CHW"], "--input-layout CHW: choose NCHW or NHWC"),
                         (["--std=0,1,1"], "--std 0,1,1: no value may be 0"),
                         (["--std=1e-310,1,1", "--stats"], "--std 1e-310,1,1: no value may be smaller than 1e-06 in "
                                                           "size (it divides: the result would overflow)")):
        proc = run_cli("--model", model, *flags, IMAGES / "city_0.jpg")
        assert_one_line_error(proc, 2, words)
        assert proc.stderr.count("\n") == 1 and "Warning" not in proc.stderr  # and no numpy warning


def test_nhwc_scores_behind_an_nchw_input_are_detected(tmp_path):
    path = save(tmp_path / "mixed.onnx", [
        helper.make_node("Conv", ["input_0", "w", "b"], ["z"]),
        helper.make_node("Transpose", ["z"], ["output_0"], perm=[0, 2, 3, 1]),
    ], [tensor("input_0", [1, 3, 288, 320])], [tensor("output_0", [1, 288, 320, 4])], conv_weights())
    with Segmenter(model=path) as net:
        result = net(IMAGES / "room_0.jpg")
    x = normalised(stretched(IMAGES / "room_0.jpg", 320, 288))
    expected = np.einsum("kc,yxc->kyx", W, x) + B[:, None, None]
    assert result.grid_size == (320, 288) and net.num_classes == 4
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)
