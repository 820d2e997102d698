"""Where a run's images come from and where its pictures go: files, folders, globs and videos in; image
files, folders and videos out. Everything is checked before any image is processed."""

from __future__ import annotations

import functools
import glob
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import UsageError
from ..image_io import READ_EXTENSIONS, image_format, read_image, write_image
from .pipeline import Job, prefetch, timed


def expand_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], bool]:
    """The input files of a path, folder or glob (or a list of paths), and whether it names several."""
    if not isinstance(spec, (str, os.PathLike)):
        files = [Path(p) for p in spec]
        missing = [str(p) for p in files if not p.is_file()]
        if not files or missing:
            raise UsageError(f"{missing[0] if missing else 'no inputs'}: no such file")
        return files, len(files) > 1
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in READ_EXTENSIONS)
        if not files:
            raise UsageError(f"{text}: no images in this directory ({', '.join(READ_EXTENSIONS)})")
        return files, True
    if path.exists():
        return [path], False
    if glob.has_magic(text):
        files = sorted(Path(f) for f in glob.glob(text) if Path(f).is_file())
        if not files:
            raise UsageError(f"{text}: no files match this pattern")
        return files, True
    raise UsageError(f"{text}: no such file or directory")


def plan_outputs(inputs: list[Path], several: bool, output: str | os.PathLike | None) -> list[Path | None]:
    """Where each input's picture goes, checked before any work: the extension is writable and the
    directory exists (created if missing) and accepts files."""
    if output is None:
        return [None] * len(inputs)
    text = os.fspath(output)
    out = Path(text)
    if several or out.is_dir() or text.endswith(("/", os.sep)):
        if out.exists() and not out.is_dir():
            raise UsageError(f"{text}: several inputs need an output directory, and this is a file")
        paths = [out / f.name for f in inputs]
        folder = out
    else:
        paths, folder = [out], out.parent
    for t in {t.suffix.lower(): t for t in paths}.values():
        image_format(t)
    check_writable(folder)
    return list(paths)


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
    """Every frame of a video in; a video (H.264, same frame rate) or a directory of frames out."""

    def __init__(self, path: Path, output: str | os.PathLike | None):
        from . import video

        self.path, self.several = path, True
        self.rate, self.total = video.probe(path)
        self.writer: video.VideoWriter | None = None
        self.folder: Path | None = None
        self.skipped = 0
        if output is not None and video.is_video(output):
            out = Path(output)
            check_writable(out.parent)
            self.writer = video.VideoWriter(out, self.rate)
        elif output is not None:
            self.folder = Path(output)
            if self.folder.exists() and not self.folder.is_dir():
                raise UsageError(f"{output}: frames of a video go to a directory (or give a video file name)")
            check_writable(self.folder)

    def jobs(self) -> Iterator[Job]:
        from . import video

        for index, frame in enumerate(prefetch(video.frames(self.path), 8)):
            target = self.folder / f"{self.path.stem}-{index:06d}.png" if self.folder else index
            yield Job(index, f"{self.path.name} frame {index}", functools.partial(_same, frame), target)

    def write(self, job: Job, picture) -> None:
        if self.folder is not None:
            timed(job, "encode", write_image, picture, job.target)
        else:
            job.picture = picture  # encoded in order by write_in_order

    def write_in_order(self, job: Job) -> None:
        if job.picture is not None and self.writer is not None:
            timed(job, "encode", self.writer.write, job.picture)

    def wants_pictures(self) -> bool:
        return self.writer is not None or self.folder is not None

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
