"""Building an engine: ONNX file -> TensorRT network -> serialized engine (after Polygraphy's
``NetworkFromOnnxPath`` and ``EngineFromNetwork``), with the batch optimisation profile and the shared
timing cache. Building is not running: nothing here needs the engine to load."""

from __future__ import annotations

from pathlib import Path

from ...errors import SegnetError
from . import engine_cache as cache
from .api import api_path, created, last_error

WORKSPACE = 1 << 30  # bytes of scratch GPU memory the builder may use per layer
OPTIMIZATION_LEVEL = 3  # TensorRT's default: level 5 builds much longer for little gain on a CNN


def engine_from_onnx(trt, logger, onnx_path: str | Path, *, fp16_flag: bool, workspace: int = WORKSPACE,
                     optimization_level: int = OPTIMIZATION_LEVEL, timing_cache_path: Path | None = None,
                     model: bytes | None = None, max_batch: int = 1) -> bytes:
    """Parse the ONNX file into an explicit-batch network and build a serialized engine. ``fp16_flag`` sets the
    TensorRT 10 builder flag (on 11 the model itself must be FP16). The shared timing cache at
    ``timing_cache_path`` seeds the build and receives what it measured. ``model``: the serialized model to
    parse instead of the file (``onnx_path`` still names it in errors); ``max_batch``: the largest batch the
    optimisation profile of a dynamic batch axis allows."""
    builder = created(trt, lambda: trt.Builder(logger), logger, "builder")
    network = builder.create_network(0)  # explicit batch: the only kind in 10 (no flag needed) and 11
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(onnx_path)) if model is None else parser.parse(model)
    if not parsed:
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        reasons = "; ".join(errors) or last_error(logger)
        raise SegnetError(f"TensorRT cannot parse {onnx_path}: {reasons}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    if fp16_flag and api_path(trt) == "10":
        _allow_fp16_trt10(trt, config)
    _batch_profile(builder, network, config, max_batch)
    seed = cache.read_timing_cache(timing_cache_path) if timing_cache_path else b""
    timing_cache = config.create_timing_cache(seed) or config.create_timing_cache(b"")  # a damaged file: start over
    if not config.set_timing_cache(timing_cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SegnetError(f"TensorRT could not build an engine for {onnx_path}: {last_error(logger)}")
    if timing_cache_path:
        timing_cache = config.get_timing_cache()

        def merge(current: bytes) -> bytes:
            shared_cache = config.create_timing_cache(current)
            if shared_cache is None or not shared_cache.combine(timing_cache, False):
                return bytes(timing_cache.serialize())  # nothing usable on disk: ours replaces it
            return bytes(shared_cache.serialize())

        cache.merge_timing_cache(timing_cache_path, merge)
    return bytes(plan)


def load_engine(runtime, data: bytes, logger):
    """Deserialize an engine; ``EngineUnusable`` (so the cache rebuilds it) when TensorRT refuses it."""
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise cache.EngineUnusable(f"TensorRT cannot deserialize it: {last_error(logger)}")
    return engine


def _allow_fp16_trt10(trt, config) -> None:
    config.set_flag(trt.BuilderFlag.FP16)


def _batch_profile(builder, network, config, max_batch: int = 1) -> None:
    """A model with a dynamic batch dimension gets an optimisation profile of batch 1 to ``max_batch``,
    optimised for ``max_batch``."""
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape[1:]:
            raise SegnetError(f"input '{tensor.name}' has shape {list(shape)}; only the batch may be dynamic")
        if shape and shape[0] == -1:
            profile = profile or builder.create_optimization_profile()
            one, most = (1, *shape[1:]), (max_batch, *shape[1:])
            profile.set_shape(tensor.name, one, most, most)
    if profile is None and max_batch > 1:
        raise SegnetError(f"the model has no input with a dynamic batch axis for --batch-size {max_batch}")
    if profile is not None:
        config.add_optimization_profile(profile)


def _parser_error(error) -> str:
    where = f" (node {error.node()} '{error.node_name()}', {error.node_operator()})" if error.node() >= 0 else ""
    return f"{error.desc()}{where}"
