"""Real video streams on 127.0.0.1 for the source and output tests: free ports, waiting until a receiver
listens, sending frames with PyAV as a camera or encoder would, receiving a stream and counting its frames,
and small video files."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int, protocol: str = "udp") -> bool:
    """Whether a socket is bound to ``port`` (UDP) or listening on it (TCP), read from /proc/net."""
    for name in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and (protocol == "udp" or fields[3] == "0A"):
                return True
    return False


def wait_listening(port: int, protocol: str = "udp", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port, protocol):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {protocol} port {port}")
        time.sleep(0.01)


def frame_picture(i: int, width: int = 96, height: int = 64) -> np.ndarray:
    """A picture that changes from frame to frame (a moving bar over a gradient)."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    picture[..., 1] = (i * 37) % 256
    x = (i * 7) % width
    picture[:, x:x + 8, 2] = 255
    return picture


def send(url: str, container: str, frames: int, rate: int = 25, pace: bool = True, size=(96, 64),
         options: dict | None = None, gop: int = 5) -> None:
    """Encode ``frames`` pictures as H.264 and send them to ``url`` in ``container`` (mpegts, rtp_mpegts,
    rtsp), paced at ``rate`` like a camera when ``pace``."""
    import av

    with av.open(url, "w", format=container, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(gop)}
        start = time.monotonic()
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_picture(i, *size), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
            if pace:
                time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        for packet in stream.encode():
            out.mux(packet)


@dataclass
class Received:
    frames: list = field(default_factory=list)  # (width, height, pts) of each decoded frame
    codec: str | None = None
    error: str | None = None


def receive(url: str, timeout: float | None = 2.0, options: dict | None = None, open_timeout: float = 30.0):
    """Start receiving ``url`` in a thread (it binds or listens at once); ``join()`` the returned thread when
    the sender is done: reading ends after ``timeout`` seconds without data (None: at the end of the stream,
    for an RTSP server in listen mode, which PyAV's timeouts upset)."""
    import av

    got = Received()

    def work():
        try:
            timeouts = None if timeout is None else (open_timeout, timeout)
            with av.open(url, options=options or {}, timeout=timeouts) as container:
                stream = container.streams.video[0]
                got.codec = stream.codec_context.name
                try:
                    for packet in container.demux(stream):
                        for frame in packet.decode():
                            got.frames.append((frame.width, frame.height, frame.pts))
                except av.FFmpegError:  # the timeout: the sender has finished
                    pass
                try:  # what the decoder still holds after a timeout (at the end of a file it is empty)
                    for frame in stream.codec_context.decode(None):
                        got.frames.append((frame.width, frame.height, frame.pts))
                except av.EOFError:
                    pass
        except Exception as exc:
            got.error = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.received = got  # type: ignore[attr-defined]
    return thread


def make_video(path: Path, frames: int, rate: str | int = 25, size=(96, 64), colour=None, codec="libx264") -> Path:
    """A small video file: moving pictures, or one ``colour`` throughout."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(rate))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            picture = frame_picture(i, *size) if colour is None else np.full((size[1], size[0], 3), colour, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def count_frames(path) -> tuple[int, Fraction, tuple[int, int], str]:
    """Frames, average rate, size and codec of a video file, decoded to the end."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.average_rate, (stream.width, stream.height), stream.codec_context.name
