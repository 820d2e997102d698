"""What several parts of segnet need and must do the same way: the one atomic writer, file hashes.

Every file segnet writes (pictures, frames, videos, engines and their records, timing and runtime caches,
FP16 models, downloads, manifests, trained networks) goes through ``atomic_write`` or ``atomic_path``:

- the data goes to a temporary file beside the destination, named so that it fits wherever the
  destination's name fits (a 255-byte file name still works);
- every write is checked to have written all of its bytes, then the file is flushed and synced, so a full
  disk fails the write instead of leaving a cut-off file;
- the file gets the permissions any new file gets under the user's umask (``mkstemp`` makes them
  owner-only), so shared folders work for several users;
- only then is it renamed over the destination; on any failure (or Ctrl-C, or SIGTERM, which the CLI turns
  into Ctrl-C) the temporary file is removed and the destination is as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import SegnetError

_CHUNK = 1 << 20
_NAME_MAX = 255  # bytes in a file name on every file system segnet is used on
_umask_lock = threading.Lock()
_mode: int | None = None


def new_file_mode() -> int:
    """``0o666`` less the process umask: the permissions ``open()`` would give a new file."""
    global _mode
    if _mode is None:
        with _umask_lock:  # os.umask can only be read by setting it
            mask = os.umask(0o022)
            os.umask(mask)
        _mode = 0o666 & ~mask
    return _mode


def temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden, unique name beside ``path``, no longer than the longest name the folder takes."""
    token = secrets.token_hex(4)
    tail = f".{token}{suffix}"
    room = _NAME_MAX - len(os.fsencode(tail)) - 1
    stem = os.fsencode(path.name)[:max(room, 0)].decode(errors="ignore")
    return path.with_name(f".{stem}{tail}")


class ShortWrite(OSError):
    """A write that stored fewer bytes than it was given (a full disk that did not say so)."""


