"""A network output's frames encoded and sent by a process of its own, so that a receiver that stops answering
stalls that process and never the run's.

FFmpeg's network calls cannot be cut short from Python: PyAV gives an output no interrupt callback, and holds
the GIL through an RTSP output's handshake, so no other thread runs either. Done in the run's process, a
stalled output held Ctrl-C and SIGTERM until FFmpeg gave up on the receiver (``STREAM_IO_TIMEOUT``). Here the
run only waits on a pipe, which a signal interrupts at once; the sender is then given ``STOP_GRACE`` to end
its stream and is ended if it cannot."""

from __future__ import annotations

import signal
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import SegnetError
from . import children
from .video import Encoder, EncoderSettings

#: Seconds a stopped run (Ctrl-C, SIGTERM) gives a sender to end its stream before it is ended: enough for
#: a receiver that answers to take the end of the stream, short enough that the signal is taken at once.
STOP_GRACE = 0.5


class Sender:
    """``video.Encoder(url, ...)`` run by a child process, started with the first frame. ``write`` hands it
    a frame (waiting while the pipe is full: the receiver sets the pace, as it did in this process) and
    raises what stopped it, ``close`` waits for the end of the stream, ``abort`` ends it within
    ``STOP_GRACE``. Errors are the encoder's one-line SegnetErrors."""

    def __init__(self, url: str, container: str, rate: Fraction, settings: EncoderSettings,
                 options: dict[str, str], name: str):
        self.args = (url, container, rate, settings, options, name)
        self.name = name
        self.process: Any = None
        self.frames: Any = None  # the pipe the frames go through; None once the stream is ended
        self.status: Any = None  # the pipe the child answers through, once: None (done) or why it failed
        self.started = False

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        if self.process is None:
            if self.started:
                raise SegnetError(f"cannot write {self.name}: its stream has ended")
            self._start()
        if self.frames is not None and not self.status.poll():  # the sender takes frames
            try:
                self.frames.send((rgb, pts))
                return
            except OSError:  # it has just stopped
                pass
            except BaseException:  # a signal cut the frame short: the stream ends before it
                self._end_frames()
                raise
        error = self._outcome() or SegnetError(f"cannot write {self.name}: its stream has ended")
        self._stop(STOP_GRACE)
        raise error

    def close(self) -> None:
        """Wait for the sender to end its stream (a signal interrupts the wait and ends the sender at once)."""
        if self.process is None:
            return
        self._end_frames()
        try:
            error = self._outcome()
        finally:
            self._stop(STOP_GRACE)  # it has answered and ends by itself; or a signal came
        if error is not None:
            raise error

    def abort(self) -> None:
        """End the stream now: what was sent stays sent, and the end of it is sent if the receiver takes it
        within ``STOP_GRACE``."""
        if self.process is not None:
            self._end_frames()
            self._stop(STOP_GRACE)

    def _start(self) -> None:
        ctx = children.context([__name__, "av"])
        frames_out, self.frames = ctx.Pipe(duplex=False)
        self.status, status_in = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_send, args=(frames_out, status_in, *self.args), daemon=True,
                                   name="segnet-sender")
        self.started = True
        children.start(self.process)
        frames_out.close()  # the child's ends: it has its own copies
        status_in.close()

    def _end_frames(self) -> None:
        """Close the frames' pipe: the sender encodes what it holds, ends the stream and answers."""
        if self.frames is not None:
            self.frames.close()
            self.frames = None

    def _outcome(self) -> SegnetError | None:
        """Wait for the sender's one answer: None when it ended its stream, else what went wrong."""
        try:
            error = self.status.recv()
        except (EOFError, OSError):  # it ended without answering
            self.process.join()
            error = f"cannot write {self.name}: its sending process {children.how_it_ended(self.process)}"
        return None if error is None else SegnetError(error)

    def _stop(self, grace: float) -> None:
        """Give the sender ``grace`` seconds to end, then end it."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.status.close()
        self.process = None


def _send(frames, status, url: str, container: str, rate: Fraction, settings: EncoderSettings,
          options: dict[str, str], name: str) -> None:
    """The sender: frames from the pipe into the encoder until the run closes the pipe (a frame cut short by
    a signal ends it too), then the end of the stream; answers None, or the error that stopped it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the run decides
    children.die_with_parent()
    encoder = Encoder(url, container, rate, settings, options, name)
    try:
        while True:
            try:
                rgb, pts = frames.recv()
            except (EOFError, OSError):
                break
            encoder.write(rgb, pts)
        encoder.close()
    except SegnetError as exc:
        encoder.abort()
        status.send(str(exc))
        return
    status.send(None)
