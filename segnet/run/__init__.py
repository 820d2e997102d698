"""Running many images: the library's runner (``run``) for folders, videos, cameras and streams, its events,
the pipeline that overlaps decoding and drawing with inference, the sources and outputs, video, and Ray."""

from .runner import Event, Finished, ImageDone, ImageFailed, Runner, SourceEnded, Started, Summary, run

__all__ = ["Event", "Finished", "ImageDone", "ImageFailed", "Runner", "SourceEnded", "Started", "Summary", "run"]
