"""Download, check and install pretrained networks of the zoo.

``install`` puts one network into ``<models dir>/<name>/`` so that it is either fully there or not there
at all: the archive is streamed to a temporary file beside the destination (resuming a dropped transfer
with an HTTP Range request), checked (gzip and tar intact, no unsafe members, the three network files
present, the ONNX model valid), unpacked into a temporary folder and renamed into place. A failure leaves
the models directory as it was. ``verify`` checks an installed network against the manifest written at
install time (no checksums are published upstream, so the first download is the reference).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ..errors import SegnetError
from ..options import limit
from ..progress import progress
from ..util import atomic_write, describe_os_error, file_sha256, locked, read_json, shown_url
from .registry import (
    MODEL_FILE,
    NETWORK_FILES,
    SHIPPED_EXTRA_FILES,
    SHIPPED_FOLDERS,
    NetworkInfo,
    is_installed,
    models_dir,
    network_dir,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = ".segnet-manifest.json"
MIRROR_ENV = "SEGNET_MODEL_MIRROR"

_CHUNK = 1 << 16
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_STALE_AGE_S = 3600  # temp files this old under the lock belong to a process that died
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL before moving on to the next. Only failures that can change (a dropped
    connection, a timeout, a 5xx or 429 answer) are tried again; every failed try counts, including one that
    got some bytes (the next try resumes from them)."""

    attempts: int | None = None  # tries per URL; None: SEGNET_DOWNLOAD_TRIES (default 5)
    backoff: float = 1.0  # seconds before the second try, doubled for each later one
    max_backoff: float = 15.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    deadline: float | None = None  # seconds for the whole install, every URL; None: SEGNET_DOWNLOAD_DEADLINE


DEFAULT_RETRY = RetryPolicy()


class _SourceError(Exception):
    """This URL or file cannot provide the network; the next one may."""


class _Transient(Exception):
    """A failure worth retrying on the same URL."""


class _BadArchive(SegnetError):
    """The archive is damaged, unsafe, or not a segnet network."""


def candidate_urls(info: NetworkInfo, mirror: str | None = None) -> list[str]:
    """Where to look for ``info``'s archive, in order: the mirror (``mirror`` or ``$SEGNET_MODEL_MIRROR``,
    a base URL or folder holding ``<archive>.tar.gz``), the primary URL, then the GitHub release mirror. A
    network that ships with segnet has none: no archive of it exists anywhere."""
    if info.ships_with_segnet:
        return []
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    found = [f"{mirror.rstrip('/')}/{info.archive}.tar.gz" if mirror else None, info.url, info.mirror_url]
    return list(dict.fromkeys(u for u in found if u))


def install(
    info: NetworkInfo,
    root: str | os.PathLike | None = None,
    *,
    mirror: str | None = None,
    urls: list[str] | None = None,
    archive: str | os.PathLike | None = None,
    force: bool = False,
    retry: RetryPolicy | None = None,
) -> Path:
    """Install ``info`` into ``<root>/<info.name>/`` (root: ``models_dir(root)``) and return that folder.

    Sources: ``archive`` (a local ``.tar.gz``) if given, else ``urls`` if given, else ``candidate_urls``.
    An installed network is left alone unless ``force``. Status goes to the ``segnet`` logger, progress to
    ``segnet.progress``. Raises ``SegnetError`` with one line saying what was tried and what to do.
    """
    root = models_dir(root)
    dest = root / info.name
    if not force and is_installed(info, root):
        return dest
    if archive is not None:
        sources = [os.fspath(archive)]
    else:
        sources = list(urls) if urls is not None else candidate_urls(info, mirror)
    if not sources and info.ships_with_segnet:
        raise SegnetError(
            f"{info.name} ships with segnet (in {network_dir(info, root)}): there is nothing to download; "
            f"'segnet-download-models --verify {info.name}' checks its files, reinstalling segnet restores them"
        )
    if not sources:
        raise SegnetError(
            f"{info.name} has no download URL; get {info.archive}.tar.gz and run "
            f"'segnet-download-models --archive FILE {info.name}', or set {MIRROR_ENV}"
        )
    created: list[Path] = []
    try:
        created = _make_dirs(root)
        with _network_lock(info, root) as lock:
            if not force and is_installed(info, root):
                return dest  # another process installed it while we waited
            lock.check_others(archive is None)
            _sweep_stale(root, info.name)
            try:
                _install_from(info, root, sources, force=force, retry=retry or DEFAULT_RETRY,
                              from_archive=archive is not None)
            except SegnetError as exc:
                lock.failed(str(exc))
                raise
            lock.succeeded()
    except BaseException as exc:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):  # the models directory, not the network: unwritable, full disk
            raise SegnetError(f"cannot install {info.name} into {root}: {_os_reason(exc)}; "
                              "choose another folder with --models-dir or SEGNET_MODELS") from exc
        raise
    return dest


