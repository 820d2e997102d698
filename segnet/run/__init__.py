"""Running many images: the library's folder and video runner (``run``), its events, the pipeline that
overlaps decoding and drawing with inference, the sources and outputs, video, and Ray."""

from .runner import Event, Finished, ImageDone, ImageFailed, Runner, Started, Summary, run

__all__ = ["Event", "Finished", "ImageDone", "ImageFailed", "Runner", "Started", "Summary", "run"]
