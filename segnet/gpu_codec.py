"""JPEG decoding and encoding on the GPU with nvImageCodec (``pip install segnet[gpu]``), per image falling
back to the CPU codecs of ``image_io`` for whatever the GPU codec refuses, so nothing is lost.

``GpuCodec()`` starts nvImageCodec when it is installed and the driver reports a GPU; otherwise (or when
it cannot start) ``on_gpu`` is False, one status line says why, and every call is exactly ``image_io``'s.

- ``read_images(paths)``: the JPEG files nvImageCodec takes (a JPEG by its bytes, RGB or grey, within
  ``image_io.max_image_pixels``) are decoded in one batch on the GPU with the EXIF orientation applied, as
  ``image_io.read_image`` does; anything else (other formats, CMYK/YCCK JPEGs, files it cannot parse or
  decode) goes through ``image_io.read_image``, whose one-line ``SegnetError`` is returned in that file's
  place.
- ``read_images(paths, on_device=True)``: the GPU's images stay in device memory (``DeviceImage``: decoded on
  the codec's own CUDA stream into the images of earlier batches given back), for ``DeviceBatch`` to copy into
  the network's input there; the files the CPU decodes are host arrays, as before.
- ``encode_jpegs(pictures)`` / ``write_images(pictures, paths)``: uint8 ``[H, W, 3]`` pictures to baseline
  JPEG at ``JPEG_QUALITY`` with 4:2:0 chroma and standard Huffman tables, Pillow's settings in
  ``image_io.write_image``; other extensions, and any picture the GPU encoder refuses, are written by
  ``image_io.write_image``. A picture may be in device memory (anything with ``__cuda_array_interface__`` and
  ``host()``: ``backends.onnxruntime.DevicePicture``): the encoder reads it there. Files are written
  atomically (``util.atomic_write``).

The GPU decoder's pixels are not bit-identical to Pillow's (a different IDCT and chroma upsampling): within a
few levels, like any two JPEG decoders. ``tools/device-gpu-path`` measures the encoder against Pillow (PSNR).

nvImageCodec's backends (DEVICE.md, issue 20): its CUDA JPEG decoder is registered as HYBRID_CPU_GPU
(Huffman decoding on the CPU, the rest on the GPU), so a decoder limited to GPU_ONLY has no JPEG decoder at
all ("Could not create decoder"); HW_GPU_ONLY is the GPU's JPEG engine, which nvJPEG reports missing unless
the driver exposes it (in containers: the ``video`` driver capability). The default backends are used: the
hardware engine where there is one, else the hybrid decoder, else the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SegnetError
from .image_io import image_format, max_image_pixels, read_image, write_image
from .util import atomic_write, cuda_device_visible

log = logging.getLogger(__name__)

#: Pillow's JPEG quality in ``image_io.write_image`` (tests/test_gpu_codec.py holds the two together).
JPEG_QUALITY = 95
INSTALL = "pip install 'segnet[gpu]' (nvidia-nvimgcodec-cu13 with nvJPEG)"
#: CPU threads each decoder and encoder may use (nvImageCodec's ``max_num_cpu_threads``; 0: its default)
CPU_THREADS = 0
_JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")


class GpuCodec:
    """nvImageCodec's decoder and encoder on GPU ``device``, or, where there is none, the CPU codecs."""

    def __init__(self, device: int = 0, threads: int | None = None, *, capture_stderr: bool = True):
        """``capture_stderr``: what nvImageCodec prints while it starts becomes debug records (the capture of
        file descriptor 2 takes every thread's writes while it lasts: False where other threads may be
        printing, as ``start_in_background`` does)."""
        self.device = device
        self._threads = threads
        self.on_gpu = False
        self.reason = ""  # why the GPU codec is not used ("" when it is)
        #: images each side decoded and encoded so far (the CPU's include the GPU's refusals)
        self.counts = {"gpu_decoded": 0, "cpu_decoded": 0, "gpu_encoded": 0, "cpu_encoded": 0}
        # nvImageCodec's module, decoder, encoder and parameters once started (None: the CPU codecs only)
        self._nvimgcodec: Any = None
        self._decoder: Any = None
        self._encoder: Any = None
        self._params: Any = None
        self._decode_params: Any = None
        self._cuda_stream: Any = None  # decoding on the device: its own CUDA stream (cuda_runtime.Stream)
        self._spare: list = []  # nvImageCodec images to decode into again (give_back)
        self._spare_lock = threading.Lock()
        self._reuse = True
        if not _installed():
            self.reason = f"nvImageCodec is not installed: {INSTALL}"
        elif not _gpu_visible():
            self.reason = "the NVIDIA driver reports no GPU"
        else:
            with _stderr_to_log() if capture_stderr else contextlib.nullcontext():
                self._start(CPU_THREADS if threads is None else threads)
        if self.reason:
            log.info("JPEG decoding and encoding stay on the CPU: %s", self.reason)

    def twin(self) -> GpuCodec:
        """Another codec like this one (a decoder of its own), started without capturing stderr: the module is
        imported already, and the thread asking may not be the only one printing."""
        return GpuCodec(self.device, self._threads, capture_stderr=False)

    def _start(self, threads: int) -> None:
        try:
            nvimgcodec = _imported()
            self._decoder = nvimgcodec.Decoder(device_id=self.device, max_num_cpu_threads=threads)
            self._encoder = nvimgcodec.Encoder(device_id=self.device, max_num_cpu_threads=threads)
        except Exception as exc:  # nvImageCodec raises RuntimeError for CUDA and codec failures
            self.reason = f"nvImageCodec cannot start on GPU {self.device} ({_first_line(exc)})"
            return
        self._nvimgcodec = nvimgcodec
        self._decode_params = nvimgcodec.DecodeParams(apply_exif_orientation=True, color_spec=nvimgcodec.SRGB,
                                                      allow_any_depth=False)
        self._params = nvimgcodec.EncodeParams(
            quality_type=nvimgcodec.QualityType.QUALITY, quality_value=JPEG_QUALITY,
            chroma_subsampling=nvimgcodec.ChromaSubsampling.CSS_420,
            jpeg_encode_params=nvimgcodec.JpegEncodeParams(progressive=False, optimized_huffman=False))
        self.on_gpu = True

    # decoding -------------------------------------------------------------------------------------------

    def read_images(self, paths: Sequence[str | os.PathLike], on_device: bool = False) -> list:
        """uint8 ``[H, W, 3]`` RGB per path, upright, or the ``SegnetError`` that file gives on the CPU. With
        ``on_device``, the images the GPU decoded stay there (``DeviceImage``; the others are host arrays):
        ``DeviceBatch`` takes them to the network."""
        results: list = [None] * len(paths)
        streams, where = [], []
        if self.on_gpu:
            for index, path in enumerate(paths):
                stream = self._stream(path)
                if stream is not None:
                    streams.append(stream)
                    where.append(index)
        if streams:
            try:
                images = self._decode_on_device(streams) if on_device else \
                    self._decoder.decode(streams, params=self._decode_params)
            except Exception as exc:  # a failure of the whole batch: every file goes to the CPU
                log.debug("GPU decoding failed, the CPU decodes this batch: %s", _first_line(exc))
                images = [None] * len(streams)
            for index, image in zip(where, images):
                results[index] = self._device_rgb(image) if on_device else _host_rgb(image)
        gpu = sum(result is not None for result in results)
        self.counts["gpu_decoded"] += gpu
        self.counts["cpu_decoded"] += len(paths) - gpu
        return [read_on_cpu(path) if result is None else result for result, path in zip(results, paths)]

    def _decode_on_device(self, streams: list) -> list:
        """nvImageCodec's images of ``streams``, decoded on this codec's CUDA stream and waited for, into
        images of earlier batches given back (``DeviceImage.give_back``) where there are enough."""
        from . import cuda_runtime

        if self._cuda_stream is None:
            self._cuda_stream = cuda_runtime.Stream()
        stream = self._cuda_stream.handle
        reuse = None
        with self._spare_lock:
            if self._reuse and len(self._spare) >= len(streams):
                reuse = [self._spare.pop() for _ in streams]
        images = None
        if reuse is not None:
            try:
                images = self._decoder.decode(streams, params=self._decode_params, images=reuse, cuda_stream=stream)
            except Exception as exc:  # noqa: BLE001  (it cannot decode into given images: new ones from now on)
                log.debug("nvImageCodec does not decode into earlier images (%s): new ones each batch",
                          _first_line(exc))
                self._reuse = False
        if images is None:
            images = self._decoder.decode(streams, params=self._decode_params, cuda_stream=stream)
        self._cuda_stream.wait()
        return images

    def _device_rgb(self, image) -> DeviceImage | None:
        """A decoded nvImageCodec image as a ``DeviceImage`` (uint8 ``[H, W, 3]`` rows in device memory), or
        None (refused: the CPU decodes the file)."""
        if image is None:
            return None
        try:
            face = image.__cuda_array_interface__
            shape = tuple(int(d) for d in face["shape"])
            strides = face.get("strides")
        except Exception:
            return None
        if face.get("typestr") != "|u1" or len(shape) != 3 or shape[2] != 3:
            return None
        pitch = shape[1] * 3 if strides is None else int(strides[0])
        if strides is not None and tuple(strides[1:]) != (3, 1):
            return None
        return DeviceImage(image, shape, int(face["data"][0]), pitch, self)

    def give_back(self, images: list) -> None:
        """nvImageCodec images whose pixels were taken: later batches decode into them."""
        with self._spare_lock:
            self._spare.extend(images)

    def _stream(self, path):
        """nvImageCodec's code stream of ``path`` when the GPU should decode it, else None."""
        try:
            with open(path, "rb") as file:
                if file.read(3) != _JPEG_MAGIC:
                    return None
            stream = self._nvimgcodec.CodeStream(os.fspath(path))
        except Exception:  # unreadable or unparsable: the CPU reader says why in one line
            return None
        nv = self._nvimgcodec
        most = max_image_pixels()
        if (stream.codec_name != "jpeg" or stream.color_spec in (nv.CMYK, nv.YCCK)
                or stream.num_channels not in (1, 3) or (most is not None and stream.width * stream.height > most)):
            return None
        return stream

    # encoding -------------------------------------------------------------------------------------------

    def encode_jpegs(self, pictures: Sequence[np.ndarray]) -> list[bytes]:
        """Each uint8 ``[H, W, 3]`` picture as JPEG bytes, on the GPU where it takes it, else Pillow."""
        encoded: list[bytes | None] = [None] * len(pictures)
        if self.on_gpu and len(pictures):
            try:
                streams = self._encoder.encode([_encodable(p) for p in pictures], "jpeg", params=self._params)
            except Exception as exc:
                log.debug("GPU encoding failed, Pillow encodes this batch: %s", _first_line(exc))
                streams = [None] * len(pictures)
            for index, stream in enumerate(streams):
                if stream is not None:
                    encoded[index] = bytes(memoryview(stream))  # a CodeStream exposes its bytes as a buffer
        gpu = sum(data is not None for data in encoded)
        self.counts["gpu_encoded"] += gpu
        self.counts["cpu_encoded"] += len(pictures) - gpu
        return [data if data is not None else _cpu_jpeg(on_host(picture)) for data, picture in zip(encoded, pictures)]

    def jpeg_data(self, pictures: Sequence[np.ndarray], paths: Sequence[str | os.PathLike]) -> dict[int, bytes]:
        """The JPEG bytes of the pictures bound for JPEG files, by index, encoded in one call on the GPU
        (none without one: ``write_file`` then encodes with Pillow)."""
        if not self.on_gpu:
            return {}
        jpeg = [i for i, path in enumerate(paths) if Path(path).suffix.lower() in JPEG_SUFFIXES]
        return dict(zip(jpeg, self.encode_jpegs([pictures[i] for i in jpeg])))

    def write_images(self, pictures: Sequence[np.ndarray],
                     paths: Sequence[str | os.PathLike]) -> list[SegnetError | None]:
        """Write each picture to its path (format by extension), atomically; None or the file's error."""
        data = self.jpeg_data(pictures, paths)
        return [write_file(picture, path, data.get(i)) for i, (picture, path) in enumerate(zip(pictures, paths))]


