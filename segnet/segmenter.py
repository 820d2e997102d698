"""The library API: ``Segmenter(network)(image) -> Segmentation``. The CLI is a thin shell over this."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import classmap, colorize, drawing, model_format
from . import labels as label_files
from .backends import open_backend
from .backends.base import format_shape
from .drawing import DrawSpec, draw
from .errors import SegnetError, UsageError, option
from .image_io import read_image
from .model_format import input_layout as input_layout_of
from .model_format import output_layout as output_layout_of
from .model_format import spatial, symbolic_size, to_chw, with_background
from .options import Options, check_input_pixels, max_input_pixels
from .options import visualize as check_visualize
from .preprocess import prepare as prepare_input
from .zoo.resolve import locate

if TYPE_CHECKING:
    from .backends.fused import FusedSpec

log = logging.getLogger(__name__)

#: jetson's default ``--ignore-class``: a no-op for networks without a class of that name
IGNORED_BY_DEFAULT = "void"


@dataclass
class Segmentation:
    """One image's result: the coarse class map (what users keep asking jetson for), the raw scores,
    and renderers for the pictures."""

    image: np.ndarray  # uint8 [H, W, 3] RGB input
    scores: np.ndarray  # float32 [C, gh, gw] raw per-class scores (logits) on the grid
    class_map: np.ndarray  # uint8 [gh, gw] best class per grid cell
    class_names: list[str]
    colors: np.ndarray = field(repr=False)  # float32 [C, 4] RGBA after the alpha rules
    filter_mode: str = "linear"
    region: tuple[float, float, float, float] | None = None  # letterbox: the grid part the image covers

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(width, height)`` of the class grid."""
        return self.class_map.shape[1], self.class_map.shape[0]

    def histogram(self) -> np.ndarray:
        """Grid cells per class."""
        return classmap.histogram(self.class_map, len(self.class_names))

    def mask(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """uint8 ``[height, width, 3]`` class colours, by default at the image's size."""
        h, w = self.image.shape[:2]
        return colorize.mask(self.class_map, self.colors, width or w, height or h, self.filter_mode, self.region)

    def overlay(self) -> np.ndarray:
        return colorize.overlay(self.image, self.class_map, self.colors, self.filter_mode, self.region)

    def composite(self) -> np.ndarray:
        return colorize.composite(self.image, self.class_map, self.colors, self.filter_mode, self.region)

    def classes(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """uint8 ``[height, width]``: the class index of every pixel, by default at the image's size, the grid
        point-sampled exactly as the point filter samples colours (jetson's ``Mask()`` into a gray8 image)."""
        h, w = self.image.shape[:2]
        return drawing.draw_classes(self.class_map, len(self.colors), width or w, height or h, self.region)

    def render(self, visualize: str | tuple[str, ...] = "overlay") -> np.ndarray:
        """The picture segnet-console writes for ``visualize``: overlay, mask, both (``[H, W, 3]``), or the
        class indices (``classes``: ``[H, W]``), drawn by ``drawing.draw``."""
        spec = drawing.DrawSpec(check_visualize("visualize", visualize), self.filter_mode, self.region)
        return drawing.draw(self.image, self.class_map, self.colors, spec)

    def stats(self) -> str:
        """The ``--stats`` table (SPEC 4.6)."""
        counts = self.histogram()
        total = max(int(counts.sum()), 1)
        w, h = self.grid_size
        lines = [f"grid size: {w}x{h}", f"num classes: {len(self.class_names)}",
                 f"{'ID':>3}  {'class name':<20} {'count':>7}  fraction"]
        for c, (name, n) in enumerate(zip(self.class_names, counts)):
            lines.append(f"{c:>3}  {name:<20} {int(n):>7}  {n / total:.6f}")
        return "\n".join(lines)


@dataclass
class Prepared:
    """An image made ready for the network: the RGB pixels, the network input, and the part of the input
    the image covers (letterbox; None: all of it)."""

    rgb: np.ndarray
    tensor: np.ndarray
    region: tuple[float, float, float, float] | None = None


def fused_graphs(options: Options) -> list[tuple[FusedSpec, str | None]]:
    """The fused graphs a run with ``options`` asks of a backend on a GPU, as ``(spec, kind of picture drawn or
    None)``: pre-processing and class map (a library call, a short run, a video), then with the picture of
    ``options.visualize`` where the graph can draw it (a run of many image files). None where ``options.fuse``
    is off or the model's format keeps its pre-processing on the CPU. ``segnet-build-engine`` builds their
    TensorRT engines ahead of time; the model is read with onnxruntime on the CPU."""
    if options.fuse == "off":
        return []
    probe = Options.create(options, backend="onnxruntime", precision="fp32", fuse="off", batch_size=1)
    with Segmenter(options=probe) as segmenter:
        if segmenter._cannot_fuse() is not None:
            return []
        spec = segmenter.fused_spec()
        kind = DrawSpec.of_options(options).kind
        return [(spec, None), *([(spec, kind)] if segmenter._draws_in_graph() else [])]


class Segmenter:
    """A loaded network. ``Segmenter()`` is the default network; ``Segmenter("fcn-resnet18-voc")`` a
    pretrained one; ``Segmenter(model="net.onnx", labels=..., colors=...)`` a custom one.

    Options are those of ``segnet.Options`` (the command line's flags, with ``_`` for ``-``), given as an
    ``Options`` object, as keyword arguments, or both (the keywords win): ``backend``, ``precision``,
    ``batch_size``, ``alpha``, ``filter_mode``, ``ignore_class``, ``input_size``, ``mean``, ``scores``...
    A ``segnet.json`` beside the model can hold the model-format settings, and ``labels``/``colors`` lists.

    Call it on an image (path, PIL image or uint8 RGB array ``[H, W, 3]``) to get a ``Segmentation``.
    Use it as a context manager (or call ``close()``) to free the backend.
    """

    def __init__(self, network: str | None = None, options: Options | None = None, *,
                 expected_images: int | None = None, drawing: DrawSpec | None = None, **given: Any):
        if network is not None:
            given["network"] = network
        self.options = options = Options.create(options, **given)
        self.batch_size = options.batch_size
        self.alpha = options.alpha
        self.filter_mode = options.filter_mode
        self.backend: Any = None
        self.fused = False  # pre-processing and the class map inside the network's graph (``fuse``)
        self.drawing = drawing  # the pictures the caller will want (``draw_batch``)
        self.draws_on_device = False  # ``drawing`` is drawn inside the fused graph too
        self.files = locate(options)
        sidecar = model_format.read_sidecar(options.model if options.model is not None else self.files.model)
        self.format = model_format.resolve(options, sidecar)
        raw_names = label_files.read_class_names(self.files.labels) if self.files.labels else sidecar.get("labels")
        raw_colors = label_files.read_class_colors(self.files.colors) if self.files.colors else sidecar.get("colors")
        input_blob = options.input_blob or sidecar.get("input_blob")
        output_blob = options.output_blob or sidecar.get("output_blob")
        # a known small amount of work: start fast rather than tune for a long run (issue 20)
        self.backend = open_backend(self.files.model, options, input_blob, output_blob, expected_images)
        self.backend.__enter__()
        try:
            shape = self.backend.input.shape
            self.input_layout = input_layout_of(shape, self.format.input_layout, self._describe)
            h, w = spatial(shape, self.input_layout)
            fixed = (w, h) if w is not None and h is not None else None
            if fixed and self.format.input_size and self.format.input_size != fixed:
                size = "x".join(map(str, self.format.input_size))
                raise UsageError(f"{self._describe()} has a fixed input size of {w}x{h}; "
                                 f"{option('input_size', size)} is for models whose size is symbolic")
            if fixed is not None and self.format.input_size is None:
                _check_input_pixels(*fixed, f"model {self.files.model}")  # before anything is allocated
            self.input_size = self.format.input_size or fixed  # (W, H); None: from each image
            self._output_layout = self.format.output_layout
            self.num_classes = self._probe_classes()
        except BaseException:
            self.close()
            raise
        if options.threshold is not None and self.format.scores != "sigmoid":
            self.close()
            raise UsageError(f"{option('threshold', options.threshold)} is for models with sigmoid scores "
                             f"({option('scores', 'sigmoid')}); {self.files.name} gives logits, whose argmax decides")
        if self.format.scores == "sigmoid":
            raw_names = ["background", *(raw_names or [])]
            raw_colors = [(0, 0, 0, 0), *raw_colors] if raw_colors else None
        self.class_names = label_files.class_names(self.num_classes, raw_names)
        self.colors = label_files.class_colors(self.num_classes, raw_colors, self.alpha)
        self._explicit = label_files.explicit_alphas(self.num_classes, raw_colors)
        self.ignore_index = _find_class(self.class_names, options.ignore_class)
        if self.ignore_index is None and options.ignore_class not in (None, IGNORED_BY_DEFAULT):
            self.close()
            raise UsageError(f"{option('ignore_class', options.ignore_class)}: {self.files.name} has no such class; "
                             f"its classes are {', '.join(self.class_names)}")
        try:
            self.fused = self._fuse(options.fuse)
        except BaseException:
            self.close()
            raise

    def _fuse(self, mode: str) -> bool:
        """Move pre-processing and the class map into the graph: ``on``, ``off``, or ``auto`` (on for a
        backend running on CUDA). Only what ``backends/fused.py`` repeats exactly can move."""
        if mode == "off":
            return False
        reason = self._cannot_fuse()
        if reason is None and mode == "auto" and not self.backend.on_cuda:
            return False  # on the CPU numpy does the same work, in the worker threads or processes
        if reason is not None or self.input_size is None:
            if mode == "on":
                raise UsageError(f"{option('fuse', 'on')}: {reason}; use {option('fuse', 'off')}")
            log.debug("pre-processing stays on the CPU: %s", reason)
            return False
        # the picture too, where the graph runs on a device (on the CPU numpy draws faster: BENCHMARKS.md)
        on_device = self.backend.on_cuda or (mode == "on" and self.options.image_codec == "gpu")
        draw = self.drawing if self.drawing is not None and on_device and self._draws_in_graph() else None
        try:
            self.backend.fuse(self.fused_spec(), draw)
        except SegnetError as exc:
            if mode == "on":
                raise
            log.info("pre-processing stays on the CPU: %s", exc)  # the backend runs the network's own graph
            return False
        self.draws_on_device = draw is not None
        return True

    def fused_spec(self) -> FusedSpec:
        """What the fused graph does around this network: its input size and layout, the normalisation, the
        classes and the ignored one."""
        from .backends.fused import FusedSpec

        f = self.format
        if self.input_size is None:
            raise UsageError(f"the model's input size is symbolic (give {option('input_size', '512x256')})")
        w, h = self.input_size
        return FusedSpec(w, h, f.mean, f.std, bool(f.bgr), self.input_layout, self.num_classes, self.ignore_index)

    def _draws_in_graph(self) -> bool:
        """The fused graph can draw this network's pictures (the nearest stretch, a fixed class grid)."""
        return self.format.resize == "nearest" and None not in self.backend.output.shape[2:]

    def _cannot_fuse(self) -> str | None:
        f = self.format
        if not self.backend.can_fuse:
            return f"{self.backend.description} cannot run pre-processing inside the graph"
        if self.input_size is None:
            return f"the model's input size is symbolic (give {option('input_size', '512x256')})"
        if f.resize != "nearest":
            return f"only the nearest stretch runs inside the graph, not {option('resize', f.resize)}"
        if f.scores != "logits":
            return f"only logits run inside the graph, not {option('scores', f.scores)}"
        if self._output_layout != "NCHW":
            return "only NCHW score outputs run inside the graph"
        return None

    def _describe(self) -> str:
        ins = ", ".join(f"{t.name} {format_shape(t.shape)}" for t in [self.backend.input])
        outs = ", ".join(f"{t.name} {format_shape(t.shape)}" for t in [self.backend.output])
        return f"model {self.files.model} (input {ins}; output {outs})"

    def _probe_classes(self) -> int:
        """Classes the model scores (plus background for sigmoid models), read from the output shape or,
        when that is symbolic, from one run on a blank image."""
        shape = self.backend.output.shape
        if len(shape) != 4:
            raise SegnetError(f"{self._describe()}: the output must have 4 dimensions, [1, classes, h, w] or "
                              "[1, h, w, classes]")
        known = None
        if self.input_size is not None and None not in shape:
            w, h = self.input_size
            self._output_layout = output_layout_of(shape, (h, w), self.input_layout, self._output_layout)
            known = shape[1] if self._output_layout == "NCHW" else shape[3]
        if known is None:
            w, h = self.input_size or (self.format.size_multiple * 2,) * 2
            blank = self.prepare(np.zeros((h, w, 3), np.uint8))
            known = self.infer_maps([blank.tensor])[0][0].shape[0]
        else:
            known += self.format.scores == "sigmoid"
        if not 1 <= known <= 256:
            raise SegnetError(f"{self._describe()}: {known} classes; between 1 and 256 are supported "
                              "(the class map is uint8)")
        return known

    def legend(self) -> np.ndarray:
        """uint8 ``[H, W, 3]``: every class's colour and name, with the alpha the overlay uses for it."""
        from .legend import draw_legend

        return draw_legend(self.class_names, self.colors, self._explicit, f"{self.name}: {self.num_classes} classes")

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def description(self) -> str:
        where = ", pre-processing and class map in the graph" if self.fused else ""
        return f"{self.backend.description}{where}"

    def infer_maps(self, tensors: list[np.ndarray] | np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The one batched inference call: network inputs (``prepare(image).tensor``, or several stacked in
        one array) -> ``(scores [C, h, w], class map)`` each, ``batch_size`` per backend call (inputs of
        different sizes, from symbolic-size models, run one by one); the class map is None unless the graph
        made it (``fused``), and ``finish`` then makes it."""
        backend = self._open_backend()
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        stacked = isinstance(tensors, np.ndarray)  # already one array: its slices need no copy
        step = self.batch_size if stacked or len({t.shape for t in tensors}) == 1 else 1
        for start in range(0, len(tensors), step):
            chunk: Any = tensors[start:start + step]
            batch = chunk if stacked else np.stack(chunk) if len(chunk) > 1 else chunk[0][None]
            maps: Any = None
            if self.fused:
                maps, scores = backend.infer_images(batch)
            else:
                scores = backend.infer(batch)
            if scores.ndim != 4 or scores.shape[0] != len(chunk):
                raise SegnetError(f"{self._describe()} returned scores of shape {list(scores.shape)}, "
                                  f"expected [{len(chunk)}, classes, grid height, grid width]")
            out.extend((self._read_scores(s, chunk[0]), None if maps is None else maps[i])
                       for i, s in enumerate(scores))
        return out

    def _read_scores(self, raw: np.ndarray, tensor: np.ndarray) -> np.ndarray:
        if self._output_layout is None:
            h, w = tensor.shape[1:3] if self.input_layout == "NCHW" else tensor.shape[0:2]
            self._output_layout = output_layout_of((1, *raw.shape), (h, w), self.input_layout, None)
        scores = to_chw(np.asarray(raw, np.float32), self._output_layout)
        if self.format.scores == "sigmoid":
            scores = with_background(scores, self.format.threshold)
        return scores

    def prepare(self, image) -> Prepared:
        """An image (path, PIL, array) -> network input; safe to run in worker threads. With the
        pre-processing in the graph (``fused``) the network input is the uint8 image itself."""
        rgb = as_rgb(image)
        if self.fused:
            return Prepared(rgb, rgb)
        f = self.format
        if self.input_size is not None:
            w, h = self.input_size
        else:  # the image decides the network's size: check it, so that this image alone fails
            w, h = symbolic_size(rgb.shape[1], rgb.shape[0], f.size_multiple)
            _check_input_pixels(w, h, f"a {rgb.shape[1]}x{rgb.shape[0]} image")
        tensor, region = prepare_input(rgb, w, h, mean=f.mean, std=f.std, bgr=f.bgr, resize_mode=f.resize,
                                       layout=self.input_layout)
        return Prepared(rgb, tensor, region)

    def finish(self, prepared: Prepared, scores: np.ndarray, class_map: np.ndarray | None = None) -> Segmentation:
        """Scores of one prepared image (and its class map, when the graph made it) -> its ``Segmentation``."""
        if scores.shape[0] != self.num_classes:
            raise SegnetError(f"model {self.files.model} returned {scores.shape[0]} classes, "
                              f"then {self.num_classes}")
        if class_map is None:
            class_map = classmap.class_map(scores, self.ignore_index)
        return Segmentation(prepared.rgb, scores, class_map, self.class_names, self.colors, self.filter_mode,
                            prepared.region)

    def draw_batch(self, images: np.ndarray) -> list[tuple[Segmentation, np.ndarray]]:
        """uint8 images ``[N, H, W, 3]`` of one size -> ``(Segmentation, picture)`` each, the picture being
        ``drawing.draw(..., self.drawing)``: drawn inside the fused graph where it runs on the device
        (``draws_on_device``), else here."""
        if self.drawing is None:
            raise SegnetError("draw_batch needs the drawing the pictures follow: Segmenter(..., drawing=DrawSpec(...))")
        if not self.draws_on_device:
            return [(r, draw(r.image, r.class_map, r.colors, self.drawing.with_region(r.region)))
                    for r in self.segment_batch(list(images))]
        # the device takes the caller's batch whole
        pictures, maps, scores = self._open_backend().infer_pictures(images, self.colors, self.drawing)
        return [(self.finish(Prepared(rgb, rgb), self._read_scores(raw, rgb), class_map), picture)
                for rgb, picture, class_map, raw in zip(images, pictures, maps, scores)]

    def draw_on_device(self, images):
        """The pictures of a batch whose pixels stay on the device (``gpu_codec.DeviceBatch``), as
        ``draw_batch`` draws them, left on the device (``backends.onnxruntime.DevicePictures``); None where
        this backend cannot (then ``draw_batch(images.host())`` does it). No ``Segmentation`` comes back."""
        if self.drawing is None or not self.draws_on_device:
            return None
        backend = self._open_backend()
        run = getattr(backend, "infer_pictures_on_device", None)
        return None if run is None else run(images, self.colors, self.drawing)

    def __call__(self, image) -> Segmentation:
        prepared = self.prepare(image)
        ((scores, class_map),) = self.infer_maps([prepared.tensor])
        return self.finish(prepared, scores, class_map)

    def segment_batch(self, images) -> list[Segmentation]:
        """Several images, run ``batch_size`` at a time."""
        prepared = [self.prepare(image) for image in images]
        results = self.infer_maps([p.tensor for p in prepared])
        return [self.finish(p, s, m) for p, (s, m) in zip(prepared, results)]

    def _open_backend(self):
        """The backend, or a one-line error when this segmenter was closed (here or by another thread)."""
        backend = self.backend
        if backend is None:
            raise SegnetError(f"this Segmenter of {self.name} is closed (close() was called, or its with block "
                              "ended): make a new one")
        return backend

    def detached(self) -> Segmenter:
        """A copy without the network, to send to worker processes: ``prepare`` and ``finish`` work in it,
        inference does not."""
        copy = object.__new__(Segmenter)
        copy.__dict__.update(self.__dict__, backend=None)
        return copy

    def close(self) -> None:
        if getattr(self, "backend", None) is not None:
            self.backend.__exit__(None, None, None)
            self.backend = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_rgb(image) -> np.ndarray:
    """A path, PIL image or array -> contiguous uint8 ``[H, W, 3]`` RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise SegnetError(f"expected a uint8 RGB image of shape [H, W, 3], got {array.dtype} "
                          f"{list(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise SegnetError("the image is empty (0 pixels)")
    return np.ascontiguousarray(array[..., :3])


def _check_input_pixels(width: int, height: int, what: str) -> None:
    """``options.check_input_pixels`` for a size that comes from a model or an image rather than an option:
    a SegnetError (exit 1: that model or image fails), not a usage error."""
    max_input_pixels()  # a bad SEGNET_MAX_INPUT_PIXELS stays a usage error
    try:
        check_input_pixels(width, height, what)
    except UsageError as exc:
        raise SegnetError(str(exc)) from None


def _find_class(names: list[str], name: str | None) -> int | None:
    """Index of the class called ``name`` (case-insensitive); None when there is none (a no-op)."""
    if not name:
        return None
    lowered = [n.lower() for n in names]
    return lowered.index(name.lower()) if name.lower() in lowered else None
