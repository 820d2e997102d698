"""onnxruntime backend: CPU everywhere, the CUDA execution provider where onnxruntime-gpu sees a GPU. With
``precision="fp16"`` it runs the checked FP16 copy of the model (``fp16.py``), with ``precision="int8"`` its
calibrated INT8 copy (``int8.py``), instead of the model itself.

On the CUDA provider the segmenter fuses pre-processing and the class map into the graph (``fuse``,
``backends/fused.py``) and ``infer_images`` runs it: the uint8 images are copied into device buffers bound
to the session (I/O binding), the stretch indices stay on the device, and each batch shape's run is
captured once as a CUDA graph and then replayed. ``CudaSettings()`` holds the settings measured best on the
GPU machine (BENCHMARKS.md, issue 16); a caller measuring others passes its own (``cuda=``).

``fuse(spec, draw)`` also puts the drawing into the graph: ``infer_pictures(images, colors, draw)`` is then
the device twin of ``drawing.draw`` for a batch (issue 20), and only the pictures and class maps come back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..drawing import DrawSpec, picture_shape
from ..errors import SegnetError, option
from .base import TensorInfo, check_contract, onnx_io
from .fused import CLASS_MAP, COLORS, COLS, IMAGE, PICTURE, ROWS, FusedSpec, draw_inputs, fused_model
from .fused import indices as fused_indices

log = logging.getLogger(__name__)

#: The CUDA provider's settings (onnxruntime's names). cuDNN tries every convolution algorithm once per
#: shape (EXHAUSTIVE) with the largest workspace, and may run convolutions channels-last (prefer_nhwc).
CUDA_PROVIDER_OPTIONS: dict[str, str] = {
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "cudnn_conv_use_max_workspace": "1",
    "prefer_nhwc": "1",
}


@dataclass(frozen=True)
class CudaSettings:
    """How the CUDA provider runs: its provider options; whether fused runs are captured as a CUDA graph
    per batch shape and then replayed (through bound buffers); whether bound device buffers are used
    without graphs (measured no faster than ``session.run`` with host arrays)."""

    provider_options: tuple[tuple[str, str], ...] = tuple(CUDA_PROVIDER_OPTIONS.items())
    graphs: bool = True
    io_binding: bool = False
    warm_up: bool = True  # run a full batch while loading (the segmenter), so the search and capture happen then


def quick_start_settings() -> CudaSettings:
    """For work too small to pay for the exhaustive search (about a second per shape on the GPU machine) and the
    graph capture: cuDNN's heuristic choice, no graphs, no warm-up run."""
    options = {**CUDA_PROVIDER_OPTIONS, "cudnn_conv_algo_search": "HEURISTIC"}
    return CudaSettings(tuple(options.items()), graphs=False, warm_up=False)
#: Batch shapes (images, height, width) that keep bound device buffers (and a CUDA graph); others run plain.
MAX_BOUND_SHAPES = 8


