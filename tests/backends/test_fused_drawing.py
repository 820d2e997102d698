"""Drawing inside the fused graph (``fuse(spec, draw)``, ``infer_pictures``) gives ``drawing.draw``'s
pictures: the real default network on real bundled images, every kind of picture with both filters, an
ignored class and per-class alphas; run here on onnxruntime's CPU provider (the CUDA provider runs the same
graph: tools/device-gpu-path)."""

from __future__ import annotations

import numpy as np
import pytest

from segnet import Segmenter, labels
from segnet.drawing import KINDS, DrawSpec, draw, picture_shape
from segnet.errors import SegnetError
from segnet.image_io import read_image
from tests.conftest import IMAGES

#: Same-size pairs go in one batch; odd sizes check the composite's W//2 and H//2.
BATCHES = [("camvid_0.jpg", "camvid_1.jpg"), ("city_0.jpg",), ("humans_0.jpg",), ("trail_0.jpg",)]
IGNORED = "Road"  # CamVid's most common class: left out, its cells take their next best class


@pytest.fixture(scope="module")
def segmenter():
    with Segmenter(fuse="on", ignore_class=IGNORED) as segmenter:
        yield segmenter


@pytest.fixture(scope="module")
def colors(segmenter):
    """The alpha rules with explicit alphas: 0 (clear), 200 and 17 keep theirs; 255 and none take 120."""
    given = [(128, 128, 128, 0), (128, 0, 0, 200), (192, 192, 128, 255), (128, 64, 128, None), (60, 40, 222, 17)]
    table = labels.class_colors(segmenter.num_classes, given, alpha=120)
    assert sorted(set(table[:, 3].tolist())) == [0.0, 17.0, 120.0, 200.0]
    return table


def _batches():
    return [np.stack([read_image(IMAGES / name) for name in names]) for names in BATCHES]


