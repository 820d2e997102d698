"""The TensorRT backend running the fused graph (``fuse``, ``infer_images``, ``infer_pictures``), with a stand-in
TensorRT and CUDA layer (``fakes.py``): the fake builder records the parsed graph and its optimisation profile, and
the fake engine runs that graph with onnxruntime's CPU provider on the fake device memory, so what the backend
copies in and out, and the shapes it sets, are checked against the CPU path's class maps and ``drawing.draw``'s
pictures. The real TensorRT-RTX builder builds the same graphs in ``rtx/``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import segnet.backends
import segnet.backends.tensorrt.cuda
from segnet import Segmenter
from segnet.backends import tensorrt as trt_backend
from segnet.backends.fused import IMAGE
from segnet.backends.tensorrt.recipe import EngineRecipe
from segnet.drawing import KINDS, DrawSpec, draw
from segnet.errors import SegnetError, UsageError
from segnet.image_io import read_image
from tests.backends.tensorrt.fakes import CLASSES, FakeCuda, fake_tensorrt
from tests.conftest import IMAGES
from tests.support import models

WIDTH, HEIGHT = 64, 32


@pytest.fixture
def install(monkeypatch):
    """``install(flavour, version)``: a stand-in TensorRT of that flavour and a stand-in GPU; what it recorded."""

    def installed(flavour: str = "tensorrt", version: str | None = None) -> dict:
        cuda, record = FakeCuda("NVIDIA GeForce RTX 4090", (8, 9)), {}
        fake = fake_tensorrt(cuda, record, flavour, version)
        monkeypatch.setattr(trt_backend, "import_tensorrt", lambda flavour="auto": fake)
        monkeypatch.setattr(trt_backend, "unusable_reason", lambda flavour="auto": None)
        monkeypatch.setattr(segnet.backends.tensorrt.cuda, "open_cuda", lambda: cuda)
        return record

    monkeypatch.setattr(segnet.backends, "_auto_fallback", None)
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (__file__,))  # the stand-in GPU's machine shows one
    return installed


@pytest.fixture
def network(tmp_path):
    return models.write_network(tmp_path / "net", models.pooling_model, num_classes=CLASSES, width=WIDTH,
                                height=HEIGHT)


def segmenter(network, **given) -> Segmenter:
    given = {"backend": "tensorrt", "precision": "fp32", "engine_cache": network.parent / "engines", **given}
    return Segmenter(model=network, **given)


def batches() -> list[np.ndarray]:
    """Same-size images in one batch; odd sizes for the composite's W//2 and H//2."""
    names = [("camvid_0.jpg", "camvid_1.jpg"), ("city_0.jpg",), ("trail_0.jpg",)]
    return [np.stack([read_image(IMAGES / name) for name in group]) for group in names]


def engines(network) -> dict[str, dict]:
    """The cached engines' records, by file name."""
    return {p.name.removesuffix(".json"): json.loads(p.read_text())
            for p in (network.parent / "engines").glob("*.engine.json")}


@pytest.mark.parametrize("flavour, version", [("tensorrt", None), ("tensorrt", "11.4.0.106"),
                                              ("tensorrt_rtx", None)])
def test_tensorrt_fuses_by_default_and_gives_the_cpu_paths_class_maps(install, network, flavour, version):
    record = install(flavour, version)
    precision = "fp32" if version is None and flavour == "tensorrt" else "fp16"  # 10: FP16 is refused (below)
    with segmenter(network, batch_size=2, precision=precision) as fused, \
            Segmenter(model=network, backend="onnxruntime", precision=precision, fuse="off") as cpu:
        assert fused.fused and fused.description.endswith(", pre-processing and class map in the graph")
        for batch in batches():
            got, want = fused.segment_batch(list(batch)), cpu.segment_batch(list(batch))
            for g, w in zip(got, want):
                assert (g.class_map == w.class_map).all()
                np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5, atol=1e-5)
    parsed = record["parsed_model"]  # the TensorRT form: Gather never reads the uint8 image
    assert [n.op_type for n in parsed.graph.node][:2] == ["Cast", "Gather"]
    assert record["profiles"][-1][IMAGE] == [[1, 1, 1, 3], [2, HEIGHT, WIDTH, 3], [2, 2896, 2896, 3]]
    names = sorted(engines(network))
    assert len(names) == 2 and sum(".fused." in name for name in names) == 1  # the plain one, then the fused one
    fused_key = next(r["key"] for n, r in engines(network).items() if ".fused." in n)
    settings = dict(fused_key["builder_settings"])
    assert settings["graph"] == "fused" and settings["fused"]["num_classes"] == CLASSES
    assert settings["image_sides"] == [1, 2896]  # 2 images of 2896x2896 at most: 4096x4096 pixels


def test_a_second_run_loads_both_engines_from_the_cache(install, network):
    record = install()
    for _ in range(2):
        with segmenter(network) as fused:
            fused(IMAGES / "city_0.jpg")
    assert record["builds"] == 2 and record["deserialized"] == 4


