"""Where TensorRT engines are cached, under which key, and how they are written and read safely.

No TensorRT here: the TensorRT module passes in how to build and how to load, so all of this is tested on
machines without a GPU. Compared with jetson's cache (SPEC section 6): writes are atomic, a second process
waits for the first one's build instead of building too, a damaged engine is rebuilt, an intact engine that
this machine cannot load now (a driver problem) is reported and kept, and a read-only model folder moves the
cache to the user's cache directory instead of silently not caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from ...errors import SegnetError, option
from ...util import BadJSON, atomic_write, describe_os_error, locked, read_json
from ..cache_dir import cache_dir, is_writable

log = logging.getLogger(__name__)

#: Bump when what we store, or how we build it, changes: old engines are then simply not found.
#: 2: the key names the flavour and the compute-capability targets.
FORMAT_VERSION = 2

T = TypeVar("T")


class EngineUnusable(Exception):
    """A cached engine that is damaged or that this TensorRT cannot load; it is removed and rebuilt once."""


class EngineLoadFailed(SegnetError):
    """An intact engine that cannot be loaded here now (an old or broken driver, too little GPU memory): said in
    one line, and the engine is kept, since rebuilding would not help."""


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. A TensorRT 10/11 engine is only valid for the same TensorRT
    version and GPU model; a TensorRT-RTX engine for the same TensorRT-RTX version and the compute capabilities it
    was built for (its ``targets``), whatever machine built it. Both differ with precision, input shape and
    builder settings."""

    model_sha256: str
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    tensorrt_version: str
    gpu_name: str  # the GPU model for TensorRT 10/11; "" for TensorRT-RTX (its engines are for targets)
    targets: tuple[tuple[int, int], ...]  # compute capabilities: the GPU's; for TensorRT-RTX () is portable
    precision: str  # "fp16-flag" (TensorRT 10), "fp16-model" (TensorRT 11, TensorRT-RTX), "fp32"
    input_shape: tuple[int, ...]
    builder_settings: tuple[tuple[str, object], ...]
    format_version: int = FORMAT_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def engine_name(self, model_path: str | Path) -> str:
        """Readable, then unique: ``fcn_resnet18.onnx.fp16-flag.trt10.16.1.11.sm90.<digest>.engine``,
        ``fcn_resnet18.onnx.fp16-model.rtx1.7.1.116.portable.<digest>.engine``; an engine of the fused graph
        says so after the precision: ``fcn_resnet18.onnx.fp32.fused-overlay.rtx1.7.1.116.portable.<digest>.engine``."""
        return f"{self.name_prefix(model_path)}{self.targets_tag()}.{self.digest()}.engine"

    def name_prefix(self, model_path: str | Path) -> str:
        """The part of the engine name that the targets and digest follow."""
        tag = "rtx" if self.flavour == "tensorrt_rtx" else "trt"
        graph = dict(self.builder_settings).get("graph")  # absent: the network's own graph
        graph_part = f"{graph}." if graph else ""
        return f"{Path(model_path).name}.{self.precision}.{graph_part}{tag}{self.tensorrt_version}."

    def targets_tag(self) -> str:
        return "-".join(f"sm{a}{b}" for a, b in self.targets) or "portable"


def parse_targets_tag(tag: str) -> tuple[tuple[int, int], ...] | None:
    """``"sm89-sm120"`` -> ``((8, 9), (12, 0))``, ``"portable"`` -> ``()``; None for anything else."""
    if tag == "portable":
        return ()
    found = [re.fullmatch(r"sm(1\d|\d)(\d)", part) for part in tag.split("-")]
    if not all(found):
        return None
    return tuple((int(m.group(1)), int(m.group(2))) for m in found if m)


def timing_cache_name(tensorrt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> str:
    """One timing cache per TensorRT version and GPU, shared by every model in the folder."""
    return f"timing.trt{tensorrt_version}.{_slug(gpu_name)}.sm{compute_capability[0]}{compute_capability[1]}.cache"


def runtime_cache_path(engine_path: Path, gpu_name: str, compute_capability: tuple[int, int]) -> Path:
    """TensorRT-RTX's runtime cache (the kernels it compiles for this GPU when the engine first runs), beside its
    engine, one per engine and GPU: ``<engine>.<gpu>.sm89.runtime.cache``."""
    stem = engine_path.name.removesuffix(".engine")
    return engine_path.with_name(f"{stem}.{_slug(gpu_name)}.sm{compute_capability[0]}{compute_capability[1]}"
                                 ".runtime.cache")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_engine(path: Path, data: bytes, key: EngineKey) -> None:
    """Store a serialized engine (as is, so ``trtexec --loadEngine`` still reads it) and, after it, a small
    JSON record of its size, hash and key. An engine without a matching record is treated as damaged."""
    atomic_write(path, data)
    record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "key": asdict(key)}
    atomic_write(_meta_path(path), json.dumps(record, indent=1).encode())


