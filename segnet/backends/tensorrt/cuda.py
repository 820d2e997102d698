"""The CUDA the TensorRT backend needs, and nothing more: device buffers, pinned host arrays, one stream,
async copies, synchronise. Every CUDA return code is checked and turned into a one-line ``CudaError``.

cuda-python (``cuda.bindings.runtime``, what NVIDIA's TensorRT samples use since 10.14) comes first; PyCUDA
is the alternative where cuda-python is not installed. Nothing else in segnet imports CUDA.
Everything a ``Cuda`` allocates is freed by its ``close()`` (it is a context manager), in reverse order.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ...errors import SegnetError

APIS = ("cuda-python", "pycuda")
INSTALL = "pip install cuda-python (or pycuda)"


class CudaError(SegnetError):
    """A CUDA call failed (no GPU, out of memory, a bad pointer...)."""


class GpuInfo(NamedTuple):
    name: str
    compute_capability: tuple[int, int]


class DeviceBuffer(NamedTuple):
    ptr: int
    nbytes: int
    raw: object  # the API's own handle, kept alive with the buffer


class Stream(NamedTuple):
    handle: int  # what TensorRT's execute_async_v3 takes
    raw: object


def available_api() -> str | None:
    """The CUDA Python package that imports here, in order of preference, or None."""
    for api in APIS:
        try:
            _import(api)
            return api
        except ImportError:
            continue
    return None


def open_cuda(device: int = 0, api: str | None = None) -> Cuda:
    """A checked CUDA layer on ``device`` through ``api`` (default: the first of ``APIS`` that imports)."""
    api = api or available_api()
    if api is None:
        raise SegnetError(f"no CUDA package for Python is installed: {INSTALL}")
    if api not in APIS:
        raise ValueError(f"unknown CUDA API {api!r}: choose one of {APIS}")
    return (_CudaPython if api == "cuda-python" else _PyCuda)(device)


class Cuda:
    """Common bookkeeping; the subclasses do the calls."""

    api: str

    def __init__(self, device: int):
        self.device = device
        self._owned: list[tuple[str, Callable[[], None]]] = []  # (what, free) in allocation order
        self._closed = False

    def __enter__(self) -> Cuda:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free everything this layer allocated (newest first); the first failure is raised afterwards."""
        first = None
        while self._owned:
            _, free = self._owned.pop()
            try:
                free()
            except CudaError as exc:
                first = first or exc
        self._closed = True
        if first:
            raise first

    def _own(self, what: str, free: Callable[[], None]) -> None:
        if self._closed:
            free()
            raise RuntimeError("this CUDA layer is closed")
        self._owned.append((what, free))

    def copy_to_device(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        """Queue a copy of host array ``src`` (pinned for a truly async copy) into ``dst`` on ``stream``."""
        self._copy(dst, src, stream, to_device=True)

    def copy_to_host(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        """Queue a copy of device buffer ``src`` into host array ``dst`` on ``stream``."""
        self._copy(src, dst, stream, to_device=False)

    def _copy(self, buffer: DeviceBuffer, array: np.ndarray, stream: Stream, to_device: bool) -> None:
        if self._closed:
            raise RuntimeError("this CUDA layer is closed")
        if not array.flags.c_contiguous:
            raise ValueError("host array must be C-contiguous")
        if array.nbytes > buffer.nbytes:
            raise ValueError(f"host array of {array.nbytes} bytes does not fit a device buffer of {buffer.nbytes}")
        self._copy_async(buffer, array, stream, to_device)

    # implemented by the subclasses
    def device_info(self) -> GpuInfo: raise NotImplementedError
    def device_buffer(self, nbytes: int) -> DeviceBuffer: raise NotImplementedError
    def pinned_array(self, shape: tuple[int, ...], dtype) -> np.ndarray: raise NotImplementedError
    def stream(self) -> Stream: raise NotImplementedError
    def synchronize(self, stream: Stream) -> None: ...
    def _copy_async(self, buffer: DeviceBuffer, array: np.ndarray, stream: Stream, to_device: bool) -> None: ...


class _CudaPython(Cuda):
    """cuda-python: every call returns ``(cudaError_t, *values)``; ``_call`` checks the code."""

    api = "cuda-python"

    def __init__(self, device: int):
        super().__init__(device)
        self.rt = _import("cuda-python")
        count = self._call("cudaGetDeviceCount")
        if not 0 <= device < count:
            raise CudaError(f"no CUDA GPU number {device}: {count} visible")
        self._call("cudaSetDevice", device)

    def _call(self, name: str, *args):
        err, *values = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"CUDA {name} failed: {_text(self.rt.cudaGetErrorName(err)[1])} "
                            f"({_text(self.rt.cudaGetErrorString(err)[1])})")
        return values[0] if len(values) == 1 else tuple(values) or None

    def device_info(self) -> GpuInfo:
        prop = self._call("cudaGetDeviceProperties", self.device)
        return GpuInfo(_text(prop.name), (prop.major, prop.minor))

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        ptr = int(self._call("cudaMalloc", nbytes))
        self._own("device buffer", lambda: self._call("cudaFree", ptr))
        return DeviceBuffer(ptr, nbytes, ptr)

    def pinned_array(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._call("cudaMallocHost", max(nbytes, 1)))
        self._own("pinned host array", lambda: self._call("cudaFreeHost", ptr))
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(ptr), dtype).reshape(shape)

    def stream(self) -> Stream:
        stream = self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)
        self._own("stream", lambda: self._call("cudaStreamDestroy", stream))
        return Stream(int(stream), stream)

    def synchronize(self, stream: Stream) -> None:
        self._call("cudaStreamSynchronize", stream.raw)

    def _copy_async(self, buffer, array, stream, to_device) -> None:
        kinds = self.rt.cudaMemcpyKind
        if to_device:
            self._call("cudaMemcpyAsync", buffer.ptr, array.ctypes.data, array.nbytes,
                       kinds.cudaMemcpyHostToDevice, stream.raw)
        else:
            self._call("cudaMemcpyAsync", array.ctypes.data, buffer.ptr, array.nbytes,
                       kinds.cudaMemcpyDeviceToHost, stream.raw)