class DeviceImage:
    """One image nvImageCodec decoded, left in device memory: ``rows`` bytes of ``pitch`` from ``pointer``.
    ``give_back()`` hands nvImageCodec's image back to its codec once its pixels are copied."""

    def __init__(self, image, shape: tuple[int, ...], pointer: int, pitch: int, codec: GpuCodec):
        self.image, self.shape, self.pointer, self.pitch, self.codec = image, shape, pointer, pitch, codec

    def give_back(self) -> None:
        image, self.image = self.image, None
        if image is not None:
            self.codec.give_back([image])


class DeviceBatch:
    """Decoded images of one size bound for the network's input on the device, each a ``DeviceImage`` or a
    host array (decoded by the CPU): ``fill`` copies them into a device buffer, ``host()`` stacks them on the
    host (where the network cannot take them on the device), ``release()`` gives the device images back to
    their codec once neither is needed."""

    def __init__(self, items: list):
        self.items = items
        self.shape = (len(items), *items[0].shape)

    def fill(self, stream, pointer: int) -> None:
        """Copy the images, one after the other, into the device buffer at ``pointer`` on ``stream`` (a
        ``cuda_runtime.Stream``), and wait for the copies."""
        _, h, w, _ = self.shape
        size = h * w * 3
        hosts = []  # kept alive until the copies are done
        for i, item in enumerate(self.items):
            if isinstance(item, DeviceImage):
                source, pitch = item.pointer, item.pitch
            else:
                hosts.append(np.ascontiguousarray(item))
                source, pitch = hosts[-1].ctypes.data, w * 3
            stream.copy_rows(pointer + i * size, w * 3, source, pitch, w * 3, h)
        stream.wait()

    def host(self) -> np.ndarray:
        """The batch as one host array ``[N, H, W, 3]``."""
        return np.stack([on_host(item) for item in self.items])

    def release(self) -> None:
        for item in self.items:
            if isinstance(item, DeviceImage):
                item.give_back()


