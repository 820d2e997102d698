"""``segnet.Options``: one object, validated once, the same rules for keywords, flags and segnet.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segnet import Options, Segmenter
from segnet.cli.console import build_parser
from segnet.errors import OptionError, SegnetError, UsageError, name_options_as_flags
from segnet.options import OPTION_NAMES, option_fields
from tests.conftest import IMAGES
from tests.support.cli import assert_one_line_error, run_cli


def test_defaults_are_jetsons():
    o = Options()
    assert (o.visualize, o.alpha, o.filter_mode, o.ignore_class, o.backend) == (("overlay",), 120.0, "linear",
                                                                               "void", "auto")
    assert o.given() == {}


@pytest.mark.parametrize("given, normalised", [
    ({"mean": "0.5, 0.5,0.5"}, {"mean": (0.5, 0.5, 0.5)}),
    ({"input_size": "640X320"}, {"input_size": (640, 320)}),
    ({"input_size": [640, 320]}, {"input_size": (640, 320)}),
    ({"visualize": "mask|overlay"}, {"visualize": ("mask", "overlay")}),
    ({"filter_mode": "POINT", "input_layout": "nhwc"}, {"filter_mode": "point", "input_layout": "NHWC"}),
    ({"alpha": "200", "batch_size": "4", "bgr": "true"}, {"alpha": 200.0, "batch_size": 4, "bgr": True}),
    ({"model": "~/net.onnx"}, {"model": Path("~/net.onnx").expanduser()}),
])
def test_text_and_typed_values_are_normalised_alike(given, normalised):
    assert Options(**given).given() == normalised


@pytest.mark.parametrize("name, value, problem", [
    ("alpha", 256, "give a number from 0 to 255"),
    ("alpha", float("nan"), "give a number from 0 to 255"),
    ("threshold", "high", "give a number from 0 to 1"),
    ("mean", "abc", "give three numbers R,G,B"),
    ("mean", [[0.5], 0.5, 0.5], "give three numbers R,G,B"),
    ("std", (0, 1, 1), "no value may be 0"),
    ("std", (1e-310, 1, 1), "no value may be smaller than 1e-06 in size (it divides: the result would overflow)"),
    ("std", "1,-1e-7,1", "no value may be smaller than 1e-06 in size"),
    ("batch_size", 0, "give a whole number from 1 to 1024"),
    ("batch_size", True, "give a whole number from 1 to 1024"),
    ("precision", "int4", "choose fp16, fp32 or int8"),
    ("backend", "cuda", "choose auto, onnxruntime or tensorrt"),
    ("visualize", "heatmap", "use overlay, mask, overlay,mask or classes"),
    ("visualize", "overlay,classes", "use overlay, mask, overlay,mask or classes"),
    ("input_size", "0x10", "give WxH"),
    ("input_blob", "", "give a non-empty name"),
])
def test_invalid_values_name_the_option_and_what_it_takes(name, value, problem):
    with pytest.raises(OptionError) as info:
        Options(**{name: value})
    assert info.value.name == name and info.value.problem.startswith(problem)
    assert str(info.value).startswith(f"{name}={value!r}: {problem}")


def test_a_huge_input_size_is_refused_before_anything_is_allocated(monkeypatch):
    with pytest.raises(UsageError, match=r"input_size: a 99999x99999 network input is 9,999,800,001 pixels, more "
                                         r"than segnet allocates \(16,777,216\); raise the limit with "
                                         r"SEGNET_MAX_INPUT_PIXELS"):
        Options(input_size="99999x99999")
    monkeypatch.setenv("SEGNET_MAX_INPUT_PIXELS", str(5000 * 5000))
    assert Options(input_size="5000x5000").input_size == (5000, 5000)


def test_a_misspelt_option_says_which_exist():
    with pytest.raises(UsageError, match=r"^unknown option 'precison': did you mean precision\? the options are "
                                         r"network, model, "):
        Options.create(precison="fp32")
    with pytest.raises(UsageError, match="unknown option 'download'"):  # the old spelling of no_download
        Segmenter(download=False)


def test_create_overrides_a_base_and_validates_the_result():
    base = Options(alpha=200, batch_size=4)
    assert Options.create(base, batch_size=8).given() == {"alpha": 200.0, "batch_size": 8}
    with pytest.raises(OptionError):
        Options.create(base, alpha=-1)


def test_messages_name_flags_only_for_the_command_line():
    try:
        name_options_as_flags(True)
        with pytest.raises(OptionError, match=r"^--alpha 300: give a number from 0 to 255$"):
            Options(alpha=300)
    finally:
        name_options_as_flags(False)
    with pytest.raises(OptionError, match=r"^alpha=300: give"):
        Options(alpha=300)


def test_every_flag_comes_from_a_field_and_has_its_name():
    help_text = build_parser().format_help()
    for f in option_fields():
        if f.metadata["cli"]:
            assert "--" + f.name.replace("_", "-") in help_text, f.name
    parsed = build_parser().parse_args(["--resize", "letterbox", "--no-download", "--input_blob", "x", "in.jpg"])
    assert {k for k in vars(parsed) if k in OPTION_NAMES} == {"resize", "no_download", "input_blob"}


def test_segnet_json_is_held_to_the_rules_of_the_flags(tmp_path, constant_net):
    import numpy as np

    net = constant_net(np.zeros((2, 1, 2), np.float32), width=64, height=32)
    for settings, words in [
        ({"mean": "abc"}, '"mean": \'abc\' is not valid: give a JSON list of three numbers, not text'),
        ({"mean": [1, 2]}, '"mean": [1, 2] is not valid: give three numbers R,G,B'),
        ({"labels": 5}, '"labels": 5 is not valid: give a list of 1 to 256 class names'),
        ({"colors": [["a", "b", "c"]]}, '"colors": [["a", "b", "c"]] is not valid: give a list of [r, g, b]'),
        ({"colors": [[999, 0, 0]]}, "each a whole number from 0 to 255"),
        ({"threshold": "0.5"}, '"threshold": \'0.5\' is not valid: give a JSON number, not text'),
        ({"size_multiple": -32}, '"size_multiple": -32 is not valid: give a whole number from 1 to 1024'),
        ({"mean": [[[[[[0.5]]]]]]}, '"mean": [[[[[[0.5]]]]]] is not valid'),
        ({"input_size": [99999, 99999]}, "network input is 9,999,800,001 pixels"),
        ({"output": "sigmoid"}, "unknown setting(s) output"),
    ]:
        (net / "segnet.json").write_text(json.dumps(settings))
        with pytest.raises(SegnetError, match=None) as info:
            Segmenter(model=net)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)
    (net / "segnet.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(SegnetError, match="nested too deeply"):
        Segmenter(model=net)


def test_bad_sidecar_through_the_command_line_is_one_line(tmp_path, constant_net):
    import numpy as np

    net = constant_net(np.zeros((2, 1, 2), np.float32), width=64, height=32)
    (net / "segnet.json").write_text(json.dumps({"mean": [1, 2]}))
    assert_one_line_error(run_cli("--model", net, IMAGES / "city_0.jpg", "--stats"), 1,
                          "is not valid: give three numbers")
