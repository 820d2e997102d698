"""A stand-in ``tensorrt`` (or ``tensorrt_rtx``) module and a stand-in CUDA layer, for testing what the backend
asks of TensorRT on machines without a GPU. Not a test module: the tests of this folder import it.

The fakes are small: the parser reads the ONNX model it is given (file or bytes) with onnx, the "engine" is a JSON
record of the network's tensors, optimisation profile and targets, and running it computes the pooling model's
numpy reference on whatever sits in the fake device memory. An engine of the fused graph (several inputs of
several types) keeps the parsed model and runs it with onnxruntime's CPU provider instead, on the same memory.
``record`` collects what the backend asked for; its ``"fail"`` entry makes chosen calls fail the way real TensorRT
does (``None``, ``-1``, a logged error).
"""

from __future__ import annotations

import json
import types

import numpy as np
import onnx

from segnet.backends.tensorrt.cuda import DeviceBuffer, GpuInfo, Stream
from tests.support.models import pooling_reference

CLASSES = 5
#: ONNX element types as the fake's data types, and those as numpy's
DTYPES = {onnx.TensorProto.FLOAT: "float", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT64: "int64"}
DTYPES_NP = {"float": np.float32, "half": np.float16, "uint8": np.uint8, "int64": np.int64}


class FakeCuda:
    def __init__(self, name: str = "Fake GPU", compute_capability: tuple[int, int] = (9, 0)):
        self.info = GpuInfo(name, compute_capability)
        self.memory: dict[int, bytearray] = {}
        self.calls: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def device_info(self):
        return self.info

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