class OnnxRuntimeBackend:
    """Runs an ONNX model with onnxruntime; ``infer`` maps ``[N,3,H,W]`` to ``[N,C,gh,gw]`` scores."""

    can_fuse = True

    def __init__(self, model_path: str | Path, input_blob: str | None = None, output_blob: str | None = None,
                 providers: list[str] | None = None, batch_size: int = 1, threads: int = 0, precision: str = "fp32",
                 cache: str | Path | None = None, cuda: CudaSettings | None = None, device: str = "auto",
                 few: int | None = None):
        self.model_path = Path(model_path)
        self.cuda_settings = cuda or CudaSettings()
        self.precision = precision  # "fp16": the checked FP16 copy, made in ``cache`` (see cache_dir.cache_dir)
        self.cache = cache
        self.input_blob = input_blob
        self.output_blob = output_blob
        self.providers = providers
        self.device = device  # auto, cuda or cpu: which providers, when ``providers`` is None
        self.few = few  # a run of so few images that CUDA's start costs more than its work (``device`` auto)
        self.batch_size = batch_size
        self.threads = threads  # onnxruntime's intra-op threads; 0: one per core
        self.session: Any = None

    def __enter__(self) -> OnnxRuntimeBackend:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegnetError("onnxruntime is not installed: pip install onnxruntime "
                              "(or onnxruntime-gpu for NVIDIA GPUs)") from None
        self._ort = ort
        self.fused: FusedSpec | None = None
        self.draws: str | None = None  # the kind of picture the fused graph draws (None: none)
        self._draw_feed: tuple[tuple[int, int], dict[str, np.ndarray]] | None = None  # (H, W), the last inputs
        self._samples: dict[tuple, dict[str, np.ndarray]] = {}
        self._graphs = self._cuda = False
        self._bound: dict[tuple[int, ...], _Bound] = {}
        self._indices: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._stream: Any = None  # the device-resident path's CUDA stream (cuda_runtime.Stream), on first use
        self._pictures: _PicturePool | None = None
        self._no_runtime = False  # the CUDA runtime library was looked for and is not usable
        self._providers, why_cpu = self._choose_providers(ort)
        try:
            path = self._fp16_copy() if self.precision == "fp16" else \
                self._int8_copy() if self.precision == "int8" else self.model_path
            model: str | bytes = str(path)
            if self.batch_size > 1:  # the named (or only) input and output get a symbolic batch axis
                model = self._derived(path, "batch", f"{self.input_blob}|{self.output_blob}",
                                      lambda: dynamic_batch(path, *self._contract_names()))
            self.session = self._session(model)
            self._cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
            self._check()
        except SegnetError:
            raise
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SegnetError(f"cannot load model {self.model_path}: {_first_line(exc)}") from None
        self._source = path  # what fuse() wraps: the model, or its FP16 copy
        note = {"fp16": ", FP16 model", "int8": ", INT8 model"}.get(self.precision, "")
        self.description = f"onnxruntime ({self.session.get_providers()[0]}{note}{why_cpu})"
        return self

    def _contract_names(self) -> tuple[str, str]:
        """The names of the model's network input and output, read with onnx (an import of about a second:
        only when a derived model is made, never on a start that finds it cached)."""
        inp, out = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob, self.output_blob)
        return inp.name, out.name

    def _fp16_copy(self) -> Path:
        from ..util import file_sha256
        from . import fp16
        from .cache_dir import cache_dir

        folder, sha = cache_dir(self.model_path, self.cache), file_sha256(self.model_path)
        cached = fp16.fp16_model_path(self.model_path, folder, sha)
        if cached.is_file():  # written whole or not at all (atomic_write)
            return cached
        inp, out = self._contract_names()
        providers = list(self._providers)
        return fp16.fp16_model(self.model_path, folder, sha, input_blob=inp, output_blob=out, providers=providers)

    def _int8_copy(self) -> Path:
        from ..util import file_sha256
        from . import int8
        from .cache_dir import cache_dir

        folder, sha = cache_dir(self.model_path, self.cache), file_sha256(self.model_path)
        cached = int8.int8_model_path(self.model_path, folder, sha)
        if cached.is_file() and int8.record_path(cached).is_file():  # the record is written last
            return cached
        inp, _ = check_contract(self.model_path, *onnx_io(self.model_path), self.input_blob, self.output_blob)
        return int8.int8_model(self.model_path, folder, int8.preparer(self.model_path, inp.shape),
                               input_blob=inp.name, model_sha256=sha).path

    def _derived(self, source: Path, kind: str, key: str, make) -> str | bytes:
        """``make()``'s model, derived from ``source``, kept in the cache folder (``cache_dir.derived_model``)
        or, where there is no usable cache folder, made in memory."""
        from .cache_dir import cache_dir, derived_model, file_identity

        try:
            folder = cache_dir(self.model_path, self.cache)
        except SegnetError:
            return make()
        return derived_model(folder, f"{self.model_path.stem}.{kind}", f"{file_identity(source)}|{key}", make)

    def _session(self, model: str | bytes, graphs: bool = False):
        ort = self._ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would break our one-line output
        options.intra_op_num_threads = self.threads
        providers: list = list(self._providers)
        if "CUDAExecutionProvider" in providers:
            cuda = dict(self.cuda_settings.provider_options, **({"enable_cuda_graph": "1"} if graphs else {}))
            providers[providers.index("CUDAExecutionProvider")] = ("CUDAExecutionProvider", cuda)
        return ort.InferenceSession(model, options, providers=providers)

    def _choose_providers(self, ort) -> tuple[list[str], str]:
        """The providers the sessions use, and why a run that could use CUDA does not (for the description):
        those given; else CUDA where onnxruntime-gpu sees a GPU (``device`` cuda: or a one-line error), except for
        ``device`` cpu and for a run of ``few`` images, whose work costs less on the CPU than CUDA's start."""
        if self.providers:
            return list(self.providers), ""
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if self.device == "cuda" and not (cuda and _cuda_device_visible()):
            missing = "sees no CUDA GPU here" if cuda else "has no CUDA provider here (pip install onnxruntime-gpu)"
            raise SegnetError(f"{option('device', 'cuda')}: onnxruntime {missing}; use {option('device', 'auto')} "
                              "to run where it can")
        if self.device == "cpu" or not cuda or not _cuda_device_visible():
            return ["CPUExecutionProvider"], ""
        if self.device == "auto" and self.few is not None:
            images = "1 image finishes" if self.few == 1 else f"{self.few} images finish"
            return ["CPUExecutionProvider"], (f"; {images} sooner here than CUDA starts: "
                                              f"{option('device', 'cuda')} for the GPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], ""

    @property
    def on_cuda(self) -> bool:
        return self.session is not None and self._cuda

    def _check(self) -> None:
        inputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_inputs()]
        outputs = [TensorInfo(t.name, _dims(t.shape)) for t in self.session.get_outputs()]
        self.input, self.output = check_contract(self.model_path, inputs, outputs,
                                                 self.input_blob, self.output_blob)

    def __exit__(self, *exc) -> None:
        self._bound = {}
        self._pictures = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.session = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            (scores,) = self.session.run([self.output.name], {self.input.name: batch})
        except Exception as exc:  # onnxruntime's own exception types: shapes the model refuses, kernels that fail
            raise SegnetError(f"model {self.model_path} cannot run on an input of shape {list(batch.shape)}: "
                              f"{_first_line(exc)}") from None
        return scores

    def fuse(self, spec: FusedSpec, draw: DrawSpec | None = None) -> None:
        """Run the network with the pre-processing and class map of ``spec`` around it from now on
        (``infer_images``), and with ``draw`` the drawing of ``draw.kind`` too (``infer_pictures``); the
        plain session is replaced."""
        if draw is not None and None in self.output.shape[2:]:
            raise SegnetError(f"cannot draw inside the graph of {self.model_path}: its output grid size is "
                              "symbolic; draw on the CPU (drawing.draw)")

        def make() -> bytes:
            import onnx

            return fused_model(onnx.load(str(self._source)), self.input.name, self.output.name, spec,
                               draw).SerializeToString()

        try:
            # the graph depends on the source, the names, the spec, the kind of picture and fused.py's code
            key = (f"{self.input.name}|{self.output.name}|{spec}|{None if draw is None else draw.kind}|"
                   f"{_fused_code()}")
            serialized = self._derived(self._source, "fused", key, make)
            graphs = self.cuda_settings.graphs and self.on_cuda
            try:
                session = self._session(serialized, graphs)
            except Exception:
                if not graphs:
                    raise
                graphs = False  # a graph onnxruntime cannot capture whole: run it without
                session = self._session(serialized)
            self.session, self._fused_model = session, serialized
        except SegnetError:
            raise
        except Exception as exc:
            raise SegnetError(f"cannot load model {self.model_path} with pre-processing fused: "
                              f"{_first_line(exc)}") from None
        self.fused, self._graphs = spec, graphs
        self.draws = None if draw is None else draw.kind
        self._bound, self._draw_feed, self._samples = {}, None, {}
        if self.on_cuda and self.cuda_settings.warm_up:
            # cuDNN chooses its convolution algorithms, and the CUDA graph is captured, on the first run of a
            # shape: do that while loading, for a full batch of images of the network's size
            self.infer_images(np.zeros((self.batch_size, spec.height, spec.width, 3), np.uint8))

    def infer_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``images`` uint8 ``[N, H, W, 3]`` RGB -> (class maps uint8 ``[N, gh, gw]``, scores float32
        ``[N, C, gh, gw]``), through the fused graph (``fuse`` first). A graph that draws draws too (with
        the colours and samples last given, else black ones), and the picture is dropped."""
        if self.fused is None:
            raise SegnetError("infer_images needs the fused graph: call fuse first")
        if self.draws is None:
            return self._infer(images)[:2]
        if self._draw_feed is not None and self._draw_feed[0] == images.shape[1:3]:
            return self._infer(images, self._draw_feed[1])[:2]
        colors = np.zeros((self.fused.num_classes, 4), np.float32)
        return self.infer_pictures(images, colors, DrawSpec.of_kind(self.draws))[1:]

    def infer_pictures(self, images: np.ndarray, colors: np.ndarray,
                       draw: DrawSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``images`` uint8 ``[N, H, W, 3]`` RGB -> (pictures uint8 ``[N, *drawing.picture_shape]``, class maps,
        scores): ``[drawing.draw(image, class_map, colors, draw) for ...]`` computed where the network runs.
        Needs ``fuse(spec, draw)`` with a ``draw`` of the same kind; its filter and region may differ."""
        if self.fused is None or self.draws is None:
            raise SegnetError("infer_pictures needs a fused graph that draws: call fuse(spec, draw) first")
        if draw.kind != self.draws:
            raise SegnetError(f"the fused graph draws {self.draws} pictures, not {draw.kind}: "
                              "call fuse(spec, draw) again")
        feed = self._picture_feed(images.shape[1], images.shape[2], colors, draw)
        class_map, scores, picture = self._infer(images, feed)
        return picture, class_map, scores

    def infer_pictures_on_device(self, images, colors: np.ndarray, draw: DrawSpec) -> DevicePictures | None:
        """``infer_pictures`` for a batch whose pixels stay on the device (issue 20): ``images`` has a
        ``shape`` ``[N, H, W, 3]`` and ``fill(stream, pointer)``, which copies its images into the bound input
        buffer (``gpu_codec.DeviceBatch``); the pictures stay on the device too (``DevicePictures``), and no
        class map or scores come back. None where this batch cannot run so (the CPU provider, a graph that
        does not draw, no bound buffers for its shape, no CUDA runtime library): the caller runs its host copy
        through ``infer_pictures``."""
        if self.fused is None or self.draws is None or draw.kind != self.draws or not self._resident_ready():
            return None
        assert self._pictures is not None  # made by _resident_ready
        n, h, w = images.shape[:3]
        feed = self._picture_feed(h, w, colors, draw)
        bound = self._bound_for((n, h, w, 3), feed)
        if bound is None or bound.picture is None:
            return None
        try:
            bound.run_resident(images, self._stream, feed)
        except SegnetError:
            raise
        except Exception as exc:  # onnxruntime's own types: the batch goes through the host
            if self._graphs:
                self._without_graphs(exc)  # and the host path from now on (no bound buffers without graphs)
            else:
                log.debug("the device-resident run failed, the batch goes through the host: %s", _first_line(exc))
            return None
        return self._pictures.copy_of(bound.picture, self._stream)

    def _resident_ready(self) -> bool:
        """Whether batches can stay on the device: bound buffers on CUDA and the CUDA runtime library (its
        stream and the picture buffers made on first use)."""
        if not ((self._graphs or self.cuda_settings.io_binding) and self.on_cuda and None not in self.output.shape[1:]):
            return False
        if self._stream is None:
            from .. import cuda_runtime

            if self._no_runtime or not cuda_runtime.available():
                self._no_runtime = True
                return False
            try:
                self._stream = cuda_runtime.Stream()
            except SegnetError as exc:
                log.debug("the pixels go through the host: %s", exc)
                self._no_runtime = True
                return False
            self._pictures = _PicturePool(self._ort)
        return True

    def _picture_feed(self, h: int, w: int, colors: np.ndarray, draw: DrawSpec) -> dict[str, np.ndarray]:
        """The drawing inputs for ``h x w`` images (the samples cached per size, filter and region; the
        colours as given), remembered as what ``infer_images`` feeds from now on."""
        gh, gw = (int(d or 0) for d in self.output.shape[2:])  # fixed: fuse refuses to draw otherwise
        key = (h, w, draw.filter_mode, draw.region)
        samples = self._samples.get(key)
        if samples is None:
            if len(self._samples) >= MAX_BOUND_SHAPES:
                self._samples.clear()
            samples = self._samples[key] = draw_inputs(h, w, gh, gw, draw)
        feed = dict(samples)
        if draw.kind != "classes":
            feed[COLORS] = np.ascontiguousarray(colors, np.float32)
        self._draw_feed = (h, w), feed  # what infer_images feeds from now on
        return feed

    def _bound_for(self, shape: tuple[int, ...], draw_feed: dict[str, np.ndarray] | None) -> _Bound | None:
        """The bound buffers of batches of ``shape`` (made on first use, up to ``MAX_BOUND_SHAPES``)."""
        n, h, w = shape[:3]
        if (h, w) not in self._indices:
            assert self.fused is not None  # the callers' check
            self._indices[(h, w)] = fused_indices(h, w, self.fused)
        bound = self._bound.get((n, h, w))
        if bound is None and len(self._bound) < MAX_BOUND_SHAPES:
            rows, cols = self._indices[(h, w)]
            bound = self._bound[(n, h, w)] = _Bound(self, shape, rows, cols, len(self._bound), draw_feed)
        return bound

    def _without_graphs(self, exc: Exception) -> None:
        """A graph capture failed: the same graph from now on, run plainly."""
        log.debug("running without CUDA graphs: %s", _first_line(exc))
        self._graphs, self._bound = False, {}
        self.session = self._session(self._fused_model)

    def _infer(self, images: np.ndarray, draw_feed: dict[str, np.ndarray] | None = None) -> tuple:
        """(class maps, scores, and with ``draw_feed`` the pictures) through the fused graph."""
        if self.fused is None:
            raise SegnetError("infer_images needs the fused graph: call fuse first")
        h, w = images.shape[1:3]
        if (self._graphs or self.cuda_settings.io_binding) and self.on_cuda and None not in self.output.shape[1:]:
            bound = self._bound_for(images.shape, draw_feed)
            if bound is not None:
                try:
                    return bound.run(images, draw_feed)
                except Exception as exc:  # onnxruntime's own types
                    if not self._graphs:
                        raise
                    self._without_graphs(exc)
                    return self._infer(images, draw_feed)
        if (h, w) not in self._indices:
            self._indices[(h, w)] = fused_indices(h, w, self.fused)
        rows, cols = self._indices[(h, w)]
        run_options = None
        if self._graphs:  # a shape without bound buffers: no capture, no replay
            run_options = self._ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", "-1")
        outputs = [CLASS_MAP, self.output.name, *([PICTURE] if draw_feed is not None else [])]
        return tuple(self.session.run(outputs, {IMAGE: images, ROWS: rows, COLS: cols, **(draw_feed or {})},
                                      run_options))


