"""What an input or output string names, before anything is opened: its URI scheme, the path of a
``file://`` URL, and the kind of output a path names (the README's output naming rule)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import UsageError
from ..util import redact

SEQUENCE = re.compile(r"%(0\d+)?i")  # jetson's numbered outputs: out_%i.jpg, frame_%04i.png


def scheme(text: str) -> str:
    """The URI scheme of an input or output (``""`` for a plain path; a Windows drive letter is a path)."""
    head, sep, _ = text.partition("://")
    return head.lower() if sep and len(head) > 1 and head.replace("+", "").isalnum() else ""


def split_url(text: str) -> SplitResult:
    """``urlsplit(text)`` with its port read, where a bad port (``:99999``, ``:x``) or host (``[::1:5000``)
    is a one-line UsageError naming the URL (its password left out) instead of urllib's ValueError."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError as exc:
        raise UsageError(f"{redact(text)}: not a valid URL ({exc}; a port is a number from 1 to 65535 and an "
                         "IPv6 host is written in brackets, [::1]:5000)") from None
    if "\0" in text or "%00" in text:
        raise UsageError(f"{redact(text)}: not a valid URL (it holds a NUL character)")
    return parts


def local_path(text: str) -> str:
    """``file:///x/y.mp4`` -> ``/x/y.mp4``; anything else as it is."""
    if scheme(text) == "file":
        parts = urlsplit(text)
        return unquote(parts.netloc + parts.path)
    return text


def output_kind(output: str | os.PathLike) -> str:
    """What an output names, by the rule the README states: ``stream`` (``udp://``, ``rtp://``, ``rtsp://``,
    ``display://`` and other URIs), ``sequence`` (holds ``%i`` or ``%04i``), ``video`` (a video extension),
    ``image`` (another extension), or ``folder`` (an existing folder, a trailing ``/``, or no extension)."""
    from .video import is_video

    text = local_path(os.fspath(output))
    if scheme(text):
        return "stream"
    path = Path(text)
    if len(os.fsencode(path.name)) > 255:
        raise UsageError(f"{text}: the file name is longer than file systems allow (255 bytes)")
    if SEQUENCE.search(path.name):
        if len(os.fsencode(sequence_name(path, 0).name)) > 255:  # out_%0300i: every picture would fail
            raise UsageError(f"{text}: the numbered file names would be longer than file systems allow (255 bytes); "
                             "give a narrower number, like %04i")
        return "sequence"
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        return "folder"
    return "video" if is_video(path) else "image"


def sequence_name(pattern: Path, index: int) -> Path:
    """``pattern`` with its ``%i``/``%04i`` replaced by ``index`` (jetson numbers from 0)."""
    return pattern.with_name(SEQUENCE.sub(lambda m: f"{index:{m.group(1) or ''}d}", pattern.name, count=1))


def safe_label(text: str) -> str:
    """A file-name-safe short name for a source (its output sub-folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "source"