def on_host(picture) -> np.ndarray:
    """A picture or image as a host array: a device one (``DeviceImage``, or anything with ``host()``)
    copied back."""
    if isinstance(picture, np.ndarray):
        return picture
    if isinstance(picture, DeviceImage):
        return _host_rgb(picture.image)  # type: ignore[return-value]
    return picture.host()


def _encodable(picture):
    """What nvImageCodec's encoder takes for a picture: a device picture as it is (it has a
    ``__cuda_array_interface__``), a host one contiguous."""
    return picture if hasattr(picture, "__cuda_array_interface__") else np.ascontiguousarray(picture)


class CpuCodec:
    """The codec interface on the CPU codecs alone (where the GPU codec could not start): ``read_images``
    decodes with ``image_io``, ``jpeg_data`` leaves encoding to ``write_file``."""

    on_gpu = False

    def read_images(self, paths: Sequence[str | os.PathLike], on_device: bool = False) -> list:
        return [read_on_cpu(path) for path in paths]

    def jpeg_data(self, pictures: Sequence[np.ndarray], paths: Sequence[str | os.PathLike]) -> dict[int, bytes]:
        return {}


def may_start() -> bool:
    """Whether ``GpuCodec()`` may start on a GPU here: nvImageCodec is installed and the driver reports a GPU
    (checked without importing nvImageCodec, whose start takes about a second)."""
    return _installed() and _gpu_visible()