def read_engine(path: Path) -> bytes:
    """The engine's bytes, checked against its record; ``EngineUnusable`` says what is wrong with them. A file
    that cannot be read (another user's, a directory in its place) is a SegnetError: it is not ours to delete."""
    meta = _meta_path(path)
    if not _readable(path, "engine"):
        raise EngineUnusable("the engine file is missing")
    if not _readable(meta, "engine record"):
        raise EngineUnusable("its record is missing, so it may be incomplete")
    try:
        record = read_json(meta, "an engine record")
        size, sha256 = int(record["size"]), record["sha256"]  # type: ignore[index]
    except (BadJSON, ValueError, KeyError, TypeError):
        raise EngineUnusable("its record is damaged") from None
    data = path.read_bytes()
    if len(data) != size:
        raise EngineUnusable(f"it is truncated ({len(data)} of {size} bytes)")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise EngineUnusable("its contents are corrupt (checksum mismatch)")
    return data


def _readable(path: Path, what: str) -> bool:
    """Whether ``path`` exists (False: it does not); a SegnetError when it is there but cannot be read."""
    try:
        if path.is_dir():
            raise SegnetError(f"{path} is a directory where segnet keeps a TensorRT {what}: remove it")
        with open(path, "rb"):
            return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SegnetError(f"cannot read the TensorRT {what} {path}: {describe_os_error(exc)} (made by another "
                          f"user? use another folder with {option('engine_cache')} or SEGNET_CACHE)") from None


def remove_engine(path: Path) -> None:
    path.unlink(missing_ok=True)
    _meta_path(path).unlink(missing_ok=True)


def load_or_build(path: Path, key: EngineKey, build: Callable[[], bytes], load: Callable[[bytes], T], *,
                  building: str) -> T:
    """Load the engine cached at ``path``, or build, save and load it, holding ``path``'s file lock so a
    second process waits for the first one's build and then loads it.

    ``load`` raises ``EngineUnusable`` for bytes TensorRT will never load (damaged, another TensorRT's): such a
    cached engine is reported in one line, removed and rebuilt once. It raises ``EngineLoadFailed`` when the
    engine is fine but this machine cannot load it now (the driver): that is reported and the engine kept.
    ``building`` is the status line logged before a build.
    """
    with _build_lock(path):
        if path.exists() or _meta_path(path).exists():
            try:
                engine = load(read_engine(path))
                log.info(f"loaded TensorRT engine from cache {path}")
                return engine
            except EngineUnusable as exc:
                log.info(f"cached TensorRT engine {path} is unusable ({exc}): removing it and building it again")
                remove_engine(path)
            except EngineLoadFailed as exc:
                raise EngineLoadFailed(f"{exc} (the engine {path} is kept)") from None
        log.info(building)
        data = build()
        save_engine(path, data, key)
        try:
            return load(data)
        except EngineUnusable as exc:
            raise SegnetError(f"TensorRT cannot load the engine it just made for {path.name}: {exc}") from None
        except EngineLoadFailed as exc:
            raise EngineLoadFailed(f"{exc} (the engine {path} is kept)") from None


def build_into_cache(path: Path, key: EngineKey, build: Callable[[], bytes], *, building: str) -> bool:
    """Build the engine into the cache at ``path`` unless an intact one is already there (nothing is loaded):
    True when it was built. Under the same lock as ``load_or_build``."""
    with _build_lock(path):
        if path.exists() or _meta_path(path).exists():
            try:
                read_engine(path)
                return False
            except EngineUnusable as exc:
                log.info(f"cached TensorRT engine {path} is unusable ({exc}): building it again")
                remove_engine(path)
        log.info(building)
        data = build()
        save_engine(path, data, key)
        return True


def _build_lock(path: Path):
    """``path``'s build lock (a time limit on the wait); says so when another process holds it."""
    def waiting() -> None:
        log.info(f"waiting for another segnet process to finish the TensorRT engine {path}")

    return locked(str(path) + ".lock", f"another segnet process to build the TensorRT engine {path}", waiting)


def read_timing_cache(path: Path) -> bytes:
    """The shared timing cache, or ``b""`` when there is none yet (writes are atomic, so no lock)."""
    if not _readable(path, "timing cache"):
        return b""
    return path.read_bytes()


def merge_timing_cache(path: Path, merge: Callable[[bytes], bytes]) -> None:
    """Replace the shared timing cache by ``merge(current contents)``, under its lock, so that two builds
    finishing together both keep what they measured."""
    with locked(str(path) + ".lock", f"another segnet process to update the timing cache {path}"):
        atomic_write(path, merge(read_timing_cache(path)))


def read_runtime_cache(path: Path) -> bytes:
    """A TensorRT-RTX runtime cache, or ``b""`` when there is none yet or it cannot be read (it is only a cache:
    TensorRT-RTX compiles again and the next save replaces it)."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def save_runtime_cache(path: Path, data: bytes) -> None:
    """Write a runtime cache atomically under its lock. TensorRT-RTX cannot merge two of them: the last process
    to save wins, and each saves everything it loaded plus what it compiled."""
    with locked(str(path) + ".lock", f"another segnet process to save the runtime cache {path}"):
        atomic_write(path, data)


__all__ = ["EngineKey", "EngineLoadFailed", "EngineUnusable", "build_into_cache", "cache_dir", "is_writable",
           "load_or_build", "parse_targets_tag", "read_runtime_cache", "runtime_cache_path", "save_runtime_cache"]
