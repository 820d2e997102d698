"""Real video streams on 127.0.0.1 for the source and output tests: free ports, waiting until a receiver
listens, sending frames with PyAV as a camera or encoder would, receiving a stream and counting its frames,
small video files, and an RTSP server that stops reading."""

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
         options: dict | None = None, gop: int = 5, join: int = 0) -> None:
    """Encode ``frames`` pictures as H.264 (a keyframe every ``gop`` frames, and no others) and send them to
    ``url`` in ``container`` (mpegts, rtp, rtp_mpegts, rtsp), paced at ``rate`` like a camera when ``pace``.
    ``join``: the first frame sent, as a receiver that joins late sees the stream (those before it are
    encoded, not sent)."""
    import av

    with av.open(url, "w", format=container, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"tune": "zerolatency", "preset": "ultrafast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        start = time.monotonic()
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_picture(i, *size), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                if i >= join:
                    out.mux(packet)
            if pace and i >= join:
                time.sleep(max(0.0, start + (i + 1 - join) / rate - time.monotonic()))
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


def h264_ts(frames: int, gop: int, rate: int = 25, size=(96, 64)) -> bytes:
    """``frames`` pictures (``frame_picture``) as H.264 in MPEG-TS, in memory: a keyframe every ``gop`` frames
    and none between (no scene cuts), parameter sets with each keyframe only, as cameras send them."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"tune": "zerolatency", "preset": "ultrafast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_picture(i, *size), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


#: The PID of the first stream FFmpeg's MPEG-TS muxer writes (``mpegts_start_pid``).
TS_VIDEO_PID = 0x100


def ts_frame_starts(ts: bytes) -> list[int]:
    """Where each frame's PES packet starts in MPEG-TS bytes: the offsets of the video's TS packets that
    start a payload."""
    return [at for at in range(0, len(ts), 188)
            if ((ts[at + 1] & 0x1F) << 8 | ts[at + 2]) == TS_VIDEO_PID and ts[at + 1] & 0x40]


def send_udp(data: bytes, port: int, seconds: float) -> None:
    """``data`` (MPEG-TS) to udp://127.0.0.1:PORT in datagrams of 7 TS packets, as cameras send it, spread
    evenly over ``seconds``."""
    chunks = [data[at:at + 7 * 188] for at in range(0, len(data), 7 * 188)]
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i, chunk in enumerate(chunks):
            sock.sendto(chunk, ("127.0.0.1", port))
            time.sleep(max(0.0, start + (i + 1) * seconds / len(chunks) - time.monotonic()))


def nearest_frame(picture: np.ndarray, frames: int, size=(96, 64)) -> int:
    """Which of ``frame_picture(0..frames-1)`` a decoded ``picture`` is (the one it differs least from)."""
    return min(range(frames),
               key=lambda i: np.abs(picture.astype(int) - frame_picture(i, *size).astype(int)).mean())


def count_frames(path) -> tuple[int, Fraction, tuple[int, int], str]:
    """Frames, average rate, size and codec of a video file, decoded to the end."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.average_rate, (stream.width, stream.height), stream.codec_context.name


class StallingRTSP:
    """An RTSP server on 127.0.0.1 that takes a stream's set-up (OPTIONS, ANNOUNCE, SETUP, RECORD) and then
    reads none of the stream, as a server that hangs would: the sender's data piles up in the connection
    until its writes block. ``recording`` is set once the set-up is answered."""

    def __init__(self):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, soon full
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.recording = threading.Event()
        self.conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.getsockname()[1]

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self.conn = conn
        data = b""
        while not self.recording.is_set():
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            request, *lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines if ": " in line)
            while len(data) < int(headers.get("Content-Length", 0)):  # ANNOUNCE's SDP
                data += conn.recv(4096)
            data = data[int(headers.get("Content-Length", 0)):]
            method = request.split()[0]
            reply = ["RTSP/1.0 200 OK", f"CSeq: {headers['CSeq']}"]
            if method == "OPTIONS":
                reply.append("Public: ANNOUNCE, SETUP, RECORD, TEARDOWN")
            if method == "SETUP":
                reply += [f"Transport: {headers['Transport']}", "Session: 1234"]
            conn.sendall(("\r\n".join(reply) + "\r\n\r\n").encode())
            if method == "RECORD":
                self.recording.set()  # and from now on, nothing is read

    def unsent(self) -> int:
        """Bytes the sender has written that the connection cannot deliver (its send queue, from
        /proc/net/tcp): they pile up once this server's window is full."""
        if self.conn is None:
            return 0
        sender = f"0100007F:{self.conn.getpeername()[1]:04X} 0100007F:{self.port:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if f"{fields[1]} {fields[2]}" == sender:
                return int(fields[4].split(":")[0], 16)
        return 0

    def wait_stalled(self, timeout: float = 60.0) -> None:
        """Wait until the sender's unsent data has piled up and stopped growing: its writes block."""
        deadline = time.monotonic() + timeout
        last, steady = 0, 0
        while steady < 10:  # the same for 10 looks in a row, 0.05 s apart
            if time.monotonic() > deadline:
                raise AssertionError(f"the sender never stalled ({last} bytes unsent)")
            time.sleep(0.05)
            unsent = self.unsent()
            steady = steady + 1 if unsent == last and unsent > 0 else 0
            last = unsent

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()