class _Bound:
    """Device buffers for one batch shape, bound to the session once: the image buffer is refilled from
    the host per call, the stretch indices stay, and the outputs are copied back. With CUDA graphs, the
    first runs capture the graph and later ones replay it (the buffers never move). A graph that draws gets
    device buffers for its drawing inputs too, refilled only when they change, and its picture comes back."""

    def __init__(self, backend: OnnxRuntimeBackend, shape: tuple[int, ...], rows: np.ndarray, cols: np.ndarray,
                 graph_id: int, draw_feed: dict[str, np.ndarray] | None = None):
        ort = backend._ort
        value = ort.OrtValue
        n = shape[0]
        _, c, gh, gw = backend.output.shape
        self.image = value.ortvalue_from_shape_and_type(list(shape), np.uint8, "cuda", 0)
        self.rows = value.ortvalue_from_numpy(rows, "cuda", 0)
        self.cols = value.ortvalue_from_numpy(cols, "cuda", 0)
        self.class_map = value.ortvalue_from_shape_and_type([n, gh, gw], np.uint8, "cuda", 0)
        self.scores = value.ortvalue_from_shape_and_type([n, c, gh, gw], np.float32, "cuda", 0)
        self.binding = backend.session.io_binding()
        self.binding.bind_ortvalue_input(IMAGE, self.image)
        self.binding.bind_ortvalue_input(ROWS, self.rows)
        self.binding.bind_ortvalue_input(COLS, self.cols)
        self.binding.bind_ortvalue_output(CLASS_MAP, self.class_map)
        self.binding.bind_ortvalue_output(backend.output.name, self.scores)
        self.drawing: dict[str, Any] = {}
        self.fed: dict[str, np.ndarray] = {}
        self.picture = None
        # the sample arrays last given, by identity: they come from the backend's own cache, the same objects
        # batch after batch, and comparing them with what was fed cost the network's thread about 3 ms a batch
        # (the colours are compared each time: a caller may change its array in place)
        self.given: dict[str, np.ndarray] = {}
        if draw_feed is not None:
            for name, array in draw_feed.items():  # buffers of their own: refilling never touches the caller's
                self.drawing[name] = value.ortvalue_from_shape_and_type(list(array.shape), array.dtype, "cuda", 0)
                self.drawing[name].update_inplace(np.ascontiguousarray(array))
                self.binding.bind_ortvalue_input(name, self.drawing[name])
            self.fed = {name: array.copy() for name, array in draw_feed.items()}  # copies: callers may reuse theirs
            picture = picture_shape(shape[1], shape[2], DrawSpec.of_kind(str(backend.draws)))
            self.picture = value.ortvalue_from_shape_and_type([n, *picture], np.uint8, "cuda", 0)
            self.binding.bind_ortvalue_output(PICTURE, self.picture)
        self.session = backend.session
        self.run_options = ort.RunOptions()
        if backend._graphs:
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))

    def run(self, images: np.ndarray, draw_feed: dict[str, np.ndarray] | None = None) -> tuple:
        self.image.update_inplace(np.ascontiguousarray(images))
        self._feed_drawing(draw_feed)
        self.session.run_with_iobinding(self.binding, self.run_options)
        pictures = () if self.picture is None else (self.picture.numpy(),)
        return (self.class_map.numpy(), self.scores.numpy(), *pictures)

    def run_resident(self, images, stream, draw_feed: dict[str, np.ndarray] | None = None) -> None:
        """The run with ``images`` copied into the image buffer on the device (``images.fill``); the outputs
        stay in their buffers."""
        images.fill(stream, self.image.data_ptr())
        self._feed_drawing(draw_feed)
        self.session.run_with_iobinding(self.binding, self.run_options)

    def _feed_drawing(self, draw_feed: dict[str, np.ndarray] | None) -> None:
        for name, array in (draw_feed or {}).items():  # new colours, filter or region: same shapes, same buffers
            if (name == COLORS or array is not self.given.get(name)) and not np.array_equal(self.fed[name], array):
                self.drawing[name].update_inplace(np.ascontiguousarray(array))
                self.fed[name] = array.copy()
            self.given[name] = array


