"""Class names and colours of a network: ``classes.txt``, ``colors.txt`` and the generated palette.

SPEC sections 2 and 3: missing names become ``Class #N``; missing colours come from the Pascal VOC
palette evaluated at ``c + 1`` (jetson skips its black entry); a colour whose alpha is present and not 255
is explicit and keeps it, every other class takes ``--alpha``. As in jetson, a file with too few lines (or
none) is filled in and extra lines are not used; unlike jetson, one status line says so, since a file for
another network is the usual cause.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .errors import SegnetError

_SYNSET = re.compile(r"^n\d{8} (.+)$")
log = logging.getLogger(__name__)


class FromFile(list):
    """The entries of a classes.txt or colors.txt, which remember the file they came from (for messages)."""

    def __init__(self, entries, source: Path):
        super().__init__(entries)
        self.source = source


def _say_count(entries: list | None, num_classes: int, what: str, filled: str) -> None:
    """One status line when a file's line count is not the network's class count."""
    source = getattr(entries, "source", None)
    if source is None or len(entries or []) == num_classes:
        return
    count = len(entries or [])
    if count == 0:
        log.warning(f"{source} is empty: all {num_classes} classes get {filled}")
    elif count < num_classes:
        log.warning(f"{source} has {count} {what} for {num_classes} classes: classes {count} to {num_classes - 1} "
                    f"get {filled}")
    else:
        log.warning(f"{source} has {count} {what} for {num_classes} classes: the last {count - num_classes} are "
                    "not used (is it the file of another network?)")


def _lines(path: str | Path, what: str) -> list[str]:
    """The file's lines without trailing blank ones; a blank line in the middle would shift every class
    after it, so it is an error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SegnetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a byte-order mark is not part of the first name
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8").strip()  # also drops the \r of Windows line ends
        except UnicodeDecodeError:
            raise SegnetError(f"{path} line {number}: not UTF-8 text (is this really a {what}?)") from None
        if not line:
            raise SegnetError(f"{path} line {number}: empty line; give every class a line, in class order")
        out.append(line)
    return out


def read_class_names(path: str | Path) -> list[str]:
    """Class names, one per line; a leading ImageNet synset id (``n01440764 tench``) is dropped."""
    names = []
    for line in _lines(path, "classes.txt"):
        match = _SYNSET.match(line)
        names.append(match.group(1).strip() if match else line)
    return FromFile(names, Path(path))


def read_class_colors(path: str | Path) -> list[tuple[int, int, int, int | None]]:
    """Colours, one ``r g b`` or ``r g b a`` line per class (0-255); alpha is None when not given."""
    colors = []
    for number, line in enumerate(_lines(path, "colors.txt"), 1):
        fields = line.split()
        if len(fields) not in (3, 4):
            raise SegnetError(f"{path} line {number}: '{line}' has {len(fields)} fields; "
                              "write 'r g b' or 'r g b a' (numbers 0-255)")
        try:
            values = [int(float(f)) if float(f).is_integer() else None for f in fields]
        except ValueError:
            values = [None]
        if any(v is None or not 0 <= v <= 255 for v in values):
            raise SegnetError(f"{path} line {number}: '{line}' is not 3 or 4 whole numbers from 0 to 255")
        r, g, b, *a = (int(v) for v in values if v is not None)
        colors.append((r, g, b, a[0] if a else None))
    return FromFile(colors, Path(path))


def voc_color(index: int) -> tuple[int, int, int]:
    """Entry ``index`` of the Pascal VOC bit-interleaved palette."""
    r = g = b = 0
    for bit in range(8):
        r |= ((index >> 0) & 1) << (7 - bit)
        g |= ((index >> 1) & 1) << (7 - bit)
        b |= ((index >> 2) & 1) << (7 - bit)
        index >>= 3
    return r, g, b


def class_names(num_classes: int, names: list[str] | None = None) -> list[str]:
    """``num_classes`` names: ``names`` (from ``read_class_names``, which says when their count differs), then
    ``Class #N``."""
    _say_count(names, num_classes, "names", "'Class #N' names")
    names = list(names or [])[:num_classes]
    return names + [f"Class #{n}" for n in range(len(names), num_classes)]


def class_colors(num_classes: int, colors: list | None = None, alpha: float = 120) -> np.ndarray:
    """``[num_classes, 4]`` float32 RGBA. Explicit alphas (present and not 255) are kept; the rest get
    ``alpha``."""
    _say_count(colors, num_classes, "colours", "generated colours")
    table = np.empty((num_classes, 4), np.float32)
    colors = list(colors or [])
    for c in range(num_classes):
        if c < len(colors):
            r, g, b, a = colors[c]
        else:
            (r, g, b), a = voc_color(c + 1), None
        table[c] = (r, g, b, a if a is not None and a != 255 else alpha)
    return table


def explicit_alphas(num_classes: int, colors: list | None = None) -> list[bool]:
    """Which classes keep their own alpha (present and not 255) rather than taking the ``alpha`` option."""
    colors = list(colors or [])
    return [c < len(colors) and colors[c][3] is not None and colors[c][3] != 255 for c in range(num_classes)]
