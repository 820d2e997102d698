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
from .pipeline import Job, timed

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
    """What an output names, by the rule the README states: ``stream`` (``udp://``, ``rtp://``, ``rtsp://``,
    ``display://`` and other URIs), ``sequence`` (holds ``%i`` or ``%04i``), ``video`` (a video extension),
    ``image`` (another extension), or ``folder`` (an existing folder, a trailing ``/``, or no extension)."""
    from .outputs import local_path, scheme
    from .video import is_video

    text = local_path(os.fspath(output))
    if scheme(text):
        return "stream"
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


def plan_outputs(inputs: list[Path], several: bool, output: str | os.PathLike | None,
                 classes: bool = False) -> list[Path | None]:
    """Where each input image's picture goes, checked before any work: the format is writable, the folder
    exists (created if missing) and accepts files, no output overwrites an input, no two outputs collide.

    A folder gets each picture under the input's name, in sub-folders mirroring the inputs' folders below
    their common folder (so ``"g*/x.jpg"`` cannot collide); a sequence numbers them in input order; one
    image file takes exactly one input. ``classes``: the pictures are class indices, which only lossless
    PNG keeps (a folder gets ``<name>.png``)."""
    from .outputs import local_path

    if output is None:
        return [None] * len(inputs)
    text = local_path(os.fspath(output))
    kind = output_kind(output)
    if kind == "video":
        raise UsageError(f"{text}: a video output needs a video input; give an image, a folder or a sequence "
                         "like out_%04i.jpg as output")
    if kind == "stream":
        raise UsageError(f"{text}: streams and windows take the frames of videos, cameras and network streams; "
                         "write pictures to a file or a folder")
    if classes and kind in ("image", "sequence") and Path(text).suffix.lower() != ".png":
        from .outputs import lossless_error

        raise lossless_error(text)
    if kind == "image" and len(inputs) > 1:
        raise UsageError(f"{text}: {len(inputs)} inputs cannot all be written to one picture; give a folder "
                         f"({Path(text).stem}/) or a numbered sequence ({Path(text).stem}_%04i{Path(text).suffix})")
    out = Path(text)
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise UsageError(f"{text}: not a folder (a file of that name exists)")
        base = Path(os.path.commonpath([p.resolve().parent for p in inputs]))
        targets = [out / p.resolve().relative_to(base) for p in inputs]
        if classes:
            targets = [t.with_suffix(".png") for t in targets]
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


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {folder}: {exc.strerror or exc}") from None


def without_existing(pairs: Sequence[tuple[Path | str, Path | None]]) -> tuple[list, int]:
    """``skip_existing``: the (input, output) pairs whose output is not there yet, and how many were left."""
    kept = [(i, o) for i, o in pairs if o is None or not o.exists()]
    return kept, len(pairs) - len(kept)


class FileSource:
    """Image files (or one image URL) in, image files out (or none), each written by the worker that renders
    it."""

    live = False
    dropped = failed_sources = 0

    def __init__(self, inputs: Sequence[Path | str], outputs: list[Path | None], several: bool, skip_existing: bool,
                 timeout: float = 10.0):
        pairs = list(zip(inputs, outputs))
        self.skipped = 0
        if skip_existing:
            pairs, self.skipped = without_existing(pairs)
        self.pairs, self.several, self.timeout = pairs, several, timeout
        self.total: int | None = len(pairs)
        self.pictures = any(o is not None for _, o in pairs)  # asked once, not a scan per image

    def jobs(self) -> Iterator[Job]:
        from .streams import fetch_image

        for index, (item, target) in enumerate(self.pairs):
            load = functools.partial(read_image, item) if isinstance(item, Path) else \
                functools.partial(fetch_image, item, self.timeout)
            yield Job(index, str(item), load, target)

    def write(self, job: Job, picture) -> None:
        if job.target is not None:
            timed(job, "encode", write_image, picture, job.target)

    def write_in_order(self, job: Job) -> None:
        pass

    def details(self, job: Job) -> dict:
        return {"source": job.name}

    def done(self, job: Job) -> None:
        pass

    @property
    def jobs_planned(self) -> bool:
        return bool(self.pairs)

    def wants_pictures(self) -> bool:
        return self.pictures

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def plan_url_output(url: str, output: str | os.PathLike | None, classes: bool) -> Path | None:
    """Where the picture of an image URL goes, by the rule for one image file; a folder takes the URL's file
    name."""
    from urllib.parse import unquote, urlsplit

    if output is None:
        return None
    name = Path(unquote(urlsplit(url).path)).name or "image.png"
    stand_in = Path(tempfile.gettempdir(), f".segnet-url-{os.getpid()}", name)  # never a real file
    (target,) = plan_outputs([stand_in], False, output, classes)
    return target
