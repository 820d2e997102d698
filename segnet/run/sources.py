"""Where a run's images come from and where its pictures go: files, folders, globs and videos in; image
files, folders and videos out. Everything is checked before any image is processed."""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import UsageError
from ..image_io import READ_EXTENSIONS, image_format, read_image, write_image
from .pipeline import Job, prefetch, timed

log = logging.getLogger(__name__)


SEQUENCE = re.compile(r"%(0\d+)?i")  # jetson's numbered outputs: out_%i.jpg, frame_%04i.png


def expand_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], bool]:
    """The input files of a path, folder or glob (or a list of paths), and whether it names a collection
    (a folder, a glob or a list) rather than one file. Folders and globs take the images among their files;
    what they leave out is said in a status line."""
    if not isinstance(spec, (str, os.PathLike)):
        files = [Path(p) for p in spec]
        missing = [str(p) for p in files if not p.is_file()]
        if not files or missing:
            raise UsageError(f"{missing[0] if missing else 'no inputs'}: no such file")
        return files, True
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        return _images_among(sorted(f for f in path.iterdir() if f.is_file()), text, "in this directory"), True
    if path.exists():
        return [path], False
    if glob.has_magic(text):
        matches = sorted(Path(f) for f in glob.glob(text) if Path(f).is_file())
        if not matches:
            raise UsageError(f"{text}: no files match this pattern")
        return _images_among(matches, text, "matching this pattern"), True
    raise UsageError(f"{text}: no such file or directory")


def _images_among(files: list[Path], spec: str, where: str) -> list[Path]:
    images = [f for f in files if f.suffix.lower() in READ_EXTENSIONS]
    others = [f.name for f in files if f.suffix.lower() not in READ_EXTENSIONS]
    if not images:
        raise UsageError(f"{spec}: no images {where} ({', '.join(READ_EXTENSIONS)})")
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        log.info("%s: left out %d file(s) that are not images (%s)", spec, len(others), shown)
    return images


def output_kind(output: str | os.PathLike) -> str:
    """What an output names, by the rule the README states: ``sequence`` (holds ``%i`` or ``%04i``), ``video``
    (a video extension), ``image`` (another extension), or ``folder`` (an existing folder, a trailing ``/``,
    or no extension at all)."""
    from .video import is_video

    text = os.fspath(output)
    path = Path(text)
    if len(os.fsencode(path.name)) > 255:
        raise UsageError(f"{text}: the file name is longer than file systems allow (255 bytes)")
    if SEQUENCE.search(path.name):
        return "sequence"
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        return "folder"
    return "video" if is_video(path) else "image"


def sequence_name(pattern: Path, index: int) -> Path:
    """``pattern`` with its ``%i``/``%04i`` replaced by ``index`` (jetson numbers from 0)."""
    return pattern.with_name(SEQUENCE.sub(lambda m: f"{index:{m.group(1) or ''}d}", pattern.name, count=1))


def plan_outputs(inputs: list[Path], several: bool, output: str | os.PathLike | None) -> list[Path | None]:
    """Where each input image's picture goes, checked before any work: the format is writable, the folder
    exists (created if missing) and accepts files, no output overwrites an input, no two outputs collide.

    A folder gets each picture under the input's name, in sub-folders mirroring the inputs' folders below
    their common folder (so ``"g*/x.jpg"`` cannot collide); a sequence numbers them in input order; one
    image file takes exactly one input."""
    if output is None:
        return [None] * len(inputs)
    text = os.fspath(output)
    kind = output_kind(output)
    if kind == "video":
        raise UsageError(f"{text}: a video output needs a video input; give an image, a folder or a sequence "
                         "like out_%04i.jpg as output")
    if kind == "image" and len(inputs) > 1:
        raise UsageError(f"{text}: {len(inputs)} inputs cannot all be written to one picture; give a folder "
                         f"({Path(text).stem}/) or a numbered sequence ({Path(text).stem}_%04i{Path(text).suffix})")
    out = Path(text)
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise UsageError(f"{text}: not a folder (a file of that name exists)")
        base = Path(os.path.commonpath([p.resolve().parent for p in inputs]))
        targets = [out / p.resolve().relative_to(base) for p in inputs]
    elif kind == "sequence":
        targets = [sequence_name(out, i) for i in range(len(inputs))]
    else:
        targets = [out]
    for t in {t.suffix.lower(): t for t in targets}.values():
        image_format(t)
    refuse_overwriting(inputs, targets)
    for folder in dict.fromkeys(t.parent for t in targets):
        check_writable(folder)
    return list(targets)