def fake_tensorrt(cuda: FakeCuda, record: dict, flavour: str = "tensorrt", version: str | None = None):
    """A stand-in TensorRT module of ``flavour`` ("tensorrt" or "tensorrt_rtx"); ``record`` collects what the
    builder and runtime were asked to do, and ``record["fail"]`` (a set) makes calls fail: "parse", "profile",
    "build", "deserialize" (with ``record["deserialize_error"]``); ``record["validity"]`` (or what calling it
    gives) is what TensorRT-RTX's validity check answers."""
    fail = record.setdefault("fail", set())
    rtx = flavour == "tensorrt_rtx"

    class ILogger:
        ERROR, INTERNAL_ERROR = "error", "internal error"

    class Tensor:
        def __init__(self, name, shape, dtype="float"):
            self.name, self.shape, self.dtype = name, shape, dtype

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
            self.network, self.logger = network, logger

        def parse_from_file(self, model):
            record["parsed"] = "file"
            record["parsed_model"] = onnx.load(model)
            return self._read(record["parsed_model"])

        def parse(self, model):
            record["parsed"] = "bytes"
            record["parsed_model"] = onnx.load_from_string(bytes(model))
            return self._read(record["parsed_model"])

        def _read(self, model):
            if "parse" in fail:
                self.logger.log(ILogger.ERROR, "ModelImporter.cpp:100: the parser said no\ndetails")
                return False

            def tensors(values):
                return [Tensor(v.name, tuple(d.dim_value if d.dim_value > 0 else -1
                                             for d in v.type.tensor_type.shape.dim),
                               DTYPES[v.type.tensor_type.elem_type]) for v in values]

            weights = {t.name for t in model.graph.initializer}
            self.network.inputs = tensors(v for v in model.graph.input if v.name not in weights)
            self.network.outputs = tensors(model.graph.output)
            self.network.model = model
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
        def __init__(self, logger):
            self.logger = logger
            self.profiles, self.flags, self.targets = [], [], {}
            self.num_compute_capabilities = 0
            self.timing = False

        def set_memory_pool_limit(self, pool, pool_size):
            pass

        def set_flag(self, flag):
            self.flags.append(flag)

        def set_compute_capability(self, compute_capability, index):
            assert 0 <= index < self.num_compute_capabilities
            self.targets[index] = compute_capability
            return True

        def add_optimization_profile(self, profile):
            if "profile" in fail:
                self.logger.log(ILogger.ERROR, "IOptimizationProfile::isValid: Error Code 4: MIN<=OPT<=MAX")
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            self.timing = True
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config(self.logger)

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if "build" in fail:
                self.logger.log(ILogger.ERROR, "Error Code 2: Internal Error (out of builder memory)")
                return None
            record["builds"] = record.get("builds", 0) + 1
            profiles = [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles]
            record["profiles"] = profiles
            record["flags"] = config.flags
            record["targets"] = [config.targets[i] for i in range(config.num_compute_capabilities)]
            record["timing_cache"] = config.timing
            fused = len(network.inputs) > 1  # the fused graph: run by onnxruntime, so the model goes along
            return json.dumps({"inputs": {t.name: t.shape for t in network.inputs},
                               "outputs": {t.name: t.shape for t in network.outputs},
                               "dtypes": {t.name: t.dtype for t in [*network.inputs, *network.outputs]},
                               "model": network.model.SerializeToString().hex() if fused else None,
                               "profiles": profiles, "targets": record["targets"]}).encode()

    class RuntimeCache:
        def __init__(self):
            self.kernels: list[int] = []

        def deserialize(self, blob):
            record.setdefault("cache_loaded", []).append(bytes(blob))
            if not bytes(blob).startswith(b"kernels:"):
                return False
            self.kernels = json.loads(bytes(blob)[len(b"kernels:"):])
            return True

        def serialize(self):
            return b"kernels:" + json.dumps(sorted(self.kernels)).encode()

    class RuntimeConfig:
        def __init__(self):
            self.dynamic_shapes_kernel_specialization_strategy = "lazy"
            self.cache = None

        def create_runtime_cache(self):
            return RuntimeCache()

        def set_runtime_cache(self, cache):
            self.cache = cache
            return True

    class Context:
        def __init__(self, engine, runtime_config=None):
            self.engine, self.runtime_config = engine, runtime_config
            self.shapes = dict(engine.shapes)
            self.addresses = {}
            self.set_shapes = []
            record["contexts"] = record.get("contexts", []) + [self]

        def set_input_shape(self, name, shape):
            if name not in self.engine.profiles[0]:  # a static input: only its own shape
                return tuple(shape) == self.engine.shapes[name]
            low, _, high = (tuple(s) for s in self.engine.profiles[0][name])
            if len(shape) != len(low) or not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
                return False
            self.set_shapes.append((name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            if self.engine.session is None:
                for out in self.engine.outputs:  # the batch follows the input's
                    self.shapes[out] = (shape[0], *self.engine.shapes[out][1:])
            return True

        def get_tensor_shape(self, name):
            if self.engine.session is not None and name in self.engine.outputs:  # as TensorRT infers them
                shapes = tuple(self.shapes[i] for i in self.engine.inputs)
                assert all(-1 not in s for s in shapes), "input shapes not all set"
                if shapes not in self.engine.output_shapes:
                    zeros = {i: np.zeros(s, DTYPES_NP[self.engine.dtypes[i]])
                             for i, s in zip(self.engine.inputs, shapes)}
                    outputs = self.engine.session.run(self.engine.outputs, zeros)
                    self.engine.output_shapes[shapes] = {o: v.shape for o, v in zip(self.engine.outputs, outputs)}
                return self.engine.output_shapes[shapes][name]
            return self.shapes[name]

        def set_tensor_address(self, name, memory):
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            if self.engine.session is not None:
                return self._run_fused()
            (inp,), (out,) = self.engine.inputs, self.engine.outputs
            assert -1 not in self.shapes[inp], "input shape not set"
            n = self.shapes[inp][0]
            if self.runtime_config is not None:  # TensorRT-RTX compiles the kernels of a new shape (JIT)
                cache = self.runtime_config.cache
                if n not in cache.kernels:
                    cache.kernels.append(n)
                    record.setdefault("compiled", []).append(
                        (n, self.runtime_config.dynamic_shapes_kernel_specialization_strategy))
            images = np.frombuffer(bytes(cuda.memory[self.addresses[inp]]), np.float32)
            images = images[:int(np.prod(self.shapes[inp]))].reshape(self.shapes[inp])
            scores = np.stack([pooling_reference(image, CLASSES) for image in images]).astype(np.float32)
            assert scores.shape == self.shapes[out] and len(scores) == n
            cuda.memory[self.addresses[out]][:scores.nbytes] = scores.tobytes()
            return True

        def _run_fused(self):
            engine = self.engine
            feed = {}
            for name in engine.inputs:
                dtype, shape = np.dtype(DTYPES_NP[engine.dtypes[name]]), self.shapes[name]
                assert -1 not in shape, f"input shape of {name} not set"
                data = bytes(cuda.memory[self.addresses[name]][:int(np.prod(shape)) * dtype.itemsize])
                feed[name] = np.frombuffer(data, dtype).reshape(shape)
            if self.runtime_config is not None:  # TensorRT-RTX compiles the kernels of a new shape (JIT)
                key = tuple(self.shapes[name] for name in engine.inputs)
                if key not in self.runtime_config.cache.kernels:
                    self.runtime_config.cache.kernels.append(key)
            record["fused_runs"] = record.get("fused_runs", 0) + 1
            for name, value in zip(engine.outputs, engine.session.run(engine.outputs, feed)):
                assert value.shape == self.get_tensor_shape(name)
                memory = cuda.memory[self.addresses[name]]
                assert value.nbytes <= len(memory), f"the buffer of {name} is too small"
                memory[:value.nbytes] = value.tobytes()
            return True

    class Engine:
        def __init__(self, data):
            plan = json.loads(data)
            self.inputs, self.outputs = list(plan["inputs"]), list(plan["outputs"])
            self.shapes = {k: tuple(v) for k, v in {**plan["inputs"], **plan["outputs"]}.items()}
            self.profiles = plan["profiles"]
            self.num_io_tensors = len(self.shapes)
            self.dtypes = plan.get("dtypes") or {}
            self.session, self.output_shapes = None, {}
            if plan.get("model"):
                import onnxruntime

                self.session = onnxruntime.InferenceSession(bytes.fromhex(plan["model"]),
                                                            providers=["CPUExecutionProvider"])

        def get_tensor_name(self, index):
            return [*self.inputs, *self.outputs][index]

        def get_tensor_mode(self, name):
            return "input" if name in self.inputs else "output"

        def get_tensor_dtype(self, name):
            return self.dtypes.get(name, "float")

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def create_runtime_config(self):
            return RuntimeConfig()

        def create_execution_context(self, runtime_config=None):
            assert (runtime_config is not None) == rtx, "TensorRT-RTX contexts get a runtime config, others none"
            return Context(self, runtime_config)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def get_engine_validity(self, buffer):
            validity = record.get("validity", (EngineValidity.VALID, 0))
            return validity() if callable(validity) else validity

        def deserialize_cuda_engine(self, serialized_engine):
            record["deserialized"] = record.get("deserialized", 0) + 1
            if "deserialize" in fail:
                self.logger.log(ILogger.ERROR, record["deserialize_error"])
                return None
            return Engine(serialized_engine)

    EngineValidity = types.SimpleNamespace(VALID=0, SUBOPTIMAL=1, INVALID=2)
    module = types.SimpleNamespace(
        __name__="tensorrt_rtx_bindings" if rtx else "tensorrt",
        __version__=version or ("1.7.1.116" if rtx else "10.16.1.11"), ILogger=ILogger, Builder=Builder,
        OnnxParser=OnnxParser, Runtime=Runtime, MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        DataType=types.SimpleNamespace(FLOAT="float", HALF="half", UINT8="uint8", INT64="int64"),
        TensorIOMode=types.SimpleNamespace(INPUT="input"))
    if rtx:
        module.ComputeCapability = types.SimpleNamespace(SM75=75, SM80=80, SM86=86, SM89=89, SM120=120, SM121=121)
        module.EngineValidity = EngineValidity
        module.EngineInvalidityDiagnostics = types.SimpleNamespace(
            VERSION_MISMATCH=1, UNSUPPORTED_CC=2, OLD_CUDA_DRIVER=4, OLD_CUDA_RUNTIME=8, INSUFFICIENT_GPU_MEMORY=16,
            MALFORMED_ENGINE=32, CUDA_ERROR=64)
        module.DynamicShapesKernelSpecializationStrategy = types.SimpleNamespace(LAZY="lazy", EAGER="eager",
                                                                                 NONE="none")
    elif int(module.__version__.split(".")[0]) < 11:
        module.BuilderFlag = types.SimpleNamespace(FP16="fp16")
    return module
