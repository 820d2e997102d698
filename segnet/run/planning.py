"""One plan, made once, before the network loads: the inputs become a feed (``feeds.py``) and every output
is checked (``outputs.py``). Nothing is read and nothing but output folders is created here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError, option
from ..options import Options
from ..util import redact
from .feeds import Feed, FrameFeeds, ImageFeed, SourceReader
from .inputs import ImageFiles, ImageURL, InputKind, SourceList, expand_inputs, parse_input, read_list
from .outputs import plan_frames, plan_outputs, plan_url_output
from .uris import local_path, output_kind, scheme

Inputs = str | os.PathLike | Sequence[str | os.PathLike]

__all__ = ["Feed", "Inputs", "plan", "plan_frame_feeds"]


def plan(inputs: Inputs, output: str | os.PathLike | None, options: Options) -> Feed:
    """What the run reads and where it writes, every part checked before the network is loaded. ``run``
    takes the feed it returns in place of the inputs, so a caller (the console) can look at it first."""
    classes = "classes" in options.visualize
    entries: list[tuple[InputKind, str | os.PathLike | None]] | None = None
    if isinstance(inputs, (str, os.PathLike)):
        source = parse_input(inputs, options)
        if isinstance(source, SourceList):
            entries = list(read_list(source.path, options))
        elif source.frames:
            entries = [(source, output)]
        elif isinstance(source, ImageURL):
            _no_loop(options, source.shown)
            _no_ray(options, source.shown, "image URLs")
            return ImageFeed([source.spec], [plan_url_output(source.spec, output, classes)], False, False,
                             options.input_timeout)
    elif not isinstance(inputs, bytes):
        items = [parse_input(i, options) for i in inputs]
        if items and any(not isinstance(s, ImageFiles) for s in items):
            entries = [(s, None) for s in items] if len(items) > 1 else [(items[0], output)]
    spec = redact(os.fspath(inputs)) if isinstance(inputs, (str, os.PathLike)) else "the inputs"
    if options.input_codec is not None and not any(s.spec.lower().startswith("rtp://") for s, _ in entries or []):
        raise UsageError(f"{option('input_codec', options.input_codec)} says what an rtp:// input carries; {spec} "
                         "has no rtp:// source (other sources say what they carry themselves)")
    if entries is not None:
        _no_ray(options, entries[0][0].shown)
        return plan_frame_feeds(entries, output, options)
    # file:// names a path
    files, several = expand_inputs(local_path(os.fspath(inputs)) if isinstance(inputs, (str, os.PathLike))
                                   else [local_path(os.fspath(i)) for i in inputs])
    _no_loop(options, os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else str(files[0]))
    outputs = plan_outputs(files, several, output, classes)
    if options.ray is not None:
        from .video import is_video

        if any(is_video(p) for p in files):
            raise UsageError(f"{option('ray')} runs image folders; run videos without it")
    return ImageFeed(files, outputs, several, options.skip_existing, options.input_timeout)


def _no_loop(options: Options, spec: str) -> None:
    if options.input_loop not in (0, 1):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; {spec} is not one")


def _no_ray(options: Options, spec: str, what: str = "videos") -> None:
    if options.ray is not None:
        raise UsageError(f"{option('ray')} runs image folders; run {what} without it ({spec})")


def plan_frame_feeds(entries: Sequence[tuple[InputKind, str | os.PathLike | None]], output: str | os.PathLike | None,
                     options: Options) -> FrameFeeds:
    """The run of one or more videos, cameras and streams, every output checked now. A source without an
    output of its own writes to the run's ``output``; with several sources that must be a folder, and each
    source gets a sub-folder named after it. No two sources may share an output."""
    from .inputs import VideoFile
    from .video import probe

    several = len(entries) > 1
    if options.input_loop not in (0, 1) and not any(isinstance(s, VideoFile) for s, _ in entries):
        raise UsageError(f"{option('input_loop', options.input_loop)} replays video files; "
                         f"{entries[0][0].shown} is not one")
    if several and output is not None and output_kind(output) != "folder" and any(o is None for _, o in entries):
        raise UsageError(f"{output}: {len(entries)} sources cannot share one output; give a folder (each source "
                         "gets a sub-folder) or an output for each source in the list (SOURCE OUTPUT)")
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
            target = os.path.join(local_path(os.fspath(output)), label)
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
        if video_file is not None:
            _, count = probe(video_file)  # a file that is not a video fails here, before the network loads
            loops = options.input_loop
            source.total = None if count is None or loops < 0 else count * max(loops, 1)
        readers.append(SourceReader(number, source, frame_output, options))
    return FrameFeeds(readers)
