"""The checked CUDA layer. Bookkeeping and error wording run everywhere against a stand-in cuda-python
module; the rest needs a CUDA GPU and runs once per installed API (cuda-python, PyCUDA). With
``SEGNET_REQUIRE_GPU=1`` (``tools/device-cuda-check`` sets it) a missing GPU or API fails instead of
skipping. ``SEGNET_DEVICE_REPORT=FILE`` appends measurements as JSON lines."""

from __future__ import annotations

import ctypes
import enum
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

import segnet.backends.tensorrt.cuda
from segnet.backends.tensorrt.cuda import APIS, CudaError, open_cuda
from segnet.errors import SegnetError

REQUIRE_GPU = os.environ.get("SEGNET_REQUIRE_GPU") == "1"


def record(**fields) -> None:
    if os.environ.get("SEGNET_DEVICE_REPORT"):
        with open(os.environ["SEGNET_DEVICE_REPORT"], "a") as f:
            f.write(json.dumps(fields) + "\n")


# --- everywhere: a stand-in for cuda.bindings.runtime -------------------------------------------------------

class FakeError(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35


class FakeRuntime:
    """Enough of cuda.bindings.runtime to drive ``_CudaPython``: real host memory, fake device pointers."""

    cudaError_t = FakeError
    cudaStreamNonBlocking = 1
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, devices=1):
        self.devices, self.calls, self.host = devices, [], {}

    def cudaGetErrorName(self, err):
        return FakeError.cudaSuccess, err.name.encode()

    def cudaGetErrorString(self, err):
        return FakeError.cudaSuccess, b"as the fake says"

    def cudaGetDeviceCount(self):
        if self.devices is None:
            return FakeError.cudaErrorInsufficientDriver, None
        return FakeError.cudaSuccess, self.devices

    def cudaSetDevice(self, device):
        return (FakeError.cudaSuccess,)

    def cudaMalloc(self, nbytes):
        if nbytes > 1 << 40:
            return FakeError.cudaErrorMemoryAllocation, None
        self.calls.append(("cudaMalloc", nbytes))
        return FakeError.cudaSuccess, 0x1000 + len(self.calls)

    def cudaMallocHost(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.host[ctypes.addressof(buffer)] = buffer
        self.calls.append(("cudaMallocHost", nbytes))
        return FakeError.cudaSuccess, ctypes.addressof(buffer)

    def cudaStreamCreateWithFlags(self, flags):
        self.calls.append(("cudaStreamCreateWithFlags", flags))
        return FakeError.cudaSuccess, 77

    def __getattr__(self, name):  # frees, copies, synchronise: recorded, always fine
        return lambda *args: self.calls.append((name, *args)) or (FakeError.cudaSuccess,)


@pytest.fixture
def fake_runtime(monkeypatch):
    runtime = FakeRuntime()
    monkeypatch.setattr(segnet.backends.tensorrt.cuda, "_import", lambda api: runtime)
    return runtime


def test_failed_call_is_a_one_line_error_with_cuda_names(fake_runtime):
    fake_runtime.devices = None
    with pytest.raises(CudaError) as info:
        open_cuda(api="cuda-python")
    assert str(info.value) == "CUDA cudaGetDeviceCount failed: cudaErrorInsufficientDriver (as the fake says)"


def test_missing_gpu_number_is_an_error(fake_runtime):
    with pytest.raises(CudaError, match="no CUDA GPU number 3: 1 visible"):
        open_cuda(3, api="cuda-python")


def test_close_frees_everything_newest_first_once(fake_runtime):
    layer = open_cuda(api="cuda-python")
    buffer = layer.device_buffer(64)
    host = layer.pinned_array((2, 4), np.float32)
    stream = layer.stream()
    host[:] = 1.5  # real host memory behind the pinned array
    layer.copy_to_device(buffer, host, stream)
    layer.synchronize(stream)
    fake_runtime.calls.clear()
    layer.close()
    layer.close()
    assert [c[0] for c in fake_runtime.calls] == ["cudaStreamDestroy", "cudaFreeHost", "cudaFree"]
    with pytest.raises(RuntimeError, match="closed"):
        layer.copy_to_device(buffer, host, stream)


def test_copies_are_checked_for_size_and_layout(fake_runtime):
    with open_cuda(api="cuda-python") as layer:
        buffer, stream = layer.device_buffer(16), layer.stream()
        with pytest.raises(ValueError, match="does not fit"):
            layer.copy_to_device(buffer, np.zeros(5, np.float32), stream)
        with pytest.raises(ValueError, match="C-contiguous"):
            layer.copy_to_host(np.zeros((4, 2), np.float32).T, buffer, stream)


class FakeDriver:
    """Enough of pycuda.driver to drive ``_PyCuda``: PyCUDA raises its own errors, worded like this."""

    class Error(Exception):
        pass

    class Context:
        popped = 0

        @classmethod
        def pop(cls):
            cls.popped += 1

    class Device:
        def __init__(self, number):
            self.number = number

        @staticmethod
        def count():
            return 1

        def retain_primary_context(self):
            return SimpleNamespace(push=lambda: None)

    def init(self):
        pass

    def mem_alloc(self, nbytes):
        raise self.Error("cuMemAlloc failed: out of memory")


def test_pycuda_errors_are_one_line_cuda_errors(monkeypatch):
    driver = FakeDriver()
    monkeypatch.setattr(segnet.backends.tensorrt.cuda, "_import", lambda api: driver)
    layer = open_cuda(api="pycuda")
    with pytest.raises(CudaError) as info:
        layer.device_buffer(1 << 50)
    assert str(info.value) == "CUDA cuMemAlloc failed: out of memory"
    layer.close()
    assert driver.Context.popped == 1


@pytest.mark.skipif(segnet.backends.tensorrt.cuda.available_api() is not None,
                    reason="a CUDA package is installed here")
def test_no_cuda_package_names_the_install():
    with pytest.raises(SegnetError, match=r"pip install cuda-python \(or pycuda\)"):
        open_cuda()


# --- on a CUDA GPU, once per API ----------------------------------------------------------------------------

@pytest.fixture(params=APIS)
def api(request):
    return request.param


@pytest.fixture
def cuda(api):
    try:
        layer = open_cuda(api=api)
    except (ImportError, SegnetError) as exc:
        if REQUIRE_GPU:
            pytest.fail(f"{api} on a CUDA GPU is required here: {exc}")
        pytest.skip(f"{api} on a CUDA GPU is not available here: {exc}")
    yield layer
    layer.close()


def free_bytes(layer) -> int:
    if layer.api == "pycuda":
        return layer.drv.mem_get_info()[0]
    return layer._call("cudaMemGetInfo")[0]


def test_device_info(cuda):
    info = cuda.device_info()
    assert info.name and isinstance(info.name, str)
    assert all(isinstance(v, int) for v in info.compute_capability) and info.compute_capability >= (5, 0)
    record(test="device_info", api=cuda.api, name=info.name, compute_capability=info.compute_capability)


@pytest.mark.parametrize("shape, dtype", [((1, 3, 256, 512), np.float32), ((1, 21, 8, 16), np.float16),
                                          ((7,), np.uint8), ((1, 3, 1024, 2048), np.float32)])
def test_pinned_round_trip(cuda, shape, dtype):
    stream = cuda.stream()
    src, dst = cuda.pinned_array(shape, dtype), cuda.pinned_array(shape, dtype)
    src[...] = np.random.default_rng(0).uniform(-100, 100, shape).astype(dtype)
    dst[...] = 0
    buffer = cuda.device_buffer(src.nbytes)
    cuda.copy_to_device(buffer, src, stream)
    cuda.copy_to_host(dst, buffer, stream)
    cuda.synchronize(stream)
    np.testing.assert_array_equal(dst, src)


def test_stream_keeps_order(cuda):
    # every round goes through the same device buffer: only in-order execution gives each output its input
    rounds, shape = 16, (4 << 20,)
    stream, buffer = cuda.stream(), cuda.device_buffer(shape[0] * 4)
    inputs = [cuda.pinned_array(shape, np.float32) for _ in range(rounds)]
    outputs = [cuda.pinned_array(shape, np.float32) for _ in range(rounds)]
    for r in range(rounds):
        inputs[r][:] = r
        outputs[r][:] = -1
    for r in range(rounds):
        cuda.copy_to_device(buffer, inputs[r], stream)
        cuda.copy_to_host(outputs[r], buffer, stream)
    cuda.synchronize(stream)
    assert [float(o.min()) for o in outputs] == [float(o.max()) for o in outputs] == list(map(float, range(rounds)))


def test_copies_are_asynchronous(cuda):
    nbytes = 256 << 20
    stream, buffer = cuda.stream(), cuda.device_buffer(nbytes)
    host = cuda.pinned_array((nbytes,), np.uint8)
    host[:] = 7
    cuda.copy_to_device(buffer, host, stream)  # warm-up
    cuda.synchronize(stream)
    start = time.perf_counter()
    cuda.copy_to_device(buffer, host, stream)
    cuda.copy_to_host(host, buffer, stream)
    queued = time.perf_counter()
    cuda.synchronize(stream)
    done = time.perf_counter()
    record(test="copies_are_asynchronous", api=cuda.api, mib=nbytes >> 20, enqueue_ms=1e3 * (queued - start),
           round_trip_ms=1e3 * (done - start), gb_per_s=2 * nbytes / (done - start) / 1e9)
    assert queued - start < 0.5 * (done - start)


def test_out_of_memory_is_a_one_line_error_and_the_layer_goes_on(cuda):
    with pytest.raises(CudaError) as info:
        cuda.device_buffer(1 << 50)
    message = str(info.value)
    assert "\n" not in message and ("cudaErrorMemoryAllocation" in message or "out of memory" in message)
    record(test="out_of_memory", api=cuda.api, message=message)
    assert cuda.device_buffer(1 << 20).nbytes == 1 << 20


def test_missing_gpu_number_is_a_cuda_error(api, cuda):
    with pytest.raises(CudaError, match="no CUDA GPU number 99"):
        open_cuda(99, api=api)


def test_close_gives_the_memory_back(api, cuda):
    layer = open_cuda(api=api)
    before = free_bytes(layer)
    layer.device_buffer(1 << 30)
    layer.pinned_array((64 << 20,), np.uint8)
    during = free_bytes(layer)
    layer.close()
    after = free_bytes(cuda)
    record(test="close_gives_the_memory_back", api=api, held_mib=(before - during) >> 20,
           returned_mib=(after - during) >> 20)
    assert before - during >= 1 << 30 and after - during >= 1 << 30
    with pytest.raises(RuntimeError, match="closed"):
        layer.device_buffer(16)