class _CheckedFile:
    """A binary file whose ``write`` raises unless every byte was written."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        written = self._raw.write(view)
        if written is not None and written != len(view):
            raise ShortWrite(28, f"wrote {written} of {len(view)} bytes (disk full?)")
        return len(view)

    def fileno(self) -> int:
        # Writers that find a file descriptor write to it directly (Pillow's JPEG encoder does), where a
        # short write goes unnoticed: make them write through ``write``.
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):  # seek, tell, flush... of the real file
        return getattr(self._raw, name)


class atomic_path:
    """A temporary file name beside ``path`` (``.tmp``) for a writer that wants a name (a video muxer):
    ``commit()`` syncs it and renames it to ``path``, ``discard()`` removes it. As a context manager it
    commits when the block ends without error and discards otherwise. ``suffix`` keeps an extension the
    writer reads (``.mp4``)."""

    def __init__(self, path: str | os.PathLike, suffix: str | None = None):
        self.path = Path(path)
        self.tmp = temporary_name(self.path, suffix if suffix is not None else ".tmp")

    def commit(self) -> None:
        try:
            if not self.tmp.exists():
                raise SegnetError(f"cannot write {self.path}: nothing was written")
            _publish(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise SegnetError(f"cannot write {self.path}: {describe_os_error(exc)}") from None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path: str | os.PathLike, data: bytes | memoryview | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes into the binary file it is given) to ``path``
    atomically: readers see the old file or the whole new one, never a part. OSErrors (a full disk, a
    folder that is not writable, a directory where the file should be) become one-line SegnetErrors."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "xb") as raw:
            checked = _CheckedFile(raw)
            if callable(data):
                data(checked)  # type: ignore[arg-type]
            else:
                checked.write(data)
    except OSError as exc:
        raise SegnetError(f"cannot write {path}: {describe_os_error(exc)}") from None


def _publish(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, new_file_mode())
    if path.is_dir():
        raise IsADirectoryError(21, "a directory is in the way", str(path))
    os.replace(tmp, path)


def describe_os_error(exc: OSError) -> str:
    """A few words for an OSError, without its errno number and repeated path."""
    if isinstance(exc, ShortWrite):
        return exc.strerror or str(exc)
    reason = exc.strerror or str(exc)
    if exc.errno == 28:
        reason = "no space left on the device"
    elif exc.errno == 36:
        reason = "file name too long"
    elif exc.errno == 13:
        reason = "permission denied"
    elif exc.errno == 5:
        reason = "input/output error (a failing disk or network file system?)"
    return reason


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class BadJSON(SegnetError):
    """A file that was read but does not hold usable JSON (not UTF-8, not JSON, nested too deeply): its
    contents are wrong, as opposed to the file being missing or unreadable."""


def read_json(path: str | os.PathLike, what: str = "data") -> object:
    """A JSON file's value; a file that is missing, unreadable or a directory is a one-line SegnetError, one
    that is not UTF-8, not JSON or nested too deeply a one-line ``BadJSON``."""
    import json

    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise SegnetError(f"cannot read {path}: {describe_os_error(exc)}") from None
    except UnicodeDecodeError:
        raise BadJSON(f"{path}: not UTF-8 text (expected JSON {what})") from None
    except RecursionError:
        raise BadJSON(f"{path}: nested too deeply to be {what}") from None
    except ValueError as exc:
        raise BadJSON(f"{path}: not valid JSON ({exc})") from None


@contextlib.contextmanager
def locked(path: str | os.PathLike, what: str, on_wait: Callable[[], None] | None = None,
           limit_variable: str = "SEGNET_LOCK_TIMEOUT") -> Iterator[None]:
    """Hold the inter-process file lock ``path`` for the block. ``on_wait()`` runs once when another process
    holds it; waiting is limited by ``SEGNET_LOCK_TIMEOUT``, or by ``limit_variable`` (a key of
    ``options.LIMITS``) when that is shorter. A lock that cannot be taken (a directory in its place, no
    permission) or a wait past the limit is a one-line SegnetError saying what was waited for (``what``) and
    which variable gives more time. The lock is released however the block ends. The lock file follows the
    umask, so users who share the folder can share the lock."""
    import filelock

    from .options import limit

    path = Path(path)
    if path.is_dir():
        raise SegnetError(f"{path} is a directory where segnet keeps a lock file: remove it")
    timeout = limit("SEGNET_LOCK_TIMEOUT")
    bound = limit(limit_variable)
    if bound is not None and (timeout is None or bound < timeout):
        timeout = bound
    else:
        limit_variable = "SEGNET_LOCK_TIMEOUT"
    lock = filelock.FileLock(os.fspath(path), mode=new_file_mode())
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise SegnetError(f"gave up after {timeout:g} s waiting for {what} (lock {path}); if no segnet process "
                          f"is still at it, try again, or wait longer with {limit_variable}") from None
    except OSError as exc:
        raise SegnetError(f"cannot take the lock {path}: {describe_os_error(exc)}") from None
    try:
        yield
    finally:
        lock.release()


# -- secrets in URLs -------------------------------------------------------------------------------------------

#: Query parameters whose value is a secret (``?token=...``, ``&X-Amz-Signature=...``); matched without case
#: on the name's last word, so ``access_token``, ``api-key`` and ``sig`` are all caught.
_SECRET_PARAMETER = re.compile(r"(?:^|[_.-])(?:token|key|secret|password|passwd|pwd|pass|sig|signature|auth|"
                               r"credential|credentials|session)$", re.IGNORECASE)
#: ``scheme://user:password@`` or ``scheme://user@`` inside any text (a message that quotes a URL)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#'\"]+)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;][^=&;#\s'\"]+)=(?P<value>[^&;#\s'\"]*?)(?=[&;#\s'\")]|:\s|:?$)")


def shown_url(url: str) -> str:
    """``url`` as it may be printed, logged, recorded or written to a file: without the user name and
    password it may carry (``rtsp://user:secret@host/`` -> ``rtsp://host/``) and with the values of
    token-like query parameters (``token``, ``key``, ``signature``, ...) replaced by ``***``; for every
    scheme. Plain paths come back as they are. The URL itself is still what is opened."""
    return redact(url)


def redact(text: str) -> str:
    """``text`` (a message, a URL) without any URL's user name and password, and with secret query values
    replaced by ``***``."""
    if "://" not in text:
        return text
    text = _USERINFO.sub(lambda m: m["scheme"], text)

    def query(match: re.Match) -> str:
        name = match["name"]
        return f"{name}=***" if _SECRET_PARAMETER.search(name[1:]) and match["value"] else match[0]

    return _QUERY_SECRET.sub(query, text)


def cuda_device_visible() -> bool:
    """True when the NVIDIA driver reports at least one GPU (checked without any CUDA Python package)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