def _compare(got: np.ndarray, want: np.ndarray) -> tuple[int, int]:
    """(max abs difference per channel, pixels with any channel different)."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    differing = diff.any(axis=-1) if diff.ndim == 3 else diff > 0
    return int(diff.max()), int(differing.sum())


@pytest.mark.parametrize("kind", KINDS)
def test_device_pictures_are_the_cpu_drawing_within_one_level(segmenter, colors, kind):
    backend = segmenter.backend
    backend.fuse(backend.fused, DrawSpec.of_kind(kind))
    assert backend.draws == kind
    for filter_mode in ("point", "linear"):  # the filter is an input: the same graph draws both
        spec = DrawSpec.of_kind(kind, filter_mode)
        for batch in _batches():
            pictures, maps, scores = backend.infer_pictures(batch, colors, spec)
            assert pictures.shape == (len(batch), *picture_shape(*batch.shape[1:3], spec))
            assert not (maps == segmenter.ignore_index).any()  # the ignored class never wins
            for image, picture, class_map in zip(batch, pictures, maps):
                worst, pixels = _compare(picture, draw(image, class_map, colors, spec))
                print(f"{kind} {filter_mode} {image.shape[1]}x{image.shape[0]}: max difference {worst}, "
                      f"{pixels} pixels differ")
                assert worst <= 1
            # statistics still work: the class maps and scores are the graph's without drawing
            got_maps, got_scores = backend.infer_images(batch)
            assert (got_maps == maps).all()
            np.testing.assert_array_equal(got_scores, scores)


def test_drawing_with_a_region_and_new_colours_needs_no_new_graph(segmenter, colors):
    backend = segmenter.backend
    backend.fuse(backend.fused, DrawSpec.of_kind("composite"))
    batch = _batches()[1]
    region = (0.0, 0.125, 1.0, 0.875)  # a letterboxed image's part of the grid
    for spec, table in [(DrawSpec(("overlay", "mask"), "linear", region), colors),
                        (DrawSpec(("overlay", "mask"), "point", region), colors[::-1].copy())]:
        pictures, maps, _ = backend.infer_pictures(batch, table, spec)
        worst, pixels = _compare(pictures[0], draw(batch[0], maps[0], table, spec))
        print(f"composite {spec.filter_mode} with region {region}: max difference {worst}, {pixels} pixels differ")
        assert worst <= 1


def test_a_picture_of_another_kind_is_refused(segmenter, colors):
    backend = segmenter.backend
    backend.fuse(backend.fused, DrawSpec.of_kind("mask"))
    with pytest.raises(SegnetError, match="draws mask pictures, not overlay: call fuse"):
        backend.infer_pictures(_batches()[1], colors, DrawSpec())
    backend.fuse(backend.fused)
    with pytest.raises(SegnetError, match=r"needs a fused graph that draws: call fuse\(spec, draw\)"):
        backend.infer_pictures(_batches()[1], colors, DrawSpec())


def test_bound_buffers_refill_the_drawing_inputs_when_they_change(segmenter, colors, monkeypatch):
    """The CUDA path (device buffers bound once, refilled in place) run with CPU buffers: a new filter and
    new colours on the same shape must reach the graph, and the picture must come back."""
    from segnet.backends import onnxruntime as module

    real = segmenter.backend._ort.OrtValue

    class CpuValue:  # _Bound's "cuda" buffers, made on the CPU
        @staticmethod
        def ortvalue_from_shape_and_type(shape, dtype, device, index):
            return real.ortvalue_from_shape_and_type(shape, dtype, "cpu", 0)

        @staticmethod
        def ortvalue_from_numpy(array, device, index):  # on the CPU it wraps the array; on CUDA it copies
            return real.ortvalue_from_numpy(array.copy(), "cpu", 0)

    backend = segmenter.backend
    monkeypatch.setattr(backend._ort, "OrtValue", CpuValue)
    monkeypatch.setattr(backend, "cuda_settings", module.CudaSettings(graphs=False, io_binding=True, warm_up=False))
    monkeypatch.setattr(type(backend), "on_cuda", property(lambda self: True))
    backend.fuse(backend.fused, DrawSpec.of_kind("composite"))
    batch = _batches()[0]
    table = colors.copy()
    for filter_mode in ("linear", "point", "linear"):
        spec = DrawSpec.of_kind("composite", filter_mode)
        table[:, 3] = 255 - table[:, 3]  # the same array, changed in place: it must still be sent again
        pictures, maps, _ = backend.infer_pictures(batch, table, spec)
        for image, picture, class_map in zip(batch, pictures, maps):
            assert _compare(picture, draw(image, class_map, table, spec))[0] <= 1
    assert list(backend._bound) == [batch.shape[:3]]  # one shape, bound once, refilled
    got_maps, _ = backend.infer_images(batch)
    assert (got_maps == maps).all()


def test_composites_of_images_too_small_to_halve(segmenter, colors):
    backend = segmenter.backend
    backend.fuse(backend.fused, DrawSpec.of_kind("composite"))
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (1, 5), (5, 1), (2, 3), (3, 2)]:  # no half-size mask, or a one-pixel one
        image = rng.integers(0, 256, (1, height, width, 3), np.uint8)
        pictures, maps, _ = backend.infer_pictures(image, colors, DrawSpec.of_kind("composite"))
        assert _compare(pictures[0], draw(image[0], maps[0], colors, DrawSpec.of_kind("composite"))) == (0, 0)


@pytest.mark.parametrize("kind", [None, *KINDS])
def test_tensorrt_form_gives_the_same_maps_scores_and_pictures(segmenter, colors, kind):
    """``fused_model(..., tensorrt=True)`` (what the TensorRT backend builds) run on onnxruntime's CPU provider:
    the class maps and scores of the other form, and ``drawing.draw``'s pictures, both filters."""
    import onnx
    import onnxruntime as ort

    from segnet.backends.fused import CLASS_MAP, COLORS, COLS, IMAGE, ROWS, draw_inputs, fused_model, indices

    backend = segmenter.backend
    spec = backend.fused
    backend.fuse(spec, None if kind is None else DrawSpec.of_kind(kind))
    model = fused_model(onnx.load(str(backend._source)), backend.input.name, backend.output.name, spec,
                        None if kind is None else DrawSpec.of_kind(kind), tensorrt=True)
    uint8 = {IMAGE, CLASS_MAP}  # TensorRT's parser takes these only at a Cast (or a Shape)
    assert not [n.name for n in model.graph.node if n.op_type not in ("Cast", "Shape") and uint8 & set(n.input)]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    assert "segnet_half_pads" not in names
    gh, gw = backend.output.shape[2:]
    for filter_mode in ("point", "linear"):
        for batch in _batches():
            rows, cols = indices(*batch.shape[1:3], spec)
            feed = {IMAGE: batch, ROWS: rows, COLS: cols}
            if kind is not None:
                draw_spec = DrawSpec.of_kind(kind, filter_mode)
                feed.update((k, v) for k, v in draw_inputs(*batch.shape[1:3], gh, gw, draw_spec).items() if k in names)
                if kind != "classes":
                    feed[COLORS] = colors
            got = session.run(None, feed)
            if kind is None:
                want_maps, want_scores = backend.infer_images(batch)
                assert (got[0] == want_maps).all()
                np.testing.assert_array_equal(got[1], want_scores)
                break
            pictures, maps, scores = backend.infer_pictures(batch, colors, draw_spec)
            assert (got[0] == maps).all()
            np.testing.assert_array_equal(got[1], scores)
            assert (got[2] == pictures).all()  # the other form's pictures, bit for bit
            for image, picture, class_map in zip(batch, got[2], got[0]):
                assert _compare(picture, draw(image, class_map, colors, draw_spec))[0] <= 1