def verify(info: NetworkInfo, root: str | os.PathLike | None = None) -> list[str]:
    """What is wrong with the installed ``info`` compared with its install manifest (a network that ships
    with segnet: with the checksums committed in the registry); empty when intact. Files that are not part of
    the network (an FP16 copy, a lock, anything a build or an older segnet left) are reported too: a wheel
    built from the checkout would ship them."""
    if info.ships_with_segnet:
        folder = network_dir(info, models_dir(root))
        expected = dict(info.shipped_sha256)
        what = "shipped"
        belongs = {*NETWORK_FILES, *SHIPPED_EXTRA_FILES, *SHIPPED_FOLDERS}
    else:
        folder = models_dir(root) / info.name
        if not folder.is_dir():
            return [f"not installed in {folder.parent}"]
        manifest, problem = _load_manifest(folder)
        if manifest is None:
            return [f"{problem}; reinstall with --force to record a new one"]
        expected = {name: entry["sha256"] for name, entry in manifest["files"].items()}
        what = "installed"
        belongs = {*NETWORK_FILES, MANIFEST_NAME}
    problems = []
    for name in NETWORK_FILES:
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing from {folder}")
        elif name not in expected:
            problems.append(f"{name} is not in the manifest")
        elif (actual := _sha256(path)) != expected[name]:
            problems.append(f"{name} was modified (sha256 {actual[:16]}, {what} {expected[name][:16]})")
    with contextlib.suppress(OSError):
        stray = sorted(entry.name for entry in folder.iterdir() if entry.name not in belongs)
        if stray:
            shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
            problems.append(f"unexpected {'file' if len(stray) == 1 else 'files'} in {folder}: {shown} (not part of "
                            "the network; segnet keeps what it derives in the user cache: remove them)")
    return problems


def read_manifest(info: NetworkInfo, root: str | os.PathLike | None = None) -> dict | None:
    """The install manifest of ``info``, or None when there is none or it is unreadable or damaged."""
    return _load_manifest(models_dir(root) / info.name)[0]


