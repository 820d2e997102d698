"""``batch_size`` on the TensorRT backend, with a fake TensorRT and a fake CUDA layer (no GPU here).

The fakes are small: the parser reads the ONNX model it is given (file or bytes) with onnx, the "engine" is
a JSON record of the network's tensors and optimisation profile, and running it computes the pooling model's
numpy reference on whatever sits in the fake device memory. So these tests check what the backend asks of
TensorRT (the profile, the cache key, the shapes it sets, the copies), not TensorRT itself.
"""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import pytest

from segnet import Options
from segnet.backends import open_backend
from segnet.backends import tensorrt as trt_backend
from segnet.backends.tensorrt.cuda import DeviceBuffer, GpuInfo, Stream
from tests.support.models import pooling_model, pooling_reference

CLASSES, WIDTH, HEIGHT = 5, 64, 32


class FakeCuda:
    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.calls: list = []

    def device_info(self):
        return GpuInfo("Fake GPU", (9, 0))

    def device_buffer(self, nbytes):
        ptr = 0x1000 * (len(self.memory) + 1)
        self.memory[ptr] = bytearray(nbytes)
        return DeviceBuffer(ptr, nbytes, None)

    def pinned_array(self, shape, dtype):
        return np.zeros(shape, dtype)

    def stream(self):
        return Stream(7, None)

    def copy_to_device(self, dst, src, stream):
        assert src.flags.c_contiguous and src.nbytes <= dst.nbytes
        self.memory[dst.ptr][:src.nbytes] = src.tobytes()
        self.calls.append(("to_device", src.shape))

    def copy_to_host(self, dst, src, stream):
        assert dst.flags.c_contiguous and dst.nbytes <= src.nbytes
        dst[...] = np.frombuffer(bytes(self.memory[src.ptr][:dst.nbytes]), dst.dtype).reshape(dst.shape)
        self.calls.append(("to_host", dst.shape))

    def synchronize(self, stream):
        self.calls.append("synchronize")

    def close(self):
        pass


def fake_tensorrt(cuda: FakeCuda, record: dict):
    """A stand-in ``tensorrt`` module; ``record`` collects what the builder was asked to do."""

    class ILogger:
        ERROR, INTERNAL_ERROR = "error", "internal error"

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self):
            self.inputs, self.outputs = [], []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, model):
            record["parsed"] = "file"
            return self._read(onnx.load(model))

        def parse(self, model):
            record["parsed"] = "bytes"
            return self._read(onnx.load_from_string(bytes(model)))

        def _read(self, model):
            def tensors(values):
                return [Tensor(v.name, tuple(d.dim_value if d.dim_value > 0 else -1
                                             for d in v.type.tensor_type.shape.dim)) for v in values]

            weights = {t.name for t in model.graph.initializer}
            self.network.inputs = tensors(v for v in model.graph.input if v.name not in weights)
            self.network.outputs = tensors(model.graph.output)
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):
            self.shapes[input] = (min, opt, max)

    class TimingCache:
        def combine(self, input_cache, ignore_mismatch):
            return True

        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.profiles = []

        def set_memory_pool_limit(self, pool, pool_size):
            pass

        def set_flag(self, flag):
            pass

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record["builds"] = record.get("builds", 0) + 1
            profiles = [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles]
            record["profiles"] = profiles
            return json.dumps({"inputs": {t.name: t.shape for t in network.inputs},
                               "outputs": {t.name: t.shape for t in network.outputs},
                               "profiles": profiles}).encode()

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = dict(engine.shapes)
            self.addresses = {}
            self.set_shapes = []
            record["contexts"] = record.get("contexts", []) + [self]

        def set_input_shape(self, name, shape):
            low, _, high = (tuple(s) for s in self.engine.profiles[0][name])
            if not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
                return False
            self.set_shapes.append((name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            for out in self.engine.outputs:  # the batch follows the input's
                self.shapes[out] = (shape[0], *self.engine.shapes[out][1:])
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, memory):
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            (inp,), (out,) = self.engine.inputs, self.engine.outputs
            assert -1 not in self.shapes[inp], "input shape not set"
            n = self.shapes[inp][0]
            images = np.frombuffer(bytes(cuda.memory[self.addresses[inp]]), np.float32)
            images = images[:int(np.prod(self.shapes[inp]))].reshape(self.shapes[inp])
            scores = np.stack([pooling_reference(image, CLASSES) for image in images]).astype(np.float32)
            assert scores.shape == self.shapes[out] and len(scores) == n
            cuda.memory[self.addresses[out]][:scores.nbytes] = scores.tobytes()
            return True

    class Engine:
        def __init__(self, data):
            plan = json.loads(data)
            self.inputs, self.outputs = list(plan["inputs"]), list(plan["outputs"])
            self.shapes = {k: tuple(v) for k, v in {**plan["inputs"], **plan["outputs"]}.items()}
            self.profiles = plan["profiles"]
            self.num_io_tensors = len(self.shapes)

        def get_tensor_name(self, index):
            return [*self.inputs, *self.outputs][index]

        def get_tensor_mode(self, name):
            return "input" if name in self.inputs else "output"

        def get_tensor_dtype(self, name):
            return "float"

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            return Engine(serialized_engine)

    return types.SimpleNamespace(
        __version__="10.16.1.11", ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"), BuilderFlag=types.SimpleNamespace(FP16="fp16"),
        DataType=types.SimpleNamespace(FLOAT="float", HALF="half"),
        TensorIOMode=types.SimpleNamespace(INPUT="input"))


@pytest.fixture
def fakes(monkeypatch):
    """(fake CUDA, what the fake builder recorded), installed in place of the real ones."""
    import segnet.backends.tensorrt.cuda

    cuda, record = FakeCuda(), {}
    fake = fake_tensorrt(cuda, record)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(trt_backend, "unusable_reason", lambda: None)
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