class _PicturePool:
    """Device buffers that hold a batch's pictures after its run (``DevicePictures``), so that the next batch
    may run while these are encoded; a buffer given back is used again for a batch of its shape."""

    def __init__(self, ort):
        self._ort = ort
        self._lock = threading.Lock()
        self._free: dict[tuple[int, ...], list] = {}

    def copy_of(self, picture, stream) -> DevicePictures:
        """A buffer of the pool holding a copy of the device OrtValue ``picture``."""
        shape = tuple(picture.shape())
        with self._lock:
            free = self._free.setdefault(shape, [])
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.uint8, "cuda", 0)
        stream.copy(buffer.data_ptr(), picture.data_ptr(), int(np.prod(shape)))
        stream.wait()
        return DevicePictures(self, buffer, shape)

    def give_back(self, buffer, shape: tuple[int, ...]) -> None:
        with self._lock:
            self._free.setdefault(shape, []).append(buffer)


class DevicePictures:
    """A batch's uint8 pictures ``[N, ...]`` in device memory: ``views()`` gives one ``DevicePicture`` each
    (what nvImageCodec's encoder takes), and ``release()`` gives the buffer back to its pool once nothing reads
    them any more."""

    def __init__(self, pool: _PicturePool, buffer, shape: tuple[int, ...]):
        self._pool, self._buffer, self.shape = pool, buffer, shape
        self.pointer = buffer.data_ptr()

    def views(self) -> list[DevicePicture]:
        return [DevicePicture(self, i) for i in range(self.shape[0])]

    def release(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            self._pool.give_back(buffer, self.shape)


class DevicePicture:
    """One picture of a ``DevicePictures`` batch: its ``__cuda_array_interface__``, or ``host()`` for a copy
    on the host (a picture the GPU's encoder does not write)."""

    def __init__(self, batch: DevicePictures, index: int):
        self.batch, self.shape = batch, batch.shape[1:]
        self.pointer = batch.pointer + index * int(np.prod(self.shape))

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": "|u1", "data": (self.pointer, False), "version": 3,
                "strides": None, "stream": None}

    def host(self) -> np.ndarray:
        from .. import cuda_runtime

        array = np.empty(self.shape, np.uint8)
        stream = cuda_runtime.Stream()
        try:
            stream.copy(array.ctypes.data, self.pointer, array.nbytes)
            stream.wait()
        finally:
            stream.close()
        return array


def dynamic_batch(path: Path, input_blob: str, output_blob: str) -> bytes:
    """The model with a symbolic batch axis on the named input and output, serialised, so one call can
    run several images (the FCN networks are fully convolutional; jetson exports fix the batch at 1).
    Intermediate shapes recorded in the graph are dropped: onnxruntime infers them again."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name in (input_blob, output_blob) and len(dims) == 4:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model.SerializeToString()


def _fused_code() -> str:
    """A hash of the code that builds fused graphs: a change to it is a change to every fused graph."""
    import hashlib

    from . import fused

    return hashlib.sha256(Path(fused.__file__).read_bytes()).hexdigest()[:16]


def _cuda_device_visible() -> bool:
    from ..util import cuda_device_visible

    return cuda_device_visible()


def _first_line(exc: BaseException) -> str:
    """onnxruntime's message without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix, one line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.rsplit(" : ", 1)[-1] if line.startswith("[ONNXRuntimeError]") else line


def _dims(shape) -> tuple[int | None, ...]:
    """Fixed sizes as ints (0 too: the contract check refuses it), symbolic ones as None."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
