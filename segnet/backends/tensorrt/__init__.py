"""TensorRT backend: the ONNX model built once into an engine, cached, and run with CUDA; TensorRT 10, TensorRT 11
and TensorRT for RTX.

Split the way Polygraphy splits it, one module per step:

    api           importing TensorRT (which flavour), its version path, its logger, every TensorRT name used
    recipe        which engine a model needs (key, file, build), and building one ahead of time
    builder       ONNX -> network -> serialized engine (batch profile, timing cache, compute-capability targets)
    engine_cache  where engines live, under which key; locked, atomic, damaged ones rebuilt
    runner        a built engine, bound to CUDA buffers, mapping batches to scores
    cuda          device buffers, pinned host arrays, a stream (cuda-python or PyCUDA)

``TensorRTBackend`` here only puts them together. FP16 on TensorRT 10 is the builder flag on the FP32 model,
as jetson does; TensorRT 11 and TensorRT-RTX have no such flag, so the model is converted to FP16 first
(``segnet.backends.fp16``). Nothing outside this sub-package imports TensorRT or CUDA.

``fuse(spec, draw)`` builds (or finds in the cache) a second engine: the network inside ``backends/fused.py``'s
graph in its TensorRT form, so that uint8 images go in and class maps, and with ``draw`` pictures, come out
(``infer_images``, ``infer_pictures``: the onnxruntime backend's contract). Its key names the graph, so it never
collides with the plain engine. Images larger than the engine's profile (``recipe.fused_max_side``) are stretched
on the CPU first, by the same indices, and their pictures drawn there.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...drawing import DrawSpec
from ...errors import SegnetError
from ..fused import CLASS_MAP, COLORS, COLS, IMAGE, PICTURE, ROWS, FusedSpec, draw_inputs
from ..fused import indices as fused_indices
from . import engine_cache as cache
from .api import (
    INSTALL,
    INSTALL_RTX,
    api_path,
    create_runtime,
    import_tensorrt,
    make_logger,
    one_line_errors,
    parse_targets,
    product,
    unsupported_gpu,
    version_problem,
)
from .builder import OPTIMIZATION_LEVEL, WORKSPACE
from .recipe import BuiltEngine, EngineRecipe, NotFused, build_ahead, engines_for_gpu, fused_max_side, recipe
from .runner import EngineRunner, FusedRunner, load_engine

log = logging.getLogger(__name__)

#: Image sizes whose stretch indices, and drawings whose inputs, are kept (as onnxruntime's bound shapes).
MAX_KEPT = 8


@functools.cache
def unusable_reason(flavour: str = "auto") -> str | None:
    """Why TensorRT (of ``flavour``) cannot run in this process (one line), or None. Worked out once per process
    and flavour."""
    try:
        trt = import_tensorrt(flavour)
        with one_line_errors(trt, "starting"):
            problem = version_problem(trt)
            if problem:
                return problem
            create_runtime(trt, make_logger(trt))
    except SegnetError as exc:
        return str(exc)
    from . import cuda

    try:
        with cuda.open_cuda() as layer:
            gpu = layer.device_info()
    except SegnetError as exc:
        return f"CUDA is not usable: {exc}"
    return unsupported_gpu(trt, gpu.name, gpu.compute_capability)


class TensorRTBackend:
    """Runs the model as a TensorRT engine on the first CUDA GPU; ``infer`` maps ``[N,3,H,W]`` float32 to
    ``[N,C,gh,gw]`` float32 scores. With ``batch_size`` B > 1 the engine has a batch axis with an optimisation
    profile of 1 to B, and one call runs up to B images at once. ``flavour``: ``auto``, ``tensorrt`` or
    ``tensorrt_rtx``."""

    def __init__(self, model_path: str | Path, input_blob: str | None = None, output_blob: str | None = None,
                 precision: str = "fp16", engine_cache: str | Path | None = None, batch_size: int = 1,
                 workspace: int = WORKSPACE, optimization_level: int = OPTIMIZATION_LEVEL, flavour: str = "auto"):
        self.model_path = Path(model_path)
        self.input_blob, self.output_blob = input_blob, output_blob
        self.precision, self.engine_cache, self.batch_size = precision, engine_cache, batch_size
        self.workspace, self.optimization_level, self.flavour = workspace, optimization_level, flavour
        self.cuda: Any = None
        self.runner: Any = None
        self.fused_runner: Any = None
        self.fused: FusedSpec | None = None
        self.draws: str | None = None  # the kind of picture the fused engine draws (None: none)

    def __enter__(self) -> TensorRTBackend:
        trt = import_tensorrt(self.flavour)
        try:
            with one_line_errors(trt, "building or loading the engine"):
                self._open(trt)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for runner in (self.runner, self.fused_runner):
            if runner is not None:
                runner.close()
        self.runner = self.fused_runner = None
        cuda, self.cuda = self.cuda, None
        if cuda is not None:
            cuda.close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.runner is None:
            raise SegnetError("the TensorRT backend runs the fused engine now: use infer_images")
        return self.runner.infer(batch)

    #: True once opened unless the engine is one the fused graph cannot keep its arithmetic in (``recipe``)
    can_fuse = False
    on_cuda = True

    def fuse(self, spec: FusedSpec, draw: DrawSpec | None = None) -> None:
        """Run ``spec``'s pre-processing and class map (and ``draw``'s picture) with the network from now on, as
        the engine of the fused graph: built on first use, then from the cache. The plain engine is let go."""
        trt = self._trt
        if draw is not None and None in self.output.shape[2:]:
            raise SegnetError(f"cannot draw inside the graph of {self.model_path}: its output grid size is "
                              "symbolic; draw on the CPU (drawing.draw)")
        draws = None if draw is None else draw.kind
        with one_line_errors(trt, "building or loading the fused engine"):
            own, engine, runtime_cache = self._engine(trt, self._recipe.with_graph(spec, draws))
            runner = FusedRunner(trt, engine, self._logger, self.cuda, self.model_path, runtime_cache)
        for old in (self.runner, self.fused_runner):
            if old is not None:
                old.close()
        self.runner, self.fused_runner = None, runner
        self.fused, self.draws = spec, draws
        self._samples: dict[tuple, dict[str, np.ndarray]] = {}
        self._draw_feed: tuple[tuple[int, int], dict[str, np.ndarray]] | None = None
        self._indices: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.description = f"{product(trt)} ({own.label}, {self._gpu_name})"

    def infer_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``images`` uint8 ``[N, H, W, 3]`` RGB -> (class maps uint8 ``[N, gh, gw]``, scores float32
        ``[N, C, gh, gw]``), through the fused engine (``fuse`` first). An engine that draws draws too (with the
        colours and samples last given, else black ones), and the picture is dropped."""
        spec = self._fused_spec("infer_images needs the fused graph: call fuse first")
        h, w = images.shape[1:3]
        if max(h, w) > fused_max_side(self.batch_size):  # beyond the profile: the same stretch here, then the identity
            rows, cols = self._stretch(h, w)
            images = np.ascontiguousarray(images[:, rows][:, :, cols])
            h, w = spec.height, spec.width
        feed = {}
        if self.draws is not None:
            if self._draw_feed is not None and self._draw_feed[0] == (h, w):
                feed = self._draw_feed[1]
            else:
                colors = np.zeros((spec.num_classes, 4), np.float32)
                feed = {**self._draw_inputs(h, w, DrawSpec.of_kind(self.draws)), COLORS: colors}
        out = self._run(images, feed)
        return out[CLASS_MAP], out[self.output.name]

    def infer_pictures(self, images: np.ndarray, colors: np.ndarray,
                       draw: DrawSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``images`` uint8 ``[N, H, W, 3]`` RGB -> (pictures uint8 ``[N, *drawing.picture_shape]``, class maps,
        scores): ``[drawing.draw(image, class_map, colors, draw) for ...]`` computed in the fused engine (drawn here
        for images beyond its profile). Needs ``fuse(spec, draw)`` with a ``draw`` of the same kind."""
        self._fused_spec("infer_pictures needs a fused graph that draws: call fuse(spec, draw) first")
        if self.draws is None:
            raise SegnetError("infer_pictures needs a fused graph that draws: call fuse(spec, draw) first")
        if draw.kind != self.draws:
            raise SegnetError(f"the fused graph draws {self.draws} pictures, not {draw.kind}: "
                              "call fuse(spec, draw) again")
        h, w = images.shape[1:3]
        if max(h, w) > fused_max_side(self.batch_size):
            from ...drawing import draw as draw_picture

            maps, scores = self.infer_images(images)
            return np.stack([draw_picture(i, m, colors, draw) for i, m in zip(images, maps)]), maps, scores
        feed = {**self._draw_inputs(h, w, draw), COLORS: np.ascontiguousarray(colors, np.float32)}
        self._draw_feed = (h, w), feed  # what infer_images feeds from now on
        out = self._run(images, feed)
        return out[PICTURE], out[CLASS_MAP], out[self.output.name]

    def _fused_spec(self, missing: str) -> FusedSpec:
        if self.fused is None or self.fused_runner is None:
            raise SegnetError(missing)
        return self.fused

    def _stretch(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The stretch indices of an image of ``h x w`` (the ``ROWS`` and ``COLS`` inputs), kept per size."""
        if (h, w) not in self._indices:
            if len(self._indices) >= MAX_KEPT:
                self._indices.clear()
            self._indices[(h, w)] = fused_indices(h, w, self._fused_spec("call fuse first"))
        return self._indices[(h, w)]

    def _draw_inputs(self, h: int, w: int, draw: DrawSpec) -> dict[str, np.ndarray]:
        """``fused.draw_inputs`` for this image size and drawing, kept per size, filter and region."""
        key = (h, w, draw.filter_mode, draw.region)
        if key not in self._samples:
            if len(self._samples) >= MAX_KEPT:
                self._samples.clear()
            gh, gw = (int(d or 0) for d in self.output.shape[2:])  # fixed: fuse refuses to draw otherwise
            self._samples[key] = draw_inputs(h, w, gh, gw, draw)
        return self._samples[key]

    def _run(self, images: np.ndarray, draw_feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The fused engine's outputs for ``images``, ``batch_size`` at a time (the profile's largest batch)."""
        rows, cols = self._stretch(*images.shape[1:3])
        step = self.batch_size
        parts = [self.fused_runner.run({IMAGE: images[i:i + step], ROWS: rows, COLS: cols, **draw_feed})
                 for i in range(0, len(images), step)]
        return parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _open(self, trt) -> None:
        from .cuda import open_cuda

        problem = version_problem(trt)
        if problem:
            raise SegnetError(problem)
        self.cuda = open_cuda()
        gpu = self.cuda.device_info()
        problem = unsupported_gpu(trt, gpu.name, gpu.compute_capability)
        if problem:
            raise SegnetError(problem)
        logger = self._logger = make_logger(trt)
        self._runtime = create_runtime(trt, logger)
        self._trt, self._gpu_name, self._compute_capability = trt, gpu.name, gpu.compute_capability
        self._recipe = recipe(trt, logger, self.model_path, input_blob=self.input_blob, output_blob=self.output_blob,
                              precision=self.precision, engine_cache=self.engine_cache, batch_size=self.batch_size,
                              workspace=self.workspace, optimization_level=self.optimization_level, gpu_name=gpu.name,
                              targets=(gpu.compute_capability,))
        own, engine, runtime_cache = self._engine(trt, self._recipe)
        self.runner = EngineRunner(trt, engine, logger, self.cuda, self.model_path, own.input_name, own.output_name,
                                   self.batch_size, runtime_cache=runtime_cache)
        self.input, self.output = self.runner.input, self.runner.output
        self.can_fuse = own.can_fuse
        self.description = f"{product(trt)} ({own.label}, {gpu.name})"

    def _engine(self, trt, own: EngineRecipe) -> tuple[EngineRecipe, Any, Path | None]:
        """The engine of ``own`` from the cache, or built into it: (the recipe it came from, the engine, its
        TensorRT-RTX runtime cache)."""
        runtime_cache = None
        if api_path(trt) == "rtx":  # an engine built ahead of time for this GPU, several, or all of them
            own = engines_for_gpu(own, self._compute_capability)[0]
            runtime_cache = cache.runtime_cache_path(own.path, self._gpu_name, self._compute_capability)
        runtime, logger = self._runtime, self._logger
        engine = cache.load_or_build(own.path, own.key, own.build, lambda data: load_engine(trt, runtime, data, logger),
                                     building=own.building_line())
        return own, engine, runtime_cache


__all__ = ["INSTALL", "INSTALL_RTX", "BuiltEngine", "NotFused", "TensorRTBackend", "build_ahead", "import_tensorrt",
           "parse_targets", "unusable_reason"]
