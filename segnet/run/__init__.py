"""Running many images: the library's run loop (``run``) for folders, videos, cameras and streams, by role:

- ``uris``: what an input or output string names; ``inputs``: one class per kind of input, and their
  registry; ``outputs``: where pictures go, and the registry of frame outputs;
- ``planning``: the inputs and outputs made into a feed, once, before the network loads; ``feeds``: the jobs
  a run reads (image files, or frames read in background threads);
- ``loop``: the one loop, its sink and events (``events``), timed by ``job.timed``;
- executors: ``threads``, ``processes`` (worker processes), ``ray`` (a Ray cluster);
- ``video`` (PyAV) and ``stats`` (the statistics records).
"""

from . import inputs, outputs
from .events import Event, Finished, ImageDone, ImageFailed, SourceEnded, Started, Summary
from .inputs import Frame, FrameReader, InputKind, Opened, register_input
from .loop import Runner, run
from .outputs import FrameOutput, register_output

__all__ = ["Event", "Finished", "Frame", "FrameOutput", "FrameReader", "ImageDone", "ImageFailed", "InputKind",
           "Opened", "Runner", "SourceEnded", "Started", "Summary", "inputs", "outputs", "register_input",
           "register_output", "run"]