def _load_manifest(folder: Path) -> tuple[dict | None, str]:
    """``(manifest, "")`` with every value segnet reads checked for its type, or ``(None, what is wrong)``."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None, f"no {MANIFEST_NAME} (installed by hand?)"
    try:
        data = read_json(path, "a manifest")
    except SegnetError as exc:
        return None, str(exc)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict):
        problem = "it is not a JSON object"
    elif not isinstance(data.get("archive_sha256", ""), str):
        problem = "its archive_sha256 is not text"
    elif not isinstance(files, dict):
        problem = "its files are not a JSON object"
    elif not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
        problem = "its files lack a sha256 text each"
    else:
        return data, ""
    return None, f"{path} is damaged ({problem})"


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        return f"unreadable: {describe_os_error(exc)}"


# -- sources -------------------------------------------------------------------------------------------


def _install_from(info, root, sources, *, force, retry, from_archive) -> None:
    tried = []
    session = None
    seconds = float(retry.deadline or limit("SEGNET_DOWNLOAD_DEADLINE") or 0)
    deadline = time.monotonic() + seconds
    try:
        for n, source in enumerate(sources):
            if time.monotonic() > deadline:
                tried.append(f"{shown_url(source)} (not tried: the {seconds:g} s deadline had passed; "
                             "SEGNET_DOWNLOAD_DEADLINE gives more)")
                continue
            try:
                local = _local_path(source)
                if local is not None:
                    if not local.is_file():
                        raise _SourceError("no such file")
                    log.info(f"installing {info.name} from {local}")
                    _install_archive(info, local, root, f"file:{local.name}", force=force)
                    return
                if session is None:
                    import requests

                    session = requests.Session()
                    session.headers["User-Agent"] = "segnet-download-models"
                log.info(f"downloading {info.name} from {shown_url(source)}")
                fd, part = tempfile.mkstemp(dir=root, prefix=f".{info.name}.", suffix=".part")
                os.close(fd)
                try:
                    _download(session, source, Path(part), retry, label=info.name, deadline=deadline)
                    _install_archive(info, Path(part), root, shown_url(source), force=force)
                finally:
                    Path(part).unlink(missing_ok=True)
                return
            except (_SourceError, _BadArchive) as exc:
                tried.append(f"{shown_url(source)} ({exc})")
                if n + 1 < len(sources):
                    log.info(f"  failed: {exc}; trying the next source")
    finally:
        if session is not None:
            session.close()
    if from_archive:
        raise SegnetError(f"cannot install {info.name} from {tried[0]}")
    raise SegnetError(
        f"could not download {info.name}: tried {'; '.join(tried)}. Download {info.archive}.tar.gz by "
        f"hand and run 'segnet-download-models --archive FILE {info.name}', or set {MIRROR_ENV} to a "
        "server or folder that has it"
    )


def _local_path(source: str) -> Path | None:
    """The file a source names, or None for an http(s) URL."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(url2pathname(parts.path))
    if len(scheme) > 1:  # one letter is a Windows drive
        raise _SourceError(f"unsupported URL scheme '{scheme}:'")
    return Path(source).expanduser()


def _download(session, url: str, dest: Path, retry: RetryPolicy, *, label: str, deadline: float) -> None:
    """Stream ``url`` into ``dest``; after a dropped connection, ask for the rest with a Range request.
    Bounded: ``retry.attempts`` failed tries, the install's ``deadline`` (``time.monotonic``), and
    ``SEGNET_MAX_ARCHIVE_BYTES`` for the file."""
    import requests
    import urllib3

    network_errors = (
        requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
        ConnectionError, TimeoutError,
    )
    attempts = retry.attempts or int(limit("SEGNET_DOWNLOAD_TRIES") or 1)
    most = int(limit("SEGNET_MAX_ARCHIVE_BYTES") or 0)
    stall = float(limit("SEGNET_DOWNLOAD_STALL") or 0)
    heard = time.monotonic()  # when this URL last sent something (an answer, body bytes)
    failures = 0
    validator = None  # ETag or Last-Modified of the first answer: resume only the same file (If-Range)
    bar = progress(None, label, unit="B", bytes=True)
    try:
        while True:
            have = dest.stat().st_size
            headers = {"Accept-Encoding": "identity"}  # the bytes of the .tar.gz itself, never re-encoded
            if have:
                headers["Range"] = f"bytes={have}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                # no single wait may outlast the stall budget or the deadline: a server that accepts and never
                # answers costs those, not tries x read_timeout
                left = max(0.05, min(heard + stall, deadline) - time.monotonic())
                timeout = (min(retry.connect_timeout, left), min(retry.read_timeout, left))
                with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
                    heard = time.monotonic()
                    offset, total = _body_span(resp, have, dest)
                    if total is not None and total > most:
                        raise _SourceError(_too_big(f"is {total:,} bytes", most))
                    validator = validator or _validator(resp)
                    bar.reset(total)
                    bar.update(offset)
                    with open(dest, "r+b") as out:
                        out.seek(offset)
                        out.truncate()
                        size = offset
                        # read1 (urllib3 2) returns what one receive gave, so the deadline is checked often
                        read = getattr(resp.raw, "read1", resp.raw.read)
                        while chunk := read(_CHUNK, decode_content=False):
                            heard = time.monotonic()
                            size += len(chunk)
                            if size > most:
                                raise _SourceError(_too_big(f"sent more than {most:,} bytes", most))
                            _check_deadline(deadline)
                            out.write(chunk)
                            bar.update(len(chunk))
                        out.flush()
                        os.fsync(out.fileno())
                size = dest.stat().st_size
                if total is not None and size != total:
                    raise _Transient(f"got {size} of {total} bytes")
                return
            except (_Transient, *network_errors) as exc:
                reason = str(exc) if isinstance(exc, _Transient) else _network_reason(exc)
                _check_deadline(deadline)
                if time.monotonic() >= heard + stall:
                    raise _SourceError(f"no answer: nothing received for {stall:g} s (a stalled server; "
                                       "SEGNET_DOWNLOAD_STALL gives more time)") from exc
                if _final(exc):  # offline, nothing listening, a redirect loop, a bad URL: trying again won't help
                    raise _SourceError(reason) from exc
                failures += 1  # every failed try counts, also one that got some bytes (the next one resumes)
                if failures >= attempts:
                    raise _SourceError(reason + (f", {failures} tries" if failures > 1 else "")) from exc
                delay = min(retry.backoff * 2 ** (failures - 1), retry.max_backoff)
                _check_deadline(deadline, delay)
                log.info("  %s; retrying in %gs", reason, delay)
                time.sleep(delay)
    finally:
        bar.close()