def for_run(mode: str):
    """The codec a run on the device path gets, as ``image_codec`` ``mode`` says: where nvImageCodec may start
    on a GPU, the function that starts it in the background (``start_in_background``: the device executor
    calls it once its first batch has run); else ``GpuCodec()`` (the CPU codecs, and one line saying why) when
    the GPU codec was asked for (``gpu``); else None (``auto``: the run stays off the device path)."""
    if may_start():
        return start_in_background
    return GpuCodec() if mode == "gpu" else None


def start_in_background():
    """A Future of ``GpuCodec()``, made by a thread of its own, so that a run need not wait for it (about a
    second on the GPU machine: its decoder and encoder). The module is imported here first, in the calling
    thread: its import is what prints (``_imported``), and the capture of file descriptor 2 that hides it
    would hide every other thread's writes to stderr while it lasts."""
    import threading
    from concurrent.futures import Future

    with contextlib.suppress(Exception):  # a broken install: GpuCodec() says why, in the thread
        _imported()
    started: Future = Future()

    def make():
        try:
            started.set_result(GpuCodec(capture_stderr=False))
        except BaseException as exc:  # noqa: BLE001  (handed to whoever waits on it)
            started.set_exception(exc)

    threading.Thread(target=make, name="segnet-codec-start", daemon=True).start()
    return started