class _PyCuda(Cuda):
    """PyCUDA raises its own exceptions on every failed driver call; ``_checked`` rewords them. It works on
    the device's primary context, the one the CUDA runtime (and so TensorRT) uses."""

    api = "pycuda"

    def __init__(self, device: int):
        super().__init__(device)
        self.drv = _import("pycuda")
        with self._checked("cuInit"):
            self.drv.init()
            count = self.drv.Device.count()
        if not 0 <= device < count:
            raise CudaError(f"no CUDA GPU number {device}: {count} visible")
        with self._checked("cuDevicePrimaryCtxRetain"):
            self._device = self.drv.Device(device)
            self._context = self._device.retain_primary_context()  # held as long as this layer
            self._context.push()
        self._own("context", self._pop)

    @contextlib.contextmanager
    def _checked(self, what: str):
        try:
            yield
        except self.drv.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise CudaError(f"CUDA {text}" if text.startswith(what) else f"CUDA {what} failed: {text}") from None

    def _pop(self) -> None:
        with self._checked("cuCtxPopCurrent"):
            self.drv.Context.pop()

    def device_info(self) -> GpuInfo:
        with self._checked("cuDeviceGetAttribute"):
            return GpuInfo(self._device.name(), tuple(self._device.compute_capability()))

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        with self._checked("cuMemAlloc"):
            allocation = self.drv.mem_alloc(nbytes)
        self._own("device buffer", lambda: self._free(allocation, "cuMemFree"))
        return DeviceBuffer(int(allocation), nbytes, allocation)

    def pinned_array(self, shape, dtype) -> np.ndarray:
        with self._checked("cuMemHostAlloc"):
            array = self.drv.pagelocked_empty(shape, dtype)
        self._own("pinned host array", lambda: self._free(array.base, "cuMemFreeHost"))
        return array

    def _free(self, allocation, what: str) -> None:
        with self._checked(what):
            allocation.free()

    def stream(self) -> Stream:
        with self._checked("cuStreamCreate"):
            stream = self.drv.Stream()
        return Stream(int(stream.handle), stream)  # PyCUDA destroys it when the object goes

    def synchronize(self, stream: Stream) -> None:
        with self._checked("cuStreamSynchronize"):
            stream.raw.synchronize()  # type: ignore[attr-defined]  # a PyCUDA Stream

    def _copy_async(self, buffer, array, stream, to_device) -> None:
        if to_device:
            with self._checked("cuMemcpyHtoDAsync"):
                self.drv.memcpy_htod_async(buffer.raw, array, stream.raw)
        else:
            with self._checked("cuMemcpyDtoHAsync"):
                self.drv.memcpy_dtoh_async(array, buffer.raw, stream.raw)


def _import(api: str):
    if api == "cuda-python":
        try:
            from cuda.bindings import runtime
        except ImportError:
            from cuda import cudart as runtime  # cuda-python before 12.6
        return runtime
    import pycuda.driver

    return pycuda.driver


def _text(value) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).rstrip("\x00").strip()
