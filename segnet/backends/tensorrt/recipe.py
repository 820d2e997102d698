"""Which engine a model needs, and how to make it: its key, its file in the cache, its build (the FP16 copy or the
calibrated INT8 QDQ copy, the batch axis, the compute-capability targets, and for a fused engine the
pre-processing, class map and drawing around the network: ``fused.py``'s graph in its TensorRT form, with an
optimisation profile for the image sizes). The backend uses it to build on first use for the GPU it runs on;
``build_ahead`` uses it to build before any run, for given targets on a machine without a GPU (TensorRT-RTX) or
for this machine's GPU (TensorRT 10/11), loading nothing. Both arrive at the same key, so a later run finds the
engine built ahead of time."""

from __future__ import annotations

import dataclasses
import glob
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...drawing import DrawSpec
from ...errors import SegnetError, UsageError, option
from ...options import Options
from ...util import file_sha256
from .. import fp16, int8
from ..base import check_contract, onnx_io
from ..fused import IMAGE, FusedSpec, draw_inputs
from . import engine_cache as cache
from .api import (
    PORTABLE,
    RTX_COMPUTE_CAPABILITIES,
    api_path,
    flavour_of,
    import_tensorrt,
    make_logger,
    one_line_errors,
    product,
    sm,
    version_problem,
)
from .builder import OPTIMIZATION_LEVEL, WORKSPACE, Shapes, engine_from_onnx

#: The most image pixels a fused engine's optimisation profile takes in one batch: one 4096x4096 image (4K UHD
#: fits), sides shrinking with the batch (``fused_max_side``). TensorRT sizes scratch and activation memory for the
#: profile's largest shapes: TensorRT-RTX asked for 1.1 GB of workspace to build the overlay graph for 8 images of
#: 4096x4096, more than the builder's 1 GiB. A larger image is stretched on the CPU first, by the same indices, or
#: drawn there (``TensorRTBackend.infer_images``).
FUSED_MAX_PIXELS = 4096 * 4096


