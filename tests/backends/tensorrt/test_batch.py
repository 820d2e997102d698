"""``batch_size`` on the TensorRT backend, with a fake TensorRT and a fake CUDA layer (no GPU here; see
``fakes.py``). These tests check what the backend asks of TensorRT (the profile, the cache key, the shapes it sets,
the copies), not TensorRT itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segnet import Options
from segnet.backends import open_backend
from segnet.backends import tensorrt as trt_backend
from tests.backends.tensorrt.fakes import CLASSES, FakeCuda, fake_tensorrt
from tests.support.models import pooling_model, pooling_reference

WIDTH, HEIGHT = 64, 32


@pytest.fixture
def fakes(monkeypatch):
    """(fake CUDA, what the fake builder recorded), installed in place of the real ones."""
    import segnet.backends
    import segnet.backends.tensorrt.cuda

    cuda, record = FakeCuda(), {}
    fake = fake_tensorrt(cuda, record)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda flavour="auto": fake)
    monkeypatch.setattr(trt_backend, "unusable_reason", lambda flavour="auto": None)
    monkeypatch.setattr(segnet.backends, "_auto_fallback", None)  # no fallback remembered from earlier tests
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (__file__,))  # the fake GPU's machine shows one
    monkeypatch.setattr(segnet.backends.tensorrt.cuda, "open_cuda", lambda: cuda)
    return cuda, record


@pytest.fixture
def model(tmp_path):
    return pooling_model(tmp_path / "fcn.onnx", num_classes=CLASSES, width=WIDTH, height=HEIGHT)


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, HEIGHT, WIDTH)).astype(np.float32)


def opened(model, batch_size: int, kind: str = "tensorrt"):
    return open_backend(model, Options(backend=kind, precision="fp32", batch_size=batch_size,
                                       engine_cache=model.parent / "engines"))


def test_batch_engine_has_profile_min_1_opt_max_n_from_the_fixed_batch_model(model, fakes):
    _, record = fakes
    with opened(model, 8):
        pass
    assert record["parsed"] == "bytes"  # the model with a symbolic batch, parsed in memory
    assert record["profiles"] == [{"input_0": [[1, 3, HEIGHT, WIDTH], [8, 3, HEIGHT, WIDTH], [8, 3, HEIGHT, WIDTH]]}]


def test_batch_1_builds_from_the_file_without_a_profile(model, fakes):
    cuda, record = fakes
    with opened(model, 1) as backend:
        scores = backend.infer(images(3))  # one image at a time, as before
    assert record["parsed"] == "file" and record["profiles"] == []
    assert record["contexts"][0].set_shapes == []
    assert cuda.calls.count("synchronize") == 3
    np.testing.assert_allclose(scores, [pooling_reference(i, CLASSES) for i in images(3)], rtol=1e-5, atol=1e-6)


def test_cache_key_differs_between_batch_1_and_batch_8(model, fakes):
    _, record = fakes
    for batch_size in (1, 8, 1, 8):
        with opened(model, batch_size):
            pass
    assert record["builds"] == 2  # each built once, then loaded from the cache
    records = [json.loads(p.read_text()) for p in sorted((model.parent / "engines").glob("*.engine.json"))]
    profiles = sorted(dict(r["key"]["builder_settings"]).get("batch_profile", []) for r in records)
    assert profiles == [[], [1, 8, 8]]  # batch 1 keeps the key it had before batching


@pytest.mark.parametrize("n", [3, 8, 1])
def test_infer_sets_the_input_shape_to_n_and_returns_n_score_maps(model, fakes, n):
    cuda, record = fakes
    with opened(model, 8) as backend:
        cuda.calls.clear()
        scores = backend.infer(images(n))
    context = record["contexts"][0]
    assert context.set_shapes[0] == ("input_0", (8, 3, HEIGHT, WIDTH))  # buffers for the largest batch
    assert context.set_shapes[-1] == ("input_0", (n, 3, HEIGHT, WIDTH))
    assert cuda.calls == [("to_device", (n, 3, HEIGHT, WIDTH)), ("to_host", (n, CLASSES, 1, 2)), "synchronize"]
    assert scores.shape == (n, CLASSES, 1, 2) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, [pooling_reference(i, CLASSES) for i in images(n)], rtol=1e-5, atol=1e-6)


def test_scores_are_not_overwritten_by_the_next_call(model, fakes):
    with opened(model, 4) as backend:
        first = backend.infer(images(2))
        backend.infer(images(4))
    np.testing.assert_allclose(first, [pooling_reference(i, CLASSES) for i in images(2)], rtol=1e-5, atol=1e-6)


def test_more_images_than_the_batch_size_is_an_error(model, fakes):
    with opened(model, 2) as backend, pytest.raises(ValueError, match="1 to 2"):
        backend.infer(images(3))


def test_auto_passes_the_batch_size_to_both_backends(model, fakes):
    backend = opened(model, 8, kind="auto")
    first, fallback = backend.candidates
    assert first.batch_size == 8 and fallback.batch_size == 8