def write_file(picture: np.ndarray, path: str | os.PathLike, data: bytes | None) -> SegnetError | None:
    """``picture`` written to ``path`` atomically: as the encoded ``data`` when given (a JPEG from the GPU),
    else by ``image_io.write_image``; None, or the file's one-line error."""
    try:
        if data is None:
            write_image(picture, Path(path))
        else:
            image_format(Path(path))  # the same refusal as write_image's, should Pillow lack JPEG
            atomic_write(Path(path), data)
    except SegnetError as exc:
        return exc
    return None


def read_on_cpu(path) -> np.ndarray | SegnetError:
    """``image_io.read_image(path)``, or the one-line ``SegnetError`` it raises, returned (the GPU codec's
    stand-in for one file)."""
    try:
        return read_image(path)
    except SegnetError as exc:
        return exc


def _cpu_jpeg(picture: np.ndarray) -> bytes:
    import io

    from PIL import Image

    encoded = io.BytesIO()
    Image.fromarray(picture).save(encoded, format="JPEG", quality=JPEG_QUALITY)
    return encoded.getvalue()


def _host_rgb(image) -> np.ndarray | None:
    """A decoded nvImageCodec image as a contiguous uint8 ``[H, W, 3]`` host array, or None (refused)."""
    if image is None:
        return None
    try:
        array = np.asarray(image.cpu())
    except Exception:
        return None
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        return None
    return np.ascontiguousarray(array)


def _imported():
    """nvImageCodec's module. Its import prints a line for each codec library it does not find (nvJPEG2000,
    nvTIFF) straight to file descriptor 2: those lines become debug records (``_stderr_to_log``)."""
    import importlib
    import sys

    if "nvidia.nvimgcodec" in sys.modules:
        return sys.modules["nvidia.nvimgcodec"]
    with _stderr_to_log():
        return importlib.import_module("nvidia.nvimgcodec")


def _installed() -> bool:
    """Whether nvImageCodec can be imported (found without importing it: its import prints)."""
    import importlib.util

    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except (ImportError, ValueError):  # no ``nvidia`` namespace package, or a broken module entry
        return False


def _gpu_visible() -> bool:
    return cuda_device_visible()


@contextlib.contextmanager
def _stderr_to_log():
    """Native writes to file descriptor 2 while the block runs become debug records (nvImageCodec's C++
    extensions print straight to it; the library speaks only through logging)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("nvImageCodec: %s", line.strip())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