def fused_max_side(max_batch: int) -> int:
    """The largest image height and width of a fused engine for batches of up to ``max_batch`` images: 4096 for
    one, 2896 for 2, 2048 for 4, 1440 for 8 (a multiple of 16)."""
    return math.isqrt(FUSED_MAX_PIXELS // max_batch) // 16 * 16


class NotFused(SegnetError):
    """The engine is one whose arithmetic the fused graph cannot keep (TensorRT 10's FP16 flag)."""


@dataclass(frozen=True)
class EngineRecipe:
    """One engine of one model: what it is built from and for, hence its key and its place in the cache."""

    trt: Any
    logger: Any
    model_path: Path
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    model_sha256: str
    folder: Path
    precision: str  # "fp32", "fp16-flag" (TensorRT 10), "fp16-model" (TensorRT 11, TensorRT-RTX), "int8-qdq"
    batch_size: int
    workspace: int
    optimization_level: int
    gpu_name: str  # TensorRT 10/11: the GPU it is built on; TensorRT-RTX: ""
    targets: tuple[tuple[int, int], ...]  # compute capabilities; TensorRT-RTX: () is its portable default
    int8_copy: Path | None = None  # "int8-qdq": the calibrated QDQ copy it is built from (explicit quantization)
    fused: FusedSpec | None = None  # the fused graph around the network (None: the network's own graph)
    draws: str | None = None  # the kind of picture the fused graph draws (None: none)

    @property
    def settings(self) -> tuple[tuple[str, object], ...]:
        """The builder settings the key records."""
        settings: tuple = (("workspace", self.workspace), ("optimization_level", self.optimization_level))
        if self.batch_size > 1:  # batch 1 keeps its key, so engines cached before batching are still found
            settings += (("batch_profile", (1, self.batch_size, self.batch_size)),)
        if self.precision == "fp16-model":
            settings += (("fp16_converter", f"{fp16.CONVERTER} {fp16.converter_version()}"),)
        if self.int8_copy is not None:  # a new calibration is a new engine
            settings += (("int8_copy", file_sha256(self.int8_copy)[:16]),)
        if self.fused is not None:  # plain engines keep their key; the graph names the file too
            settings += (("graph", self.graph), ("fused", dataclasses.asdict(self.fused)),
                         ("image_sides", (1, fused_max_side(self.batch_size))))
        return settings

    @property
    def graph(self) -> str:
        """``"network"``, ``"fused"`` (pre-processing and class map around it) or ``"fused-overlay"`` (and the
        drawing of that kind of picture)."""
        if self.fused is None:
            return "network"
        return "fused" if self.draws is None else f"fused-{self.draws}"

    @property
    def can_fuse(self) -> bool:
        """Whether the fused graph keeps its arithmetic in this engine: TensorRT 10's FP16 builder flag lets
        TensorRT run any layer in FP16, pre-processing and drawing included (TensorRT 11 and TensorRT-RTX
        follow the graph's own types)."""
        return self.precision != "fp16-flag"

    def with_graph(self, fused: FusedSpec | None, draws: str | None = None) -> EngineRecipe:
        """This engine with ``fused``'s graph around the network (drawing ``draws``), or without (None)."""
        if fused is not None and not self.can_fuse:
            raise NotFused(f"the {self.describe()} is built with TensorRT 10's FP16 flag, which would run the "
                              "fused pre-processing and drawing in FP16 too: they stay on the CPU (precision fp32 "
                              "or int8, or TensorRT 11, fuse them)")
        return dataclasses.replace(self, fused=fused, draws=None if fused is None else draws)

    @property
    def key(self) -> cache.EngineKey:
        return cache.EngineKey(self.model_sha256, flavour_of(self.trt), self.trt.__version__, self.gpu_name,
                               self.targets, self.precision, self.input_shape, self.settings)

    @property
    def path(self) -> Path:
        return self.folder / self.key.engine_name(self.model_path)

    @property
    def label(self) -> str:
        return {"fp32": "FP32", "int8-qdq": "INT8"}.get(self.precision, "FP16")

    def describe(self) -> str:
        """``FP16 TensorRT-RTX 1.7.1.116 engine for sm89, sm120``, for status lines."""
        if api_path(self.trt) == "rtx":
            where = ", ".join(sm(cc) for cc in self.targets) or \
                f"every GPU it supports by default ({', '.join(sm(cc) for cc in PORTABLE)})"
        else:
            where = f"{self.gpu_name} ({sm(self.targets[0])})"
        return f"{self.label} {product(self.trt)} engine for {where}"

    def building_line(self) -> str:
        first = {"fp16-model": " (converted to an FP16 model first)",
                 "int8-qdq": " (its calibrated INT8 QDQ copy)"}.get(self.precision, "")
        once = " — once" if api_path(self.trt) == "rtx" else " — once, takes a minute or two"
        return f"building {self.describe()} from {self.model_path}{first}{self.graph_words()}{once}"

    def graph_words(self) -> str:
        """``, with pre-processing, class map and overlay drawing in the graph``, or nothing."""
        if self.fused is None:
            return ""
        drawing = "" if self.draws is None else f" and {self.draws} drawing"
        return f", with pre-processing, class map{drawing} in the graph"

    def build(self) -> bytes:
        """Parse and build: the serialized engine."""
        onnx_path = self.int8_copy or self.model_path
        if self.precision == "fp16-model":
            onnx_path = fp16.fp16_model(self.model_path, self.folder, self.model_sha256,
                                        input_blob=self.input_name, output_blob=self.output_name)
        model = None
        shapes = None
        if self.fused is not None:  # the batch axis becomes symbolic too
            model = self.fused_graph(onnx_path, self.fused)
            shapes = fused_shapes(self.fused, self.draws, self.batch_size)
        elif self.batch_size > 1:  # a model exported with batch 1 gets a symbolic batch axis
            from ..onnxruntime import dynamic_batch

            model = dynamic_batch(onnx_path, self.input_name, self.output_name)
        timing = None
        if api_path(self.trt) != "rtx":
            timing = self.folder / cache.timing_cache_name(self.trt.__version__, self.gpu_name, self.targets[0])
        return engine_from_onnx(self.trt, self.logger, onnx_path, fp16_flag=self.precision == "fp16-flag",
                                int8_flag=self.precision == "int8-qdq",
                                workspace=self.workspace, optimization_level=self.optimization_level,
                                timing_cache_path=timing, model=model, max_batch=self.batch_size,
                                targets=self.targets if api_path(self.trt) == "rtx" else (), shapes=shapes)

    def fused_graph(self, onnx_path: Path, spec: FusedSpec) -> bytes:
        """The model at ``onnx_path`` inside ``fused.py``'s graph of ``spec``, in the form TensorRT's parser
        takes."""
        import onnx

        from ..fused import fused_model

        draw = None if self.draws is None else DrawSpec.of_kind(self.draws)
        return fused_model(onnx.load(str(onnx_path)), self.input_name, self.output_name, spec, draw,
                           tensorrt=True).SerializeToString()

    def with_targets(self, targets: tuple[tuple[int, int], ...]) -> EngineRecipe:
        return dataclasses.replace(self, targets=targets)


def fused_shapes(spec: FusedSpec, draws: str | None, max_batch: int) -> Shapes:
    """The fused graph's optimisation profile: one image of 1x1 to ``max_batch`` images of ``fused_max_side``
    squared, optimised for ``max_batch`` images of the network's own size; the drawing's inputs follow the image
    (their shapes are ``draw_inputs``'s for those sizes)."""

    def shapes(n: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
        found: dict[str, tuple[int, ...]] = {IMAGE: (n, h, w, 3)}
        if draws is not None:
            drawing = draw_inputs(h, w, 1, 1, DrawSpec.of_kind(draws))
            found.update((name, value.shape) for name, value in drawing.items())
        return found

    low, best, high = shapes(1, 1, 1), shapes(max_batch, spec.height, spec.width), \
        shapes(max_batch, fused_max_side(max_batch), fused_max_side(max_batch))
    return {name: (low[name], best[name], high[name]) for name in low}


def recipe(trt, logger, model_path: str | Path, *, input_blob: str | None = None, output_blob: str | None = None,
           precision: str = "fp16", engine_cache: str | Path | None = None, batch_size: int = 1,
           workspace: int = WORKSPACE, optimization_level: int = OPTIMIZATION_LEVEL, gpu_name: str = "",
           targets: tuple[tuple[int, int], ...] = ()) -> EngineRecipe:
    """The engine of ``model_path`` for these settings. TensorRT 10/11: ``gpu_name`` and ``targets`` (its one
    compute capability) are the GPU's; TensorRT-RTX: ``targets`` only."""
    model_path = Path(model_path)
    inputs, outputs = onnx_io(model_path)
    inp, out = check_contract(model_path, inputs, outputs, input_blob, output_blob)
    path = api_path(trt)
    kind = "fp32" if precision == "fp32" else "int8-qdq" if precision == "int8" else \
        "fp16-flag" if path == "10" else "fp16-model"
    shape = tuple(d or 0 for d in (1, *inp.shape[1:]))  # the builder refuses symbolic sizes
    sha = file_sha256(model_path)
    copy = None
    if kind == "int8-qdq":  # the copy the user calibrated, else one from the images the model ships
        copy = int8.int8_model(model_path, cache.cache_dir(model_path, engine_cache),
                               int8.preparer(model_path, inp.shape), form="qdq", input_blob=inp.name,
                               model_sha256=sha).path
    return EngineRecipe(trt, logger, model_path, inp.name, out.name, shape, sha,
                        cache.cache_dir(model_path, engine_cache), kind, batch_size, workspace,
                        optimization_level,
                        "" if path == "rtx" else gpu_name, tuple(targets), copy)


def engines_for_gpu(own: EngineRecipe, compute_capability: tuple[int, int]) -> list[EngineRecipe]:
    """TensorRT-RTX engines in the cache that run on a GPU of ``compute_capability`` (built for it, for several
    targets including it, or portable), best first, then ``own`` (built for this GPU alone) when it is not
    there: the first of these is the engine to load, or to build."""
    prefix = own.key.name_prefix(own.model_path)
    found = []
    for file in own.folder.glob(glob.escape(prefix) + "*.engine"):
        targets = cache.parse_targets_tag(file.name[len(prefix):].rsplit(".", 2)[0])
        if targets is None or not (compute_capability in targets or (not targets and compute_capability in PORTABLE)):
            continue
        other = own.with_targets(targets)
        if other.path == file:  # same model, version, precision and settings (the digest says so)
            found.append(other)
    found.sort(key=lambda r: (r.targets != own.targets, not r.targets, len(r.targets)))
    return found if own in found else [*found, own]


@dataclass(frozen=True)
class BuiltEngine:
    """What ``build_ahead`` made (or found already made): the engine file, its size and the build's duration."""

    path: Path
    size: int
    seconds: float
    built: bool  # False: an intact engine with this key was already in the cache
    description: str


def build_ahead(options: Options | None = None, targets: tuple[tuple[int, int], ...] | None = None, *,
                fused: FusedSpec | None = None, draws: str | None = None, **given: Any) -> BuiltEngine:
    """Build the engine that a later run with these options loads from the cache, without running any image.

    TensorRT-RTX builds on a machine with no GPU and no CUDA package: for ``targets`` (compute capabilities, see
    ``api.parse_targets``), or without them the portable engine for every GPU it supports by default. TensorRT
    10/11 builds for this machine's GPU. The network options choose the model (``network``, or ``model`` with
    ``labels``); ``precision``, ``batch_size``, ``engine_cache`` and ``tensorrt_flavour`` are those of the run.
    ``fused`` (and ``draws``): the engine of that fused graph instead (``Segmenter.fused_graphs`` says which a run
    uses); ``NotFused`` where the engine would not keep its arithmetic."""
    from ... import model_format
    from ...zoo.resolve import locate

    options = Options.create(options, **given)
    files = locate(options)
    sidecar = model_format.read_sidecar(options.model if options.model is not None else files.model)
    trt = import_tensorrt(options.tensorrt_flavour)
    with one_line_errors(trt, "building the engine"):
        problem = version_problem(trt)
        if problem:
            raise SegnetError(problem)
        gpu_name, chosen = "", tuple(sorted({(int(a), int(b)) for a, b in targets or ()}))
        unknown = [cc for cc in chosen if cc not in RTX_COMPUTE_CAPABILITIES]
        if unknown:
            raise UsageError(f"{option('target', ','.join(sm(cc) for cc in unknown))}: TensorRT-RTX builds for "
                             f"{', '.join(sm(cc) for cc in RTX_COMPUTE_CAPABILITIES)}")
        if api_path(trt) != "rtx":
            if targets:
                raise UsageError(f"{option('target')} is for TensorRT-RTX: {product(trt)} builds for the GPU of "
                                 "this machine")
            from .cuda import open_cuda

            with open_cuda() as cuda:
                gpu = cuda.device_info()
            gpu_name, chosen = gpu.name, (gpu.compute_capability,)
        start = time.perf_counter()  # INT8: the recipe calibrates its QDQ copy when there is none yet
        made = recipe(trt, make_logger(trt), files.model, input_blob=options.input_blob or sidecar.get("input_blob"),
                      output_blob=options.output_blob or sidecar.get("output_blob"),
                      precision=options.precision or "fp16", engine_cache=options.engine_cache,
                      batch_size=options.batch_size, gpu_name=gpu_name, targets=chosen)
        if fused is not None:
            made = made.with_graph(fused, draws)
        built = cache.build_into_cache(made.path, made.key, made.build, building=made.building_line())
        seconds = time.perf_counter() - start
    return BuiltEngine(made.path, made.path.stat().st_size, seconds, built, made.describe() + made.graph_words())
