"""One plan, made once, before the network loads: the inputs become a feed (``feeds.py``) and every output
is checked (``outputs.py``). Nothing is read and nothing but output folders is created here."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError, option
from ..options import Options, check_processes, limit
from ..util import redact
from .feeds import Feed, FrameFeeds, ImageFeed, SourceReader
from .inputs import ImageFiles, ImageURL, InputKind, SourceList, expand_inputs, parse_input, read_list
from .outputs import FrameOutput, PictureFiles, plan_frames, plan_outputs, plan_url_output
from .outputs import VideoFile as OutputVideo
from .uris import SEQUENCE, local_path, output_kind, scheme
from .writes import Paths, check_log_file

log = logging.getLogger(__name__)

Inputs = str | os.PathLike | Sequence[str | os.PathLike]

__all__ = ["Feed", "Inputs", "plan", "plan_files", "plan_frame_feeds"]


def plan(inputs: Inputs, output: str | os.PathLike | None, options: Options,
         writes: Sequence[tuple[str, str | os.PathLike]] = ()) -> Feed:
    """What the run reads and where it writes, every part checked before the network is loaded. ``run``
    takes the feed it returns in place of the inputs, so a caller (the console) can look at it first.
    ``writes``: other files the caller will write during the run, as ``(how messages name it, path)``
    (the console's ``--legend``). No file written may be read or written twice (``writes.Paths``); the
    output folders are made only once all of it is checked."""
    _check_types(inputs, output, options)
    check_processes(options)
    paths = Paths()
    feed = _plan(inputs, output, options, paths)
    plan_files(writes, options, paths)
    return feed


def plan_files(writes: Sequence[tuple[str, str | os.PathLike]], options: Options | None = None,
               paths: Paths | None = None) -> None:
    """The files a run writes besides its outputs (``writes``, and the ``--stats-file``), checked against
    everything ``paths`` holds; then every output folder is made."""
    from ..image_io import image_format

    paths = paths if paths is not None else Paths()
    for owner, path in writes:
        target = Path(local_path(os.fspath(path)))
        image_format(target)  # a usage error before the network loads
        paths.write(target, owner)
    if options is not None and options.stats_file is not None:
        owner = option("stats_file", str(options.stats_file))
        check_log_file(options.stats_file, owner)
        paths.write(options.stats_file, owner)
    paths.check()
    paths.create()


def _check_types(inputs, output, options) -> None:
    """Library misuse (``run(None)``, ``run(b"x")``, ``options={...}``) is a TypeError that says what to give."""
    what = "inputs: a path, a folder, a glob, a URL, a list of paths, or a feed from plan()"
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for item in items:
        if isinstance(item, bytes):
            raise TypeError(f"give {what} as str or os.PathLike, not bytes (os.fsdecode turns them into a str)")
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"give {what}; not {type(item).__name__}")
    if not items:
        raise UsageError("no inputs: give at least one path")
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"give output as a str or os.PathLike (or None for no pictures), not {type(output).__name__}")
    if output is not None and not os.fspath(output):
        raise UsageError("an empty output names no file: give a picture, a folder, a sequence like out_%04i.jpg, "
                         "a video, a stream or display://0 (or no output at all)")
    if not isinstance(options, Options):
        raise TypeError(f"options must be a segnet.Options, not {type(options).__name__} (Options(**values), or "
                        "give the options as keywords)")


def _plan(inputs: Inputs, output: str | os.PathLike | None, options: Options, paths: Paths) -> Feed:
    classes = "classes" in options.visualize
    entries: list[tuple[InputKind, str | os.PathLike | None]] | None = None
    if isinstance(inputs, (str, os.PathLike)):
        source = parse_input(inputs, options)
        if isinstance(source, SourceList):
            paths.read(source.path)
            entries = list(read_list(source.path, options))
        elif source.frames:
            entries = [(source, output)]
        elif isinstance(source, ImageURL):
            _no_loop(options, source.shown)
            _no_ray(options, source.shown, "image URLs")
            target = plan_url_output(source.spec, output, classes)
            if target is not None:
                paths.write(target, source.shown)
            return ImageFeed([source.spec], [target], False, False, options.input_timeout)
    else:
        items = [parse_input(i, options) for i in inputs]
        if len(items) == 1 and not items[0].frames and not isinstance(items[0], ImageFiles):
            return plan(inputs[0], output, options)  # a list of one image URL or list of sources is that input
        _one_kind(items)
        if items and any(not isinstance(s, ImageFiles) for s in items):
            entries = [(s, None) for s in items] if len(items) > 1 else [(items[0], output)]
    spec = redact(os.fspath(inputs)) if isinstance(inputs, (str, os.PathLike)) else "the inputs"
    if options.input_codec is not None and not any(s.spec.lower().startswith("rtp://") for s, _ in entries or []):
        raise UsageError(f"{option('input_codec', options.input_codec)} says what an rtp:// input carries; {spec} "
                         "has no rtp:// source (other sources say what they carry themselves)")
    if entries is not None:
        _no_ray(options, entries[0][0].shown)
        return plan_frame_feeds(entries, output, options, paths)
    # file:// names a path
    texts = [local_path(os.fspath(inputs))] if isinstance(inputs, (str, os.PathLike)) else \
        [local_path(os.fspath(i)) for i in inputs]
    one = texts[0] if isinstance(inputs, (str, os.PathLike)) else None
    files, several = expand_inputs(one if one is not None else texts, options.recursive)
    _no_loop(options, os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else str(files[0]))
    folder = Path(one) if one is not None and Path(one).is_dir() else None
    if options.recursive and output is not None and output_kind(output) == "folder":
        files = _outside(files, Path(local_path(os.fspath(output))))
    # a folder's tree is mirrored from the folder itself, even when all its images sit in one sub-folder
    outputs = plan_outputs(files, several, output, classes, base=folder)
    if options.ray is not None:
        from .video import is_video

        if any(is_video(p) for p in files):
            raise UsageError(f"{option('ray')} runs image folders; run videos without it")
    for text in texts:  # a folder or a glob takes the pictures written into it as inputs next time
        if Path(text).is_dir():
            paths.read(text, folder=True)
        elif not Path(text).exists() and glob.has_magic(text):
            paths.read(text, pattern=text)
    for file in files:
        paths.read(file)
    if output is not None:  # the folder the user named: said when more than its last level is made
        named = Path(local_path(os.fspath(output)))
        paths.folder(named if output_kind(output) == "folder" else named.parent, named=True)
    for file, target in zip(files, outputs):
        if target is not None:
            paths.write(target, str(file))
    return ImageFeed(files, outputs, several, options.skip_existing, options.input_timeout)


def _outside(files: list[Path], output: Path) -> list[Path]:
    """The files not inside the output folder: a recursive run into a folder inside its input must not take
    the pictures an earlier run wrote there as inputs."""
    out = output.resolve()
    kept = [f for f in files if not f.resolve().is_relative_to(out)]
    if len(kept) < len(files):
        log.info("%s: left out %d picture(s) already in the output folder", output, len(files) - len(kept))
    if not kept:
        raise UsageError(f"{output}: every input image is inside the output folder; give another output")
    return kept


def _one_kind(items: list[InputKind]) -> None:
    """Several inputs are all image files (folders, globs) or all frame sources (videos, cameras, streams)."""
    alone = next((s for s in items if not s.frames and not isinstance(s, ImageFiles)), None)
    if alone is not None:
        raise UsageError(f"{alone.spec}: {'an image URL' if isinstance(alone, ImageURL) else 'a list of sources'} is "
                         "a run of its own; give it as the only input")
    if any(s.frames for s in items) and not all(s.frames for s in items):
        image = next(s for s in items if not s.frames)
        other = next(s for s in items if s.frames)
        raise UsageError(f"{image.spec} and {other.spec}: images and frame sources (videos, cameras, streams) "
                         "cannot be mixed in one run; run them apart")


def _no_loop(options: Options, spec: str) -> None:
    if options.input_loop not in (0, 1):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; {spec} is not one")


def _no_ray(options: Options, spec: str, what: str = "videos") -> None:
    if options.ray is not None:
        raise UsageError(f"{option('ray')} runs image folders; run {what} without it ({spec})")


def plan_frame_feeds(entries: Sequence[tuple[InputKind, str | os.PathLike | None]], output: str | os.PathLike | None,
                     options: Options, paths: Paths | None = None) -> FrameFeeds:
    """The run of one or more videos, cameras and streams, every output checked now. A source without an
    output of its own writes to the run's ``output``; with several sources that must be a folder, and each
    source gets a sub-folder named after it. No two sources may share an output."""
    from .inputs import VideoFile
    from .video import probe

    own_paths = paths is None  # called alone: check and make the folders here
    paths = paths if paths is not None else Paths()
    several = len(entries) > 1
    if options.input_loop not in (0, 1) and not any(isinstance(s, VideoFile) for s, _ in entries):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; "
                         f"{entries[0][0].shown} is not one")
    if several and output is not None and output_kind(output) != "folder" and any(o is None for _, o in entries):
        raise UsageError(f"{output}: {len(entries)} sources cannot share one output; give a folder (each source "
                         "gets a sub-folder) or an output for each source in the list (SOURCE OUTPUT)")
    if several and output is not None and output_kind(output) == "folder":
        paths.folder(Path(local_path(os.fspath(output))), named=True)  # each source's sub-folder below it
    readers = []
    seen: dict[str, str] = {}
    labels: set[str] = set()
    for number, (source, own) in enumerate(entries):
        label, n = source.label, 1
        while label in labels:  # two cameras called video0 on different hosts: video0, video0-2
            n += 1
            label = f"{source.label}-{n}"
        labels.add(label)
        target = own if own is not None else output
        if several and own is None and output is not None:
            target = os.path.join(local_path(os.fspath(output)), label, "")  # a folder, even as 127.0.0.1-5000
        if target is not None and not os.fspath(target).startswith("display://"):
            text = os.fspath(target)
            key = text if scheme(text) else os.path.abspath(local_path(text))
            if key in seen:
                raise UsageError(f"{seen[key]} and {source.shown} would both be written to {redact(text)}: give each "
                                 "source its own output")
            seen[key] = source.shown
        video_file: Path | None = source.path if isinstance(source, VideoFile) else None
        prefix = video_file.stem if video_file is not None and not several else label
        frame_output = plan_frames(target, prefix, options, video_file)
        _frame_writes(paths, source, frame_output)
        if video_file is not None:
            _, count = probe(video_file)  # a file that is not a video fails here, before the network loads
            loops = options.input_loop
            source.total = None if count is None or loops < 0 else count * max(loops, 1)
        readers.append(SourceReader(number, source, frame_output, options))
    most_open = int(limit("SEGNET_MAX_OPEN_SOURCES") or 16)
    live = [r.source for r in readers if r.live]
    if len(live) > most_open:  # a camera or stream cannot wait for its turn
        raise UsageError(f"{len(live)} live sources (cameras and streams, such as {live[0].shown}) are more than "
                         f"segnet reads at once ({most_open}); split the list, or raise SEGNET_MAX_OPEN_SOURCES")
    if own_paths:
        plan_files((), None, paths)
    return FrameFeeds(readers, most_open)


def _frame_writes(paths: Paths, source: InputKind, output: FrameOutput | None) -> None:
    """What one source reads and writes, for the one rule."""
    from .inputs import SDPStream, VideoFile

    if isinstance(source, (VideoFile, SDPStream)):
        paths.read(source.path)
    if isinstance(output, OutputVideo):
        paths.write(output.file.path, source.shown)
    elif isinstance(output, PictureFiles):
        if output.sequence is not None:
            paths.write(output.sequence.parent, source.shown, _sequence_names(output.sequence.name))
        elif output.folder is not None:
            paths.write(output.folder, source.shown, re.escape(output.prefix) + r"-\d{6,}\.png")


def _sequence_names(name: str) -> str:
    """A regular expression of the names a sequence pattern (``out_%04i.png``) writes."""
    match = SEQUENCE.search(name)
    assert match is not None
    return re.escape(name[:match.start()]) + r"\d+" + re.escape(name[match.end():])