@pytest.mark.parametrize("kind", KINDS)
def test_pictures_drawn_in_the_engine_are_drawing_draws(install, network, kind):
    install("tensorrt_rtx")
    with segmenter(network, drawing=DrawSpec.of_kind(kind)) as fused:
        assert fused.draws_on_device and fused.backend.draws == kind
        for filter_mode in ("point", "linear"):
            fused.drawing = DrawSpec.of_kind(kind, filter_mode)
            for batch in batches():
                for result, picture in fused.draw_batch(batch):
                    want = draw(result.image, result.class_map, result.colors, fused.drawing)
                    assert picture.shape == want.shape and (picture == want).all()
            maps, _ = fused.backend.infer_images(batch)  # an engine that draws still gives class maps
            assert (maps[0] == result.class_map).all()
    assert any(f".fp32.fused-{kind}.rtx1.7.1.116.sm89." in name for name in engines(network))


def test_images_beyond_the_profile_are_stretched_and_drawn_on_the_cpu(install, network, monkeypatch):
    record = install()
    with segmenter(network, drawing=DrawSpec.of_kind("composite")) as fused:
        batch = batches()[1]
        want = fused.draw_batch(batch)
        monkeypatch.setattr(trt_backend, "fused_max_side", lambda max_batch: max(batch.shape[1:3]) - 1)
        got = fused.draw_batch(batch)
        for (r, picture), (w, expected) in zip(got, want):
            assert (r.class_map == w.class_map).all() and (picture == expected).all()
    image_shapes = [shape for name, shape in record["contexts"][-1].set_shapes if name == IMAGE]
    assert image_shapes[-1] == (1, HEIGHT, WIDTH, 3)  # the stretched image went in, with the identity indices


def test_tensorrt_10_fp16_keeps_pre_processing_on_the_cpu(install, network, caplog):
    record = install()
    with segmenter(network, precision="fp16") as plain:
        assert not plain.fused and plain.backend.can_fuse is False
        plain(IMAGES / "city_0.jpg")
    assert record["builds"] == 1 and not any(".fused" in name for name in engines(network))
    with pytest.raises(UsageError, match="cannot run pre-processing inside the graph; use fuse='off'"):
        segmenter(network, precision="fp16", fuse="on")


def test_a_fused_engine_that_fails_leaves_the_network_running_or_fails_with_fuse_on(install, network, caplog,
                                                                                    monkeypatch):
    install()

    def refused(self, onnx_path, spec):
        raise SegnetError("the parser said no")

    monkeypatch.setattr(EngineRecipe, "fused_graph", refused)
    caplog.set_level(logging.INFO, logger="segnet")
    with segmenter(network) as plain:
        assert not plain.fused
        result = plain(IMAGES / "city_0.jpg")
    assert result.class_map.shape == (HEIGHT // 32, WIDTH // 32)
    assert [r.getMessage() for r in caplog.records if "stays on the CPU" in r.getMessage()] == \
        ["pre-processing stays on the CPU: the parser said no"]
    with pytest.raises(SegnetError, match="the parser said no"):
        segmenter(network, fuse="on")


def test_after_fuse_the_plain_engine_is_let_go(install, network):
    install()
    with segmenter(network) as fused:
        with pytest.raises(SegnetError, match="runs the fused engine now: use infer_images"):
            fused.backend.infer(np.zeros((1, 3, HEIGHT, WIDTH), np.float32))
        maps, scores = fused.backend.infer_images(batches()[0])
        assert maps.dtype == np.uint8 and maps.shape == (2, 1, 2) and scores.shape == (2, CLASSES, 1, 2)
        with pytest.raises(SegnetError, match=r"needs a fused graph that draws: call fuse\(spec, draw\)"):
            fused.backend.infer_pictures(batches()[0], fused.colors, DrawSpec())


def test_rtx_keeps_the_kernels_of_each_image_size_in_the_runtime_cache(install, network):
    record = install("tensorrt_rtx")
    with segmenter(network, batch_size=2) as fused:
        for batch in [*batches(), batches()[0]]:
            fused.backend.infer_images(batch)
    (saved,) = (network.parent / "engines").glob("*.fused.*.runtime.cache")
    kernels = json.loads(saved.read_bytes().removeprefix(b"kernels:"))
    assert sorted(shapes[0] for shapes in kernels) == sorted([list(b.shape) for b in batches()])
    assert record["fused_runs"] == 4


def test_fused_graphs_are_those_a_run_asks_for(network):
    from segnet.options import Options
    from segnet.segmenter import fused_graphs

    (plain, spec_only), (again, drawn) = fused_graphs(Options(model=network, visualize="mask"))
    assert plain == again and spec_only is None and drawn == "mask"
    assert (plain.width, plain.height, plain.num_classes) == (WIDTH, HEIGHT, CLASSES)
    assert fused_graphs(Options(model=network, fuse="off")) == []
    assert fused_graphs(Options(model=network, resize="letterbox")) == []  # the graph stretches only