def _too_big(what: str, most: int) -> str:
    return f"the archive {what}, more than segnet downloads ({most:,}; raise it with SEGNET_MAX_ARCHIVE_BYTES)"


def _check_deadline(deadline: float, after: float = 0.0) -> None:
    if time.monotonic() + after > deadline:
        raise _SourceError("the download deadline passed (SEGNET_DOWNLOAD_DEADLINE gives more time)")


def _body_span(resp, have: int, dest: Path) -> tuple[int, int | None]:
    """Where the body of ``resp`` starts in the file and the file's total size (None: unknown)."""
    status = resp.status_code
    if status in _RETRY_STATUSES:
        raise _Transient(f"HTTP {status} {resp.reason}")
    if status == 416 and have:  # our partial file does not fit what the server has now: start over
        dest.write_bytes(b"")
        raise _Transient("server refused to resume")
    if status == 206:
        match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", resp.headers.get("Content-Range", ""))
        if not match or int(match[1]) != have:
            dest.write_bytes(b"")
            raise _Transient("server sent the wrong range")
        return have, None if match[3] == "*" else int(match[3])
    if status == 200:  # a fresh start, or a server that ignores Range: take the whole file again
        length = resp.headers.get("Content-Length", "")
        return 0, int(length) if length.isdigit() else None
    raise _SourceError(f"HTTP {status} {resp.reason}".rstrip())


def _validator(resp) -> str | None:
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return resp.headers.get("Last-Modified")


def _final(exc: BaseException) -> bool:
    """Whether trying ``exc``'s request again cannot help: the host name did not resolve, the host refused
    the connection, the redirects loop, the URL is unusable, TLS refused the server's certificate. urllib3
    nests the cause (requests' ConnectionError -> MaxRetryError.reason -> NewConnectionError -> OSError),
    so walk it."""
    import socket

    import requests

    if isinstance(exc, (requests.TooManyRedirects, requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader,
                        requests.exceptions.SSLError)):
        return True
    pending: list = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (socket.gaierror, ConnectionRefusedError)):
            return True
        pending += [getattr(error, "reason", None), error.__cause__, error.__context__, *error.args]
    return False


def _network_reason(exc: BaseException) -> str:
    """A few words for a network failure instead of urllib3's nested repr."""
    import requests
    import urllib3

    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.TooManyRedirects):
        return "redirected in a loop (too many redirects)"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return "not a usable URL"
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(exc))
    if errno_text:
        return errno_text[1].strip()
    if "resolve" in str(exc).lower():
        return "host not found"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                        http.client.HTTPException, ConnectionError)):
        return "connection dropped"
    return type(exc).__name__


# -- archives ------------------------------------------------------------------------------------------


