"""The one rule about what a run writes, checked once, before anything is written or created: no file the
run writes (pictures, frames, videos, sequences, the ``--legend`` picture, the ``--stats-file`` log) may be
one of its inputs, another of its outputs, or a file that an input folder or glob would take as an input.

``planning.plan`` collects every path the run reads (``Read``) and writes (``Write``) into one ``Paths``,
calls ``check()``, and only then ``create()``s the output folders, so a run refused at the last line of a
list has created nothing. Paths are compared as files (device and inode when they exist, so hard links and
symbolic links are caught), a numbered sequence or a folder of frames by the names it will write.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..image_io import READ_EXTENSIONS
from ..util import describe_os_error
from .video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Read:
    """What a run reads: a file, or (``folder``) a folder whose files it takes, or (``pattern``) a glob."""

    path: Path
    folder: bool = False
    pattern: str | None = None


@dataclass(frozen=True)
class Write:
    """What a run writes: the file ``path``, or, with ``names``, the files of folder ``path`` whose names
    match it (a sequence, a video's frames). ``owner``: what writes it, as messages say (the input whose
    picture it is, ``--legend``, ``--stats-file``)."""

    path: Path
    owner: str
    names: re.Pattern | None = None

    def shown(self) -> str:
        return str(self.path) if self.names is None else f"{self.path}{os.sep}{self.names.pattern}"


@dataclass
class Paths:
    """Every path one run reads and writes, and the folders it will create for its outputs."""

    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    named: set[Path] = field(default_factory=set)  # folders the user named (not mirrored or per-source ones)

    def read(self, path: str | os.PathLike, *, folder: bool = False, pattern: str | None = None) -> None:
        self.reads.append(Read(Path(path), folder, pattern))

    def write(self, path: str | os.PathLike, owner: str, names: str | None = None, folder: bool = False) -> None:
        """``path`` will be written (``names``: a regular expression of the file names written in folder
        ``path``); its folder (``path`` itself when ``folder``) is checked now and created by ``create()``."""
        target = Path(path)
        self.writes.append(Write(target, owner, re.compile(names) if names is not None else None))
        self.folder(target if folder or names is not None else target.parent)

    def folder(self, folder: Path, named: bool = False) -> None:
        if named:
            self.named.add(folder)
        if folder not in self.folders:
            check_folder(folder)
            self.folders.append(folder)

    def check(self) -> None:
        """The rule; a UsageError naming both paths at the first collision. Indexed by file identity, so a
        run of many thousand images is checked in linear time (each write against every read and every
        earlier write, as a lookup)."""
        identity = _Identities()
        files = [(r, identity(r.path)) for r in self.reads if not r.folder and r.pattern is None]
        first_file: dict[tuple, Read] = {}
        for r, rkey in files:
            first_file.setdefault(rkey, r)
        folders: dict[tuple, Read] = {}
        for r in self.reads:
            if r.folder:
                folders.setdefault(identity(r.path), r)
        patterns = [r for r in self.reads if r.pattern is not None]
        files_by_folder: dict[tuple, list[Read]] = {}
        for r, _ in files:
            files_by_folder.setdefault(identity(r.path.parent), []).append(r)
        singles: dict[tuple, tuple[int, Write]] = {}  # the first single file written, by identity
        singles_by_folder: dict[tuple, list[tuple[int, Write]]] = {}  # with their order
        named: dict[tuple, list[tuple[int, Write]]] = {}  # sequences and frame folders, by folder identity
        for order, w in enumerate(self.writes):
            key = identity(w.path)
            parent = key if w.names is not None else identity(w.path.parent)
            if w.names is None:
                replaced = first_file.get(key)
                if replaced is not None:
                    raise UsageError(f"{w.path} would overwrite the input {replaced.path}{_by(w)}: choose another "
                                     "output")
            else:
                for r in files_by_folder.get(key, ()):
                    if w.names.fullmatch(r.path.name) is not None:
                        raise UsageError(f"{w.path / r.path.name} would overwrite the input {r.path}{_by(w)}: "
                                         "choose another output")
            other = _earlier(w, key, parent, singles, singles_by_folder, named)
            if other is not None:
                where = other.path if other.names is None else w.path if w.names is None else w.shown()
                raise UsageError(f"{other.owner} and {w.owner} would both be written to {where}: choose "
                                 "another output")
            if w.names is None:
                singles.setdefault(key, (order, w))
                singles_by_folder.setdefault(parent, []).append((order, w))
            else:
                named.setdefault(key, []).append((order, w))
            into = folders.get(parent)
            if into is not None and (w.names is not None or _readable(w.path)):
                raise UsageError(f"{w.shown()}{_by(w)} would be written into the input folder {into.path}, "
                                 "whose pictures are the inputs: choose another output")
            for r in patterns:
                if w.names is None and fnmatch.fnmatch(os.path.abspath(w.path), os.path.abspath(str(r.pattern))) \
                        and _readable(w.path):
                    raise UsageError(f"{w.path}{_by(w)} would match the input pattern {r.pattern}: choose another "
                                     "output")

    def create(self) -> None:
        """The output folders, once everything is checked (as ``mkdir -p`` makes them). When a folder the user
        named needed more than its last level made, one status line says so: a mistyped parent (``outt/sub/``)
        would otherwise go unnoticed."""
        for folder in sorted(self.folders, key=lambda f: f not in self.named):
            missing = _missing(folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot write to output directory {folder}: {not_writable(folder, exc)}") from None
            if folder in self.named and len(missing) > 1:
                made = ", ".join(str(m) for m in reversed(missing[1:]))
                log.info("created the output folder %s (and %s above it, which did not exist either)", folder, made)


def _by(w: Write) -> str:
    return f" ({w.owner})" if w.owner.startswith("--") else ""


def _readable(path: Path) -> bool:
    """Whether a folder or glob run would take ``path`` as an input (a picture or a video)."""
    return path.suffix.lower() in READ_EXTENSIONS or path.suffix.lower() in VIDEO_EXTENSIONS


def _earlier(w: Write, key: tuple, parent: tuple, singles: dict[tuple, tuple[int, Write]],
            singles_by_folder: dict[tuple, list[tuple[int, Write]]],
            named: dict[tuple, list[tuple[int, Write]]]) -> Write | None:
    """The first earlier write that writes a file ``w`` writes too (``key``: ``w``'s identity, ``parent``: its
    folder's), or None."""
    if w.names is None:
        same = singles.get(key)
        found = [] if same is None else [same]
        found += [(o, s) for o, s in named.get(parent, ()) if s.names is not None and s.names.fullmatch(w.path.name)]
    else:
        found = [(o, s) for o, s in named.get(key, ()) if s.names is not None and s.names.pattern == w.names.pattern]
        found += [(o, s) for o, s in singles_by_folder.get(key, ()) if w.names.fullmatch(s.path.name)]
    return min(found, key=lambda item: item[0])[1] if found else None


class _Identities:
    """``_identity`` remembered for one check: thousands of outputs share one folder, and an output that does
    not exist yet (no file, no link) is its folder's resolved path and its name, without resolving it again."""

    def __init__(self):
        self.known: dict[Path, tuple] = {}
        self.resolved: dict[Path, str] = {}

    def __call__(self, path: Path) -> tuple:
        key = self.known.get(path)
        if key is None:
            key = self.known[path] = self._find(path)
        return key

    def _find(self, path: Path) -> tuple:
        if path.name not in ("", ".", "..") and path.parent != path and not os.path.lexists(path):
            folder = self.resolved.get(path.parent)
            if folder is None:
                folder = self.resolved[path.parent] = str(path.parent.resolve())
            return (os.path.join(folder, path.name),)
        return _identity(path)


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return (str(path.resolve()),)


def check_folder(folder: Path) -> None:
    """That files can be made in ``folder``, without making it: it, or the nearest folder above it that
    exists, is a folder that takes new files."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            break
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {folder}: {not_writable(folder, exc)}") from None


def _missing(folder: Path) -> list[Path]:
    """The levels of ``folder`` that do not exist yet, deepest first."""
    missing = []
    level = folder
    while not os.path.lexists(level) and level != level.parent:
        missing.append(level)
        level = level.parent
    return missing


def not_writable(folder: Path, exc: OSError) -> str:
    """Why a folder takes no new files, in words: a file where a folder should be, no permission, a read-only
    or special file system (``/proc`` answers "No such file or directory" for a folder that exists)."""
    import errno

    level = folder
    while not os.path.lexists(level) and level != level.parent:
        level = level.parent
    if os.path.lexists(level) and not level.is_dir():
        return f"{level} is a file, not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the folder does not accept files from this user)"
    if exc.errno == errno.EROFS:
        return "the folder does not accept files (read-only file system)"
    if level == folder and exc.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTDIR):
        return "the folder exists but does not accept files (a special file system, such as /proc or /sys)"
    return describe_os_error(exc)


def check_log_file(path: Path, owner: str) -> None:
    """A file that is appended to (``--stats-file``): a regular file or none yet. A FIFO, a socket or a
    device would block the run or take the records somewhere else, so it is refused."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"cannot write {owner} {path}: {describe_os_error(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"cannot write {owner} {path}: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        raise UsageError(f"cannot write {owner} {path}: it is {kind}, not a regular file (records go to a file; "
                         "--json prints them on stdout)")
