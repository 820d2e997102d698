"""What a run reports: ``Started``, ``ImageDone``, ``ImageFailed``, ``SourceEnded`` and ``Finished`` events
(handed to ``on_event`` in input order, in the calling thread), and the ``Summary`` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SegnetError


@dataclass(frozen=True)
class Started:
    """The network is loaded and the first image is about to start."""

    total: int | None  # images (or frames) to process; None when a video does not say, or for live sources
    skipped: int  # left out by skip_existing
    several: bool  # a folder, glob, video or stream rather than one image
    network: str
    input_size: tuple[int, int] | None  # None: each image's own (symbolic sizes), or not known here (Ray)
    num_classes: int | None  # None: not known here (on Ray the network is loaded by the workers only)
    backend: str
    live: bool = False  # a camera or network stream is among the sources
    sources: int = 1  # videos, cameras and streams read side by side


@dataclass(frozen=True)
class ImageDone:
    index: int
    name: str
    target: Any  # the output path, a video frame number, or None
    result: Any  # the Segmentation (None on Ray, where results stay on the workers)
    stats: str | None = None  # the class table, when options.stats
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    source: str | None = None  # the input as given: an image, or the video, camera or stream of a frame
    frame: int | None = None  # a frame's number in its source, from 0
    time: float | None = None  # a frame's time in its source, in seconds
    latency: float | None = None  # seconds from a frame's arrival to its result
    dropped: int = 0  # frames of this frame's source dropped so far (live sources the network was behind)
    record: dict[str, Any] | None = None  # the statistics as data (options.stats_json or options.stats_file)


@dataclass(frozen=True)
class ImageFailed:
    index: int
    name: str
    error: SegnetError


@dataclass(frozen=True)
class SourceEnded:
    """A video, camera or stream source has ended: all its frames are done and its output is closed.
    ``error``: why it stopped early (the run goes on with the other sources)."""

    source: str
    frames: int  # read from the source
    dropped: int  # of those, dropped because the network could not keep up
    error: SegnetError | None = None


@dataclass(frozen=True)
class Summary:
    done: int
    failed: int
    skipped: int
    seconds: float
    several: bool
    ray: bool = False
    dropped: int = 0  # frames of live sources dropped because the network could not keep up
    sources_failed: int = 0  # videos, cameras or streams that stopped with an error

    @property
    def images_per_second(self) -> float:
        return self.done / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Finished:
    summary: Summary


Event = Started | ImageDone | ImageFailed | SourceEnded | Finished