def refuse_overwriting(inputs: list[Path], targets: list[Path]) -> None:
    """A UsageError naming both paths when an output is an input or two outputs are the same file."""
    sources = {_identity(p): p for p in inputs}
    seen: dict[tuple, Path] = {}
    for source, target in zip(inputs, targets):
        key = _identity(target)
        if key in sources:
            raise UsageError(f"{target} would overwrite the input {sources[key]}: choose another output")
        if key in seen:
            raise UsageError(f"{seen[key]} and {source} would both be written to {target}: choose another output")
        seen[key] = source


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return (str(path.resolve()),)


def _same(value):
    return value


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {folder}: {exc.strerror or exc}") from None


def without_existing(pairs: list[tuple[Path, Path | None]]) -> tuple[list, int]:
    """``skip_existing``: the (input, output) pairs whose output is not there yet, and how many were left."""
    kept = [(i, o) for i, o in pairs if o is None or not o.exists()]
    return kept, len(pairs) - len(kept)


class FileSource:
    """Image files in, image files out (or none), each written by the worker that renders it."""

    def __init__(self, inputs: list[Path], outputs: list[Path | None], several: bool, skip_existing: bool):
        pairs = list(zip(inputs, outputs))
        self.skipped = 0
        if skip_existing:
            pairs, self.skipped = without_existing(pairs)
        self.pairs, self.several = pairs, several
        self.total: int | None = len(pairs)
        self.pictures = any(o is not None for _, o in pairs)  # asked once, not a scan per image

    def jobs(self) -> Iterator[Job]:
        for index, (path, target) in enumerate(self.pairs):
            yield Job(index, str(path), functools.partial(read_image, path), target)

    def write(self, job: Job, picture) -> None:
        if job.target is not None:
            timed(job, "encode", write_image, picture, job.target)

    def write_in_order(self, job: Job) -> None:
        pass

    def wants_pictures(self) -> bool:
        return self.pictures

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoSource:
    """Every frame of a video in; a video (H.264, same frame rate), a folder of PNG frames or a numbered
    sequence out."""

    def __init__(self, path: Path, output: str | os.PathLike | None):
        from . import video

        self.path, self.several = path, True
        self.rate, self.total = video.probe(path)
        self.writer: video.VideoWriter | None = None
        self.folder: Path | None = None
        self.sequence: Path | None = None
        self.skipped = 0
        if output is None:
            return
        kind, out = output_kind(output), Path(output)
        if kind == "image":
            raise UsageError(f"{output}: the frames of a video cannot all be written to one picture; give a "
                             f"folder ({out.stem}/), a numbered sequence ({out.stem}_%04i{out.suffix}) or a video "
                             "file (.mp4)")
        if kind == "video":
            refuse_overwriting([path], [out])
            check_writable(out.parent)
            self.writer = video.VideoWriter(out, self.rate)
        elif kind == "sequence":
            image_format(out)
            check_writable(out.parent)
            self.sequence = out
        else:
            if out.exists() and not out.is_dir():
                raise UsageError(f"{output}: not a folder (a file of that name exists)")
            check_writable(out)
            self.folder = out

    def _target(self, index: int) -> Path | int:
        if self.folder is not None:
            return self.folder / f"{self.path.stem}-{index:06d}.png"
        if self.sequence is not None:
            return sequence_name(self.sequence, index)
        return index

    def jobs(self) -> Iterator[Job]:
        from . import video

        for index, frame in enumerate(prefetch(video.frames(self.path), 8)):
            yield Job(index, f"{self.path.name} frame {index}", functools.partial(_same, frame), self._target(index))

    def write(self, job: Job, picture) -> None:
        if self.writer is None:
            timed(job, "encode", write_image, picture, job.target)
        else:
            job.picture = picture  # encoded in order by write_in_order

    def write_in_order(self, job: Job) -> None:
        if job.picture is not None and self.writer is not None:
            timed(job, "encode", self.writer.write, job.picture)

    def wants_pictures(self) -> bool:
        return self.writer is not None or self.folder is not None or self.sequence is not None

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