def _install_archive(info: NetworkInfo, archive: Path, root: Path, source: str, *, force: bool) -> None:
    """Check ``archive``, unpack its network into a temporary folder in ``root``, rename it into place."""
    archive_sha = _check_gzip(archive)
    tmp = _new_folder(root, f".{info.name}.", ".tmp")
    try:
        files = _extract_network(archive, info.archive, tmp)
        _check_onnx(tmp / MODEL_FILE)
        previous = read_manifest(info, root)
        if previous and previous.get("archive_sha256") not in (None, archive_sha):
            log.info(f"note: this {info.archive}.tar.gz differs from the one installed before "
                     f"(sha256 {archive_sha[:16]}, was {previous['archive_sha256'][:16]})")
        manifest = {
            "segnet_manifest": 1,
            "network": info.name,
            "archive": f"{info.archive}.tar.gz",
            "archive_sha256": archive_sha,
            "archive_size": archive.stat().st_size,
            "source": source,
            "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        atomic_write(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        if _move_into_place(tmp, root / info.name, lambda: not force and is_installed(info, root)):
            log.info(f"installed {info.name} in {root / info.name}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_gzip(archive: Path) -> str:
    """The archive's sha256, after reading its whole gzip stream (catches truncation and bad CRCs, which
    a tar reader stopping at the end-of-archive marker would miss)."""
    sha256 = file_sha256(archive)
    if archive.stat().st_size == 0:
        raise _BadArchive("archive is empty")
    most = int(limit("SEGNET_MAX_ARCHIVE_BYTES") or 0)
    unpacked = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while block := stream.read(1 << 20):
                unpacked += len(block)
                if unpacked > most:  # before anything is written: a gzip bomb stops here
                    raise _BadArchive(f"it unpacks to more than {most:,} bytes; refusing a possible "
                                      "decompression bomb (raise the limit with SEGNET_MAX_ARCHIVE_BYTES)")
    except (OSError, EOFError, zlib.error) as exc:
        raise _BadArchive(f"not an intact gzip file: {exc}") from exc
    return sha256


def _extract_network(archive: Path, folder: str, out: Path) -> dict[str, dict]:
    """Copy ``<folder>/<file>`` for each network file out of the archive into ``out``; every member is
    checked first and only those regular files are ever written. Returns each file's sha256 and size."""
    found: dict[str, dict] = {}
    most_bytes = int(limit("SEGNET_MAX_ARCHIVE_BYTES") or 0)
    most_members = int(limit("SEGNET_MAX_ARCHIVE_MEMBERS") or 0)
    declared = 0
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > most_members:
                    raise _BadArchive(f"it has more than {most_members:,} members (raise the limit with "
                                      "SEGNET_MAX_ARCHIVE_MEMBERS)")
                declared += member.size if member.isreg() else 0
                if declared > most_bytes:  # what the tar headers declare, checked before writing it
                    raise _BadArchive(f"its files hold more than {most_bytes:,} bytes (raise the limit with "
                                      "SEGNET_MAX_ARCHIVE_BYTES)")
                problem = _unsafe_member(member)
                if problem:
                    raise _BadArchive(f"refusing unsafe archive member '{member.name}' ({problem})")
                parts = [p for p in member.name.replace("\\", "/").split("/") if p not in ("", ".")]
                if len(parts) == 2 and parts[0].lower() == folder.lower() and parts[1] in NETWORK_FILES:
                    if not member.isreg():
                        raise _BadArchive(f"'{member.name}' in the archive is not a regular file")
                    found[parts[1]] = _copy_stream(tar.extractfile(member), out / parts[1])
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _BadArchive(f"not a readable tar archive: {exc}") from exc
    missing = [f"{folder}/{name}" for name in NETWORK_FILES if name not in found]
    if missing:
        raise _BadArchive(f"archive lacks {', '.join(missing)}")
    return found


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` anywhere could write outside the target folder, or None."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path"
    if ".." in name.split("/"):
        return "path leaves the archive folder"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or fifo"
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        if target.startswith("/") or _DRIVE.match(target):
            return "link to an absolute path"
        # symlinks resolve from their own folder, hard links from the archive root
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return "link pointing outside the archive folder"
    elif not (member.isreg() or member.isdir()):
        return "unsupported member type"
    return None


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf decode or checker errors: either way not a usable model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _BadArchive(f"{MODEL_FILE} is not a valid ONNX model: {first}") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise _BadArchive(f"{MODEL_FILE} needs external weight files, which the archive does not carry")


def _move_into_place(tmp: Path, dest: Path, keep_existing) -> bool:
    """Rename the finished ``tmp`` folder to ``dest``. An existing ``dest`` is moved aside first and
    deleted only once the new folder is in place; returns False (dropping ``tmp``) when ``keep_existing()``
    says a complete install appeared meanwhile (another process without our lock)."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(tmp, dest)
        return True
    if keep_existing():
        return False
    aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
    try:
        os.rename(dest, aside / dest.name)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(aside / dest.name, dest)
            raise
    finally:
        _remove(aside)
    return True


# -- locking and housekeeping ---------------------------------------------------------------------------


class _HeldLock:
    """The install lock of one network, held: what the process before us left (a failure note beside the
    lock, so that a process that waited does not try the same stalled mirror again at once) and what we
    leave."""

    def __init__(self, info: NetworkInfo, path: Path):
        self.info, self.note = info, path.with_name(path.name + ".failed")
        self.waited_since: float | None = None  # wall-clock time our wait began; None: no wait

    def check_others(self, downloading: bool) -> None:
        """A failure of the process we waited for, noted after our wait began, is ours too (unless we install
        from a local archive, which its failure says nothing about)."""
        if self.waited_since is None or not downloading:
            return
        try:
            note = json.loads(self.note.read_text(encoding="utf-8"))
            at, reason = float(note["at"]), str(note["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if at >= self.waited_since:
            raise SegnetError(f"another process gave up installing {self.info.name} while this one waited for "
                              f"it, so this one did not try again: {reason}")

    def failed(self, reason: str) -> None:
        with contextlib.suppress(SegnetError):
            atomic_write(self.note, json.dumps({"at": time.time(), "reason": reason}).encode())

    def succeeded(self) -> None:
        self.note.unlink(missing_ok=True)


@contextlib.contextmanager
def _network_lock(info: NetworkInfo, root: Path):
    """An inter-process lock per (models dir, network): one process downloads, the others wait, at most
    ``SEGNET_DOWNLOAD_DEADLINE`` (as long as the one downloading may take) unless ``SEGNET_LOCK_TIMEOUT`` is
    shorter. Released when the block ends, also by an error.

    The lock file lives in the user cache folder, not in the models directory, so that the models
    directory (possibly a source checkout's ``models/``) never gains files. Lock files stay after release
    (deleting a lock file others may wait on breaks the lock); they are empty and harmless. When the cache
    folder is not writable the lock falls back to ``<models dir>/.locks/``.
    """
    key = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:16]
    path = _lock_folder(root) / f"{info.name}-{key}.lock"
    held = _HeldLock(info, path)

    def waiting() -> None:
        held.waited_since = time.time()
        log.info(f"waiting for another process installing {info.name}")

    with locked(path, f"another process installing {info.name}", waiting, "SEGNET_DOWNLOAD_DEADLINE"):
        yield held


def _lock_folder(root: Path) -> Path:
    import platformdirs

    for folder in (Path(platformdirs.user_cache_dir("segnet")) / "locks", root / ".locks"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            continue
    raise SegnetError(f"cannot create a lock folder in the user cache folder or in {root}")


def _sweep_stale(root: Path, name: str) -> None:
    """Remove temporary files and folders of ``name`` left by a process that was killed (we hold the lock,
    and the age check keeps away from anything a lock-less process might still be writing)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.(part|tmp|old)")
    now = time.time()
    for entry in root.iterdir():
        try:
            if pattern.fullmatch(entry.name) and now - entry.lstat().st_mtime > _STALE_AGE_S:
                _remove(entry)
        except OSError:
            pass


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and any missing parents; return those created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        created.append(path)
    return created


def _new_folder(parent: Path, prefix: str, suffix: str) -> Path:
    """A new uniquely named folder with the umask's permissions (mkdtemp's are owner-only, and this one
    becomes the installed network folder)."""
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _copy_stream(src, dest: Path) -> dict:
    digest = hashlib.sha256()
    size = 0

    def copy(out) -> None:
        nonlocal size
        for block in iter(lambda: src.read(_CHUNK), b""):
            out.write(block)
            digest.update(block)
            size += len(block)

    atomic_write(dest, copy)
    return {"sha256": digest.hexdigest(), "size": size}


def _os_reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text if exc.filename is None else f"{exc.filename}: {text}"
