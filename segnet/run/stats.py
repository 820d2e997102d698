"""Class statistics as data: one JSON object per image or frame (``--stats --json``, ``--stats-file``).

The stats file is an append-only log rather than a file written whole and renamed (``util.atomic_write``):
a camera run has no end to wait for, and its lines must be readable while it runs (``tail -f``). Each record
is one complete line handed to the kernel in a single ``write`` on a file opened with ``O_APPEND``, so a
reader never sees half a line from a run that is killed, and several runs may append to one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import SegnetError, UsageError, option
from ..util import describe_os_error, new_file_mode


def wants_records(options) -> bool:
    """Whether a run makes JSON records: for ``--json`` on stdout or for ``--stats-file``."""
    return bool(options.stats_json or options.stats_file is not None)


def record(result, source: str, frame: int | None = None, time: float | None = None) -> dict[str, Any]:
    """The statistics of one ``Segmentation`` as a JSON-ready dict: ``source``, for video frames ``frame``
    (from 0) and ``time`` (seconds), ``grid`` size, ``num_classes``, and per class its ``id``, ``name``,
    ``count`` of grid cells and ``fraction`` of the grid (the ``--stats`` table's numbers)."""
    counts = result.histogram()
    total = max(int(counts.sum()), 1)
    width, height = result.grid_size
    out: dict[str, Any] = {"source": source}
    if frame is not None:
        out["frame"] = frame
        out["time"] = None if time is None else round(float(time), 6)
    names = result.class_names or [f"Class #{c}" for c in range(len(counts))]
    out.update(grid={"width": int(width), "height": int(height)}, num_classes=len(counts),
               classes=[{"id": c, "name": name, "count": int(n), "fraction": int(n) / total}
                        for c, (name, n) in enumerate(zip(names, counts))])
    return out


def line(data: dict[str, Any]) -> str:
    """One record as one line of JSON (non-ASCII names kept readable)."""
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


class StatsLog:
    """``--stats-file``: records appended as whole lines, each written once, in one ``write``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            if self.path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, new_file_mode())
        except OSError as exc:
            raise UsageError(f"cannot write {option('stats_file', str(path))}: {describe_os_error(exc)}") from None

    def write(self, data: dict[str, Any]) -> None:
        if self.fd is None:
            return
        encoded = (line(data) + "\n").encode("utf-8")
        try:
            written = os.write(self.fd, encoded)
            if written != len(encoded):  # a full disk: take back the part line
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - written)
                raise OSError(28, "no space left on the device")
        except OSError as exc:
            raise SegnetError(f"cannot write {self.path}: {describe_os_error(exc)}") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
