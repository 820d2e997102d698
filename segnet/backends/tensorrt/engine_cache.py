"""Where TensorRT engines are cached, under which key, and how they are written and read safely.

No TensorRT here: the TensorRT module passes in how to build and how to load, so all of this is tested on
machines without a GPU. Compared with jetson's cache (SPEC section 6): writes are atomic, a second process
waits for the first one's build instead of building too, a damaged engine is rebuilt, and a read-only model
folder moves the cache to the user's cache directory instead of silently not caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from ...errors import SegnetError, option
from ...util import BadJSON, atomic_write, describe_os_error, locked, read_json

log = logging.getLogger(__name__)

#: Bump when what we store, or how we build it, changes: old engines are then simply not found.
FORMAT_VERSION = 1

T = TypeVar("T")


class EngineUnusable(Exception):
    """A cached engine that is damaged or that this TensorRT cannot load; it is removed and rebuilt once."""


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. Engines are only valid for the same TensorRT version and
    GPU model, and differ with precision, input shape and builder settings."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str  # "fp16-flag" (TensorRT 10), "fp16-model" (TensorRT 11), "fp32"
    input_shape: tuple[int, ...]
    builder_settings: tuple[tuple[str, object], ...]
    format_version: int = FORMAT_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def engine_name(self, model_path: str | Path) -> str:
        """Readable, then unique: ``fcn_resnet18.onnx.fp16-flag.trt10.16.1.11.sm90.<digest>.engine``."""
        major, minor = self.compute_capability
        return (f"{Path(model_path).name}.{self.precision}.trt{self.tensorrt_version}.sm{major}{minor}."
                f"{self.digest()}.engine")


def timing_cache_name(tensorrt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> str:
    """One timing cache per TensorRT version and GPU, shared by every model in the folder."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    return f"timing.trt{tensorrt_version}.{slug}.sm{compute_capability[0]}{compute_capability[1]}.cache"


def is_writable(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (``os.access`` says yes to root on a read-only
    mount and cannot see every ACL)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_dir(model_path: str | Path, override: str | Path | None = None, *,
              writable: Callable[[Path], bool] = is_writable) -> Path:
    """The engine folder: ``override`` (``--engine-cache``), else ``$SEGNET_CACHE``, else the model's folder
    when writable (where jetson users look), else the user cache directory."""
    chosen = override or os.environ.get("SEGNET_CACHE")
    if chosen:
        return _ready(Path(chosen).expanduser(), writable,
                      f"choose another with {option('engine_cache')} or SEGNET_CACHE")
    beside = Path(model_path).resolve().parent
    if writable(beside):
        return beside
    import platformdirs

    return _ready(Path(platformdirs.user_cache_dir("segnet")) / "engines", writable,
                  f"set one with {option('engine_cache')} or SEGNET_CACHE")


def _ready(folder: Path, writable: Callable[[Path], bool], fix: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegnetError(f"cannot create engine cache folder {folder}: {exc.strerror or exc} ({fix})") from None
    if not writable(folder):
        raise SegnetError(f"engine cache folder {folder} is not writable ({fix})")
    return folder


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

    ``load`` raises ``EngineUnusable`` for bytes TensorRT cannot deserialize; a damaged cached engine is
    reported in one line, removed and rebuilt once. ``building`` is the status line logged before a build.
    """
    def waiting() -> None:
        log.info(f"waiting for another segnet process to finish the TensorRT engine {path}")

    with locked(str(path) + ".lock", f"another segnet process to build the TensorRT engine {path}", waiting):
        if path.exists() or _meta_path(path).exists():
            try:
                engine = load(read_engine(path))
                log.info(f"loaded TensorRT engine from cache {path}")
                return engine
            except EngineUnusable as exc:
                log.info(f"cached TensorRT engine {path} is unusable ({exc}): removing it and building it again")
                remove_engine(path)
        log.info(building)
        data = build()
        save_engine(path, data, key)
        try:
            return load(data)
        except EngineUnusable as exc:
            raise SegnetError(f"TensorRT cannot load the engine it just made for {path.name}: {exc}") from None


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
