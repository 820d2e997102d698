"""Building an engine: ONNX file -> TensorRT network -> serialized engine (after Polygraphy's
``NetworkFromOnnxPath`` and ``EngineFromNetwork``), with the batch optimisation profile, the shared timing cache
(TensorRT 10/11) and the compute-capability targets (TensorRT-RTX). Building is not running: nothing here needs
a GPU on TensorRT-RTX, or the engine to load on any flavour."""

from __future__ import annotations

from pathlib import Path

from ...errors import SegnetError, option
from . import engine_cache as cache
from .api import api_path, created, first_error, product

#: An optimisation profile's (min, opt, max) shape per input name.
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

WORKSPACE = 1 << 30  # bytes of scratch GPU memory the builder may use per layer
OPTIMIZATION_LEVEL = 3  # TensorRT's default: level 5 builds much longer for little gain on a CNN


def engine_from_onnx(trt, logger, onnx_path: str | Path, *, fp16_flag: bool, int8_flag: bool = False,
                     workspace: int = WORKSPACE,
                     optimization_level: int = OPTIMIZATION_LEVEL, timing_cache_path: Path | None = None,
                     model: bytes | None = None, max_batch: int = 1,
                     targets: tuple[tuple[int, int], ...] = (), shapes: Shapes | None = None) -> bytes:
    """Parse the ONNX file into an explicit-batch network and build a serialized engine. ``fp16_flag`` sets the
    TensorRT 10 builder flag (on 11 and TensorRT-RTX the model itself must be FP16); ``int8_flag``, for a QDQ
    model (explicit quantization), sets TensorRT 10's INT8 flag (11 and TensorRT-RTX take the Q/DQ nodes as they
    are). The shared timing cache at
    ``timing_cache_path`` seeds the build and receives what it measured (TensorRT 10/11; TensorRT-RTX has none).
    ``model``: the serialized model to parse instead of the file (``onnx_path`` still names it in errors);
    ``max_batch``: the largest batch the optimisation profile of a dynamic batch axis allows; ``shapes``: the
    profile's (min, opt, max) shape of each input with other dynamic sizes (the fused graph's image and drawing
    inputs); ``targets``: the compute capabilities a TensorRT-RTX engine is built for (empty: its portable
    default)."""
    path = api_path(trt)
    builder = created(trt, lambda: trt.Builder(logger), logger, "builder")
    network = builder.create_network(0)  # explicit batch: the only kind in 10 (no flag needed), 11 and RTX
    parser = trt.OnnxParser(network, logger)
    mark = len(logger.errors)
    parsed = parser.parse_from_file(str(onnx_path)) if model is None else parser.parse(model)
    if not parsed:
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        reasons = "; ".join(errors) or first_error(logger, mark)
        raise SegnetError(f"{product(trt)} cannot parse {onnx_path}: {reasons}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    if fp16_flag and path == "10":
        _allow_fp16_trt10(trt, config)
    if int8_flag and path == "10":
        _allow_int8_trt10(trt, config)
    if path == "rtx":
        _targets_rtx(trt, config, targets)
    elif targets:
        raise SegnetError(f"{product(trt)} builds for the GPU it runs on; compute-capability targets are for "
                          "TensorRT-RTX")
    _profile(trt, logger, builder, network, config, max_batch, shapes or {})
    if path == "rtx":
        timing_cache_path = None  # TensorRT-RTX's timing-cache calls are deprecated no-ops
    if timing_cache_path:
        _seed_timing_cache(config, timing_cache_path)
    mark = len(logger.errors)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SegnetError(f"{product(trt)} could not build an engine for {onnx_path}: {first_error(logger, mark)}")
    if timing_cache_path:
        _merge_timing_cache(config, timing_cache_path)
    return bytes(plan)


def _seed_timing_cache(config, timing_cache_path: Path) -> None:
    seed = cache.read_timing_cache(timing_cache_path)
    timing_cache = config.create_timing_cache(seed) or config.create_timing_cache(b"")  # damaged: start over
    if not config.set_timing_cache(timing_cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _merge_timing_cache(config, timing_cache_path: Path) -> None:
    timing_cache = config.get_timing_cache()

    def merge(current: bytes) -> bytes:
        shared_cache = config.create_timing_cache(current)
        if shared_cache is None or not shared_cache.combine(timing_cache, False):
            return bytes(timing_cache.serialize())  # nothing usable on disk: ours replaces it
        return bytes(shared_cache.serialize())

    cache.merge_timing_cache(timing_cache_path, merge)


def _allow_fp16_trt10(trt, config) -> None:
    config.set_flag(trt.BuilderFlag.FP16)


def _allow_int8_trt10(trt, config) -> None:
    config.set_flag(trt.BuilderFlag.INT8)


def _targets_rtx(trt, config, targets: tuple[tuple[int, int], ...]) -> None:
    """Build for these compute capabilities; none: TensorRT-RTX's portable engine (8.0 and newer)."""
    if not targets:
        return
    names = {(7, 5): trt.ComputeCapability.SM75, (8, 0): trt.ComputeCapability.SM80,
             (8, 6): trt.ComputeCapability.SM86, (8, 9): trt.ComputeCapability.SM89,
             (12, 0): trt.ComputeCapability.SM120, (12, 1): trt.ComputeCapability.SM121}
    config.num_compute_capabilities = len(targets)
    for index, target in enumerate(targets):
        if target not in names or not config.set_compute_capability(names[target], index):
            raise SegnetError(f"{product(trt)} cannot build for compute capability {target[0]}.{target[1]}")


def _profile(trt, logger, builder, network, config, max_batch: int = 1, shapes: Shapes | None = None) -> None:
    """The one optimisation profile: an input with a dynamic batch dimension only gets batch 1 to ``max_batch``,
    optimised for ``max_batch``; an input with other dynamic sizes gets its ``shapes`` entry, without which it
    is refused. TensorRT's verdict on the profile is checked (-1: invalid)."""
    profile = None
    inputs = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 not in shape:
            continue
        if shapes and tensor.name in shapes:
            low, best, high = shapes[tensor.name]
        elif -1 in shape[1:]:
            raise SegnetError(f"input '{tensor.name}' has shape {list(shape)}; only the batch may be dynamic")
        else:
            low, best = (1, *shape[1:]), (max_batch, *shape[1:])
            high = best
        profile = profile or builder.create_optimization_profile()
        profile.set_shape(tensor.name, low, best, high)
        inputs.append(tensor.name)
    if profile is None and max_batch > 1:
        raise SegnetError(f"the model has no input with a dynamic batch axis for {option('batch_size', max_batch)}")
    if profile is not None:
        mark = len(logger.errors)
        if config.add_optimization_profile(profile) < 0:
            raise SegnetError(f"{product(trt)} refused the optimisation profile of batch 1 to {max_batch} for input "
                              f"{', '.join(inputs)}: {first_error(logger, mark)}")


def _parser_error(error) -> str:
    where = f" (node {error.node()} '{error.node_name()}', {error.node_operator()})" if error.node() >= 0 else ""
    return f"{error.desc()}{where}"
