"""The few CUDA runtime calls the device-resident path makes (issue 20): a stream of its own, copies between
device buffers and from or to the host, and waiting for them. They go through ``ctypes`` to the CUDA runtime
library (``libcudart``) that onnxruntime's CUDA provider has loaded already, so nothing is installed for
them; on a machine without it, ``available()`` is False and the callers keep their pixels on the host.

Pointers are plain integers: onnxruntime's ``OrtValue.data_ptr()``, a ``__cuda_array_interface__``'s data
pointer, or a NumPy array's (``array.ctypes.data``); the runtime tells host from device memory itself
(``cudaMemcpyDefault``), so one copy function serves every direction.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from .errors import SegnetError

#: The runtime's library, newest first: onnxruntime-gpu for CUDA 13, then 12.
LIBRARIES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
_DEFAULT_COPY = 4  # cudaMemcpyDefault: the direction from the pointers (unified addressing)
_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit waits on the legacy default stream

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_missing = ""


def available() -> bool:
    """Whether the CUDA runtime library loads here and sees a GPU (the library may be installed on a machine
    whose driver is missing or too old: then it reports an error, and this is False)."""
    try:
        library = _runtime()
    except SegnetError:
        return False
    count = ctypes.c_int(0)
    return library.cudaGetDeviceCount(ctypes.byref(count)) == 0 and count.value > 0


def _runtime() -> ctypes.CDLL:
    global _library, _missing
    with _lock:
        if _library is None and not _missing:
            for name in (*LIBRARIES, *_wheel_libraries()):
                try:
                    library = ctypes.CDLL(name)
                except OSError:
                    continue
                library.cudaGetErrorString.restype = ctypes.c_char_p
                library.cudaMemcpy2DAsync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                                      ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                                      ctypes.c_int, ctypes.c_void_p]
                library.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
                library.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
                _library = library
                break
            else:
                _missing = f"none of {', '.join(LIBRARIES)} could be loaded"
        if _library is None:
            raise SegnetError(f"the CUDA runtime is not available: {_missing}")
        return _library


def _wheel_libraries() -> list[str]:
    """The runtime library of NVIDIA's CUDA wheels (``nvidia-cuda-runtime``), where the loader would not look
    (onnxruntime finds them the same way; once it has loaded one, the names above find it first)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    found = []
    for folder in spec.submodule_search_locations or [] if spec else []:
        for pattern in ("cu13/lib/libcudart.so.13", "cuda_runtime/lib/libcudart.so.12"):
            found += [str(path) for path in Path(folder).glob(pattern)]
    return found


def _check(code: int, what: str) -> None:
    if code != 0:
        reason = _runtime().cudaGetErrorString(code)
        raise SegnetError(f"CUDA {what} failed: {reason.decode() if reason else f'error {code}'}")


class Stream:
    """A CUDA stream of the current device (non-blocking), for copies ordered among themselves; ``wait()``
    returns once everything queued on it is done."""

    def __init__(self):
        handle = ctypes.c_void_p()
        _check(_runtime().cudaStreamCreateWithFlags(ctypes.byref(handle), _NON_BLOCKING), "stream creation")
        self.handle = handle.value or 0

    def copy_rows(self, dst: int, dst_pitch: int, src: int, src_pitch: int, row_bytes: int, rows: int) -> None:
        """Queue a copy of ``rows`` rows of ``row_bytes`` bytes (any direction; the pitches are the bytes
        from one row to the next on each side)."""
        _check(_runtime().cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, _DEFAULT_COPY,
                                            self.handle), "copy")

    def copy(self, dst: int, src: int, size: int) -> None:
        """Queue a copy of ``size`` contiguous bytes (any direction)."""
        self.copy_rows(dst, size, src, size, size, 1)

    def wait(self) -> None:
        _check(_runtime().cudaStreamSynchronize(self.handle), "stream synchronisation")

    def close(self) -> None:
        handle, self.handle = self.handle, 0
        if handle:
            _runtime().cudaStreamDestroy(handle)
