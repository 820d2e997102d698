"""The library API on real images and a real stride-32 ONNX network."""

import numpy as np
import pytest
from PIL import Image

from segnet import Segmenter, preprocess
from segnet.errors import OptionError, SegnetError, UsageError
from tests.conftest import IMAGES
from tests.support import models


@pytest.fixture
def pooling_net(tmp_path):
    return models.write_network(tmp_path / "pool", models.pooling_model, ["a", "b", "c", "d", "e"],
                                num_classes=5, width=160, height=96)


def test_nearest_stretch_is_top_left_aligned():
    assert preprocess.nearest_indices(1024, 512).tolist() == list(range(0, 1024, 2))
    assert preprocess.nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert preprocess.nearest_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_preprocess_normalises_planar_rgb():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 128
    tensor = preprocess.preprocess(image, 4, 4)
    assert tensor.shape == (3, 4, 4) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[:, 0, 0], [(1 - .485) / .229, (0 - .456) / .224, (128 / 255 - .406) / .225],
                               rtol=1e-6)


@pytest.mark.parametrize("name", ["city_0.jpg", "trail_0.jpg", "peds_2.jpg"])
def test_scores_and_class_map_of_a_real_network(pooling_net, name):
    image = np.asarray(Image.open(IMAGES / name).convert("RGB"))
    with Segmenter(model=pooling_net) as net:
        result = net(image)
    expected = models.pooling_reference(preprocess.preprocess(image, 160, 96), 5)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-4)
    assert result.class_map.dtype == np.uint8 and result.class_map.shape == (3, 5)
    assert (result.class_map == expected.argmax(0)).all()
    assert result.grid_size == (5, 3) and result.histogram().sum() == 15
    assert result.class_names == ["a", "b", "c", "d", "e"]
    assert result.overlay().shape == image.shape and result.composite().shape[1] == image.shape[1] * 3 // 2


def test_path_pil_and_array_inputs_agree(pooling_net):
    path = IMAGES / "room_0.jpg"
    pil = Image.open(path)
    with Segmenter(model=pooling_net, filter_mode="point", alpha=200) as net:
        maps = [net(x).class_map for x in (path, str(path), pil, np.asarray(pil.convert("RGB")),
                                            np.asarray(pil.convert("RGBA")))]
    assert all((m == maps[0]).all() for m in maps)


def test_mask_at_any_size(pooling_net):
    with Segmenter(model=pooling_net) as net:
        result = net(IMAGES / "humans_0.jpg")
    assert result.mask(31, 17).shape == (17, 31, 3)
    assert result.render("mask").shape == (300, 413, 3)


def test_bad_arguments_raise_library_errors_in_the_library_s_words(pooling_net):
    with pytest.raises(OptionError, match=r"^alpha=256: give a number from 0 to 255$"):
        Segmenter(model=pooling_net, alpha=256)
    with pytest.raises(OptionError, match=r"^filter_mode='bicubic': choose point or linear$"):
        Segmenter(model=pooling_net, filter_mode="bicubic")
    with pytest.raises(OptionError, match=r"^precision='int4': choose fp16, fp32 or int8$"):
        Segmenter(model=pooling_net, backend="onnxruntime", precision="int4")
    with pytest.raises(UsageError, match=r"^unknown option 'precison': did you mean precision\? the options are "):
        Segmenter(model=pooling_net, precison="fp32")
    with Segmenter(model=pooling_net) as net, pytest.raises(SegnetError, match="uint8 RGB"):
        net(np.zeros((4, 4), np.float32))


def test_a_closed_segmenter_says_so_in_one_line(pooling_net):
    segmenter = Segmenter(model=pooling_net)
    segmenter(IMAGES / "city_0.jpg")
    segmenter.close()
    for use in (lambda: segmenter(IMAGES / "city_0.jpg"), lambda: segmenter.segment_batch([IMAGES / "city_0.jpg"])):
        with pytest.raises(SegnetError, match=r"this Segmenter of .* is closed .*: make a new one"):
            use()
    segmenter.close()  # closing twice is fine


def test_a_small_run_starts_quickly_and_a_long_one_is_tuned(pooling_net):
    """On a GPU, cuDNN's exhaustive algorithm search and CUDA-graph capture cost about a second at load
    (issue 20): worth it for a folder, not for one image. The run loop says how many images are coming."""
    with Segmenter(model=pooling_net, backend="onnxruntime", expected_images=1) as quick, \
            Segmenter(model=pooling_net, backend="onnxruntime", expected_images=500) as long, \
            Segmenter(model=pooling_net, backend="onnxruntime") as unknown:
        settings = [s.backend.cuda_settings for s in (quick, long, unknown)]
    search = [dict(s.provider_options)["cudnn_conv_algo_search"] for s in settings]
    assert search == ["HEURISTIC", "EXHAUSTIVE", "EXHAUSTIVE"]
    assert [(s.graphs, s.warm_up) for s in settings] == [(False, False), (True, True), (True, True)]
