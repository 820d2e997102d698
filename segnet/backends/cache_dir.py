"""Where segnet keeps the files it derives from a model: TensorRT engines and their caches, FP16 and INT8 copies."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import SegnetError, option


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
    """The folder for what is derived from ``model_path``: ``override`` (``--engine-cache``), else
    ``$SEGNET_CACHE``, else the user cache directory. Never the model's own folder (jetson writes engines
    there): that may be a source checkout's ``models/``, where git and a wheel build would pick the files up, or
    a folder shared read-only. Files are told apart by the model's hash in their names, not by their folder."""
    chosen = override or os.environ.get("SEGNET_CACHE")
    if chosen:
        return _ready(Path(chosen).expanduser(), writable,
                      f"choose another with {option('engine_cache')} or SEGNET_CACHE")
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


def derived_model(folder: Path, stem: str, key: str, make: Callable[[], bytes], *, keep: int = 4) -> str | bytes:
    """A model derived from another (``make()``'s serialized ONNX), kept in ``folder`` under ``stem`` and a hash
    of ``key`` (everything the bytes depend on), so a later start loads it instead of importing onnx and
    rebuilding it (about a second). Returns the file's path, or the bytes themselves where they cannot be kept
    (a full disk): a cache never fails a run. At most ``keep`` files of one ``stem`` stay, the least recently
    used going first."""
    import hashlib

    from filelock import FileLock

    from ..util import atomic_write

    path = folder / f"{stem}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    try:
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                os.utime(path)  # most recently used
                return str(path)
            data = make()
            try:
                atomic_write(path, data)
            except SegnetError:
                return data
            _prune(folder, stem, keep)
            return str(path)
    except OSError:  # the lock itself cannot be taken (a folder gone read-only meanwhile)
        return make()


def _prune(folder: Path, stem: str, keep: int) -> None:
    kept = sorted(folder.glob(f"{stem}.*.onnx"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[keep:]:
        for each in (old, Path(str(old) + ".lock")):
            each.unlink(missing_ok=True)


def file_identity(path: str | Path) -> str:
    """What tells a file's versions apart without reading it: its resolved path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
