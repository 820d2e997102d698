"""Pre-processing and the class map inside the graph (``fuse``) give what the CPU path gives: the real
default network on every bundled image, ignored classes and ties, other model formats; run here on
onnxruntime's CPU provider (the CUDA provider runs the same graph, BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from segnet import Segmenter
from segnet.errors import UsageError
from segnet.image_io import read_image
from tests.conftest import IMAGES, one_hot
from tests.support import models


def test_default_network_on_every_bundled_image_gives_the_cpu_paths_class_maps():
    paths = sorted(IMAGES.glob("*.jpg"))
    with Segmenter(fuse="off") as cpu, Segmenter(fuse="on") as fused:
        assert fused.fused and not cpu.fused and "in the graph" in fused.description
        assert fused.prepare(paths[0]).tensor.dtype == np.uint8  # the image itself goes in
        want = {path: cpu(path) for path in paths}
        for path in paths:
            got = fused(path)
            assert (got.class_map == want[path].class_map).all(), path.name
            # the same float32 operations in the same order: the network sees the very same input
            np.testing.assert_array_equal(got.scores, want[path].scores)


def test_ignored_class_and_ties_go_as_on_the_cpu(constant_net):
    grid = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    scores = one_hot(grid, 4)
    scores[1, 0, 0] = scores[0, 0, 0]  # a tie: the lower class wins
    scores[3, 1, 1] = scores[2, 1, 1] = 1.0  # a tie between classes 2 and 3: 2 wins
    scores[:, 0, 3] = 0.5  # every class tied: class 0
    net = constant_net(scores, names=["void", "road", "car", "sky"])  # "void" is ignored by default
    image = read_image(IMAGES / "city_0.jpg")
    for ignore in ("void", None, "car"):
        with Segmenter(model=net, fuse="off", ignore_class=ignore) as cpu, \
                Segmenter(model=net, fuse="on", ignore_class=ignore) as fused:
            want, got = cpu(image).class_map, fused(image).class_map
            assert (got == want).all(), (ignore, got, want)
    assert want[0, 0] == 0 and want[1, 1] == 3  # "car" ignored: the tie 2/3 goes to 3


@pytest.mark.parametrize("given", [{"mean": "0.5,0.4,0.3", "std": "0.2,0.3,0.4"}, {"bgr": True},
                                   {"input_size": "256x128"}])
def test_other_normalisations_and_sizes_match(tmp_path, given):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=6, width=160, height=96)
    if "input_size" in given:  # a symbolic-size model run at the size given
        model = onnx.load(str(net / "fcn_resnet18.onnx"))
        for value in [*model.graph.input, *model.graph.output]:
            for dim in value.type.tensor_type.shape.dim[2:]:
                dim.dim_param = "s"
        onnx.save(model, str(net / "fcn_resnet18.onnx"))
    paths = [IMAGES / "peds_2.jpg", *sorted(IMAGES.glob("city_*.jpg"))[:4]]
    with Segmenter(model=net, fuse="off", **given) as cpu, \
            Segmenter(model=net, fuse="on", batch_size=3, **given) as fused:
        # one by one, then in batches (the city images share a size: a batch of 3 and one of 1)
        for got, path in [*((fused(p), p) for p in paths), *zip(fused.segment_batch(paths[1:]), paths[1:])]:
            want = cpu(path)
            assert (got.class_map == want.class_map).all()
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)


def test_opset_18_reductions(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    model = onnx.load(str(net / "fcn_resnet18.onnx"))
    model.opset_import[0].version = 18  # ReduceMax/ReduceMin take their axes as an input from opset 18
    onnx.save(model, str(net / "fcn_resnet18.onnx"))
    with Segmenter(model=net, fuse="off") as cpu, Segmenter(model=net, fuse="on") as fused:
        assert (fused(IMAGES / "room_0.jpg").class_map == cpu(IMAGES / "room_0.jpg").class_map).all()


def test_auto_leaves_the_cpu_provider_alone_and_on_refuses_what_the_graph_cannot_do(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    with Segmenter(model=net) as auto:
        assert not auto.fused  # auto: only on the CUDA provider
    with pytest.raises(UsageError, match=r"fuse='on': only the nearest stretch runs inside the graph, not "
                                         r"resize='letterbox'; use fuse='off'"):
        Segmenter(model=net, fuse="on", resize="letterbox")
    with Segmenter(model=net, fuse="auto", resize="letterbox") as auto:
        assert not auto.fused
