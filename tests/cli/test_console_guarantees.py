"""Issue 23 through segnet-console's entry point: nothing the run writes can be an input or another output,
no secret in a URL is shown or written, bad URLs are one-line usage errors, and every case leaves every
input as it was (checksums before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segnet.run
from segnet.errors import UsageError
from tests.conftest import IMAGES
from tests.support import models, streams
from tests.support.cli import assert_one_line_error, run_cli, run_process
from tests.support.http_server import ArchiveServer

SECRET = "PW-s3cret"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                [f"c{i}" for i in range(5)], num_classes=5, width=64, height=64)


def checksums(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (files or folders), by path."""
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(IMAGES.glob("*.jpg"))[:count]:
        shutil.copy(source, folder / source.name)
    return folder


# -- item 4: credentials ------------------------------------------------------------------------------------


def test_a_dead_image_url_fails_without_its_password_in_the_event(net, tmp_path):
    import socket

    port = streams.free_port(socket.SOCK_STREAM)  # nothing listens: connection refused
    events = []
    summary = segnet.run.run(f"http://user:{SECRET}@127.0.0.1:{port}/city.jpg", tmp_path / "out.jpg", model=net,
                             on_event=events.append)
    assert (summary.done, summary.failed) == (0, 1)
    assert all(SECRET not in repr(event) for event in events)
    assert not (tmp_path / "out.jpg").exists()


def test_passwords_and_tokens_in_urls_are_never_shown_or_written(net, tmp_path):
    stats = tmp_path / "stats.jsonl"
    picture = (IMAGES / "city_0.jpg").read_bytes()
    with ArchiveServer() as server:
        server.add(f"/city.jpg?token={SECRET}", picture)
        base = server.base_url.replace("http://", f"http://user:{SECRET}@")
        good = run_cli("--model", net, f"{base}/city.jpg?token={SECRET}", tmp_path / "out.jpg", "--json",
                       "--stats-file", stats)
        missing = run_cli("--model", net, f"{base}/404.jpg", tmp_path / "out2.jpg", "--stats-file", stats)
    assert good.returncode == 0, good.stderr
    record = json.loads(good.stdout)
    assert record["source"] == f"{server.base_url}/city.jpg?token=***"
    assert SECRET not in good.stdout + good.stderr + stats.read_text()
    assert "out.jpg" in good.stderr  # the status line names the picture, and the URL without its secrets
    assert_one_line_error(missing, 1, f"{server.base_url}/404.jpg: HTTP 404")
    assert SECRET not in missing.stderr and "user" not in missing.stderr


def test_rtsp_input_and_output_errors_leave_the_password_out(net, tmp_path):
    port = streams.free_port(streams.socket.SOCK_STREAM)  # nothing listens there: refused at once
    clip = tmp_path / "clip.mp4"
    streams.make_video(clip, 3)
    before = checksums(clip)
    source = run_cli("--model", net, f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live", tmp_path / "out",
                     "--input-timeout", "5")
    output = run_cli("--model", net, clip, f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live")
    assert_one_line_error(source, 1, f"rtsp://127.0.0.1:{port}/live")
    assert_one_line_error(output, 1, f"rtsp://127.0.0.1:{port}/live")
    assert SECRET not in source.stderr + output.stderr
    assert checksums(clip) == before


# -- item 12: bad ports and hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["rtp://@:99999", "out/"], "rtp://@:99999: not a valid URL (port out of range"),
    (["udp://[::1:5000", "out/"], "udp://[::1:5000: not a valid URL (invalid ipv6"),
    (["CLIP", "udp://127.0.0.1:99999"], "udp://127.0.0.1:99999: not a valid URL (port out of range"),
    (["CLIP", f"rtsp://u:{SECRET}@[::1/live"], "rtsp://[::1/live: not a valid URL"),
    ([f"http://127.0.0.1:70000/a.jpg?key={SECRET}", "out.jpg"], "http://127.0.0.1:70000/a.jpg?key=***: not a"),
    (["http://127.0.0.1:9/a%00b.jpg", "out/"], "http://127.0.0.1:9/a%00b.jpg: not a valid URL (it holds a NUL"),
])
def test_bad_ports_and_hosts_are_one_line_usage_errors(net, tmp_path, args, message):
    clip = streams.make_video(tmp_path / "clip.mp4", 2)
    before = checksums(clip)
    proc = run_cli("--model", net, *[str(clip) if a == "CLIP" else a for a in args], cwd=tmp_path)
    assert_one_line_error(proc, 2, message)
    assert SECRET not in proc.stderr
    assert checksums(clip) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # nothing written or created


# -- items 1, 2, 3 and 14: nothing written is read or written twice; nothing made before all is checked ------


def test_a_legend_never_replaces_or_joins_the_inputs_nor_replaces_an_output(net, tmp_path):
    inputs = images(tmp_path / "in")
    (tmp_path / "out.png").write_bytes(b"an earlier output")
    before = checksums(inputs, tmp_path / "out.png")
    first = sorted(inputs.iterdir())[0]
    cases = [
        (["--legend", first, inputs, tmp_path / "out"], f"would overwrite the input {first} (--legend"),
        (["--legend", inputs / "legend.png", inputs, tmp_path / "out"], "would be written into the input folder"),
        (["--legend", tmp_path / "out.png", first, tmp_path / "out.png"], "would both be written to"),
        (["--legend", tmp_path / "l.png", str(inputs / "*.jpg"), tmp_path / "out", "--stats-file",
          tmp_path / "l.png"], "--legend"),
    ]
    for args, message in cases:
        assert_one_line_error(run_cli("--model", net, *args), 2, message)
    assert checksums(inputs, tmp_path / "out.png") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.png"]  # no output folder made either


def test_a_legend_into_a_missing_folder_is_made_there(net, tmp_path):
    first = images(tmp_path / "in", 1) / sorted(IMAGES.glob("*.jpg"))[0].name
    before = checksums(first)
    proc = run_cli("--model", net, "--legend", tmp_path / "new" / "sub" / "legend.png", first, tmp_path / "o.jpg")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "sub" / "legend.png").stat().st_size > 0 and (tmp_path / "o.jpg").exists()
    alone = run_cli("--model", net, "--legend", tmp_path / "other" / "legend.png")
    assert alone.returncode == 0, alone.stderr
    assert (tmp_path / "other" / "legend.png").exists() and checksums(first) == before


def test_one_line_of_a_list_cannot_replace_another_lines_input(net, tmp_path):
    a, b = streams.make_video(tmp_path / "a.mp4", 3), streams.make_video(tmp_path / "b.mp4", 3, colour=(9, 9, 9))
    listing = tmp_path / "cams.txt"
    listing.write_text("a.mp4 b.mp4\nb.mp4 outb/\n")
    before = checksums(a, b, listing)
    assert_one_line_error(run_cli("--model", net, listing), 2, f"{b} would overwrite the input {b}")
    listing.write_text("a.mp4 outa/\nb.mp4 frames_%04i.png\nb.mp4 cams.txt.mp4\nb.mp4 a.mp4\n")
    before = checksums(a, b, listing)
    assert_one_line_error(run_cli("--model", net, listing), 2, f"would overwrite the input {a}")
    listing.write_text("a.mp4 f/x_%04i.png\nb.mp4 f/x_%04i.png\n")
    assert_one_line_error(run_cli("--model", net, listing), 2, "would both be written to")
    assert checksums(a, b) == {k: v for k, v in before.items() if not k.endswith(".txt")}
    # refused at its last line: no folder of the earlier lines was made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "cams.txt"]


def test_the_frames_of_a_video_are_checked_by_the_names_they_will_have(net, tmp_path):
    clip = streams.make_video(tmp_path / "clip.mp4", 3)
    before = checksums(clip)
    proc = run_cli("--model", net, clip, tmp_path / "out", "--legend", tmp_path / "out" / "clip-000001.png")
    legend = tmp_path / "out" / "clip-000001.png"
    assert_one_line_error(proc, 2, f"{clip} and --legend {legend} would both be written to {legend}")
    proc = run_cli("--model", net, clip, tmp_path / "f_%03i.png", "--legend", tmp_path / "f_007.png")
    assert_one_line_error(proc, 2, "would both be written to")
    assert checksums(clip) == before and sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_a_stats_file_is_never_an_input_an_output_or_a_fifo(net, tmp_path):
    first = images(tmp_path / "in", 1) / sorted(IMAGES.glob("*.jpg"))[0].name
    clip = streams.make_video(tmp_path / "clip.mp4", 3)
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    before = checksums(first, clip)
    assert_one_line_error(run_cli("--model", net, first, tmp_path / "o.jpg", "--stats-file", first), 2,
                          f"would overwrite the input {first} (--stats-file")
    assert_one_line_error(run_cli("--model", net, first, tmp_path / "o.jpg", "--stats-file", tmp_path / "o.jpg"), 2,
                          "--stats-file")
    assert_one_line_error(run_cli("--model", net, clip, tmp_path / "v.mp4", "--stats-file", tmp_path / "v.mp4"), 2,
                          "would both be written to")
    proc = run_process("--model", net, clip, tmp_path / "v.mp4", "--stats-file", fifo, timeout=120)
    assert_one_line_error(proc, 2, "it is a FIFO, not a regular file")
    assert checksums(first, clip) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "in", "stats.fifo"]


def test_an_empty_output_and_an_impossible_sequence_are_usage_errors(net, tmp_path):
    bystander = tmp_path / "city_0.jpg"
    bystander.write_bytes(b"an unrelated file of the same name as the input")
    before = checksums(bystander)
    assert_one_line_error(run_cli("--model", net, IMAGES / "city_0.jpg", "", cwd=tmp_path), 2,
                          "an empty output names no file")
    assert_one_line_error(run_cli("--model", net, IMAGES, tmp_path / "o" / "out_%0300i.png"), 2,
                          "longer than file systems allow")
    assert checksums(bystander) == before and sorted(os.listdir(tmp_path)) == ["city_0.jpg"]


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((None,), {}, TypeError, "not NoneType"),
    ((5,), {}, TypeError, "not int"),
    ((b"images",), {}, TypeError, "not bytes (os.fsdecode"),
    (([IMAGES / "city_0.jpg", 5],), {}, TypeError, "not int"),
    ((IMAGES, 5), {}, TypeError, "give output as a str or os.PathLike"),
    ((IMAGES, None), {"options": {"model": "x"}}, TypeError, "options must be a segnet.Options, not dict"),
    ((IMAGES, ""), {}, UsageError, "an empty output names no file"),
    (([],), {}, UsageError, "no inputs"),
])
def test_library_misuse_of_run_says_what_to_give(args, kwargs, error, message):
    with pytest.raises(error) as caught:
        segnet.run.run(*args, **kwargs)
    assert message in str(caught.value) and type(caught.value) is error


# -- item 6: a bounded number of sources open at once ----------------------------------------------------


PEAK = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "segnet", *sys.argv[1:]], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
sys.stdout.write(proc.stdout)
print("peak", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "rc", proc.returncode)
"""


def peak_run(*args, env=None, timeout=600):
    """segnet-console with ``args`` in a child process: (its exit code, stdout lines, stderr, its peak memory
    in bytes, from the kernel's accounting of that child alone)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    *lines, last = proc.stdout.splitlines()
    _, peak, _, code = last.split()
    return int(code), lines, proc.stderr, int(peak)


def test_a_long_list_of_videos_reads_a_few_at_a_time_in_bounded_memory(net, tmp_path):
    clip = streams.make_video(tmp_path / "clip.mp4", 3, size=(320, 240))
    listing = tmp_path / "many.txt"
    listing.write_text("clip.mp4\n" * 200)  # all at once: about 0.8 GB here (3.8 MB a reader)
    before = checksums(clip, listing)
    code, lines, stderr, peak = peak_run("--model", net, listing, tmp_path / "out", "--json", "-q",
                                         env={"SEGNET_MAX_OPEN_SOURCES": "4"})
    assert code == 0, stderr
    records = [json.loads(line) for line in lines]
    print(f"peak memory of 200 sources, 4 at a time: {peak / 2**20:.0f} MiB")
    assert peak < 1.5 * 2**30
    assert len(records) == 600 and len(list((tmp_path / "out").rglob("*.png"))) == 600
    folders = list((tmp_path / "out").iterdir())  # every source whole, its frames numbered in order
    assert len(folders) == 200
    assert all(sorted(p.name[-10:] for p in f.iterdir()) == ["000000.png", "000001.png", "000002.png"]
               for f in folders)
    assert checksums(clip, listing) == before


def test_more_live_sources_than_are_read_at_once_is_a_usage_error(net, tmp_path):
    ports = [streams.free_port() for _ in range(3)]
    listing = tmp_path / "cams.txt"
    listing.write_text("".join(f"udp://127.0.0.1:{p}\n" for p in ports))
    before = checksums(listing)
    proc = run_cli("--model", net, listing, tmp_path / "out", env={"SEGNET_MAX_OPEN_SOURCES": "2"})
    assert_one_line_error(proc, 2, "3 live sources (cameras and streams, such as udp://127.0.0.1:")
    assert "raise SEGNET_MAX_OPEN_SOURCES" in proc.stderr and not (tmp_path / "out").exists()
    assert checksums(listing) == before


# -- item 7: an RTSP output to a server that never answers ------------------------------------------------


@pytest.mark.parametrize("signum, code, line", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_stalled_rtsp_output_ends_on_a_signal_at_once(net, tmp_path, signum, code, line):
    """The server takes the connection and never answers: the output stalls in its handshake, and the first
    signal ends the run at once (not when FFmpeg's STREAM_IO_TIMEOUT gives up on the server)."""
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    clip = streams.make_video(tmp_path / "clip.mp4", 5)
    before = checksums(clip)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    connected = threading.Event()
    held = []

    def accept():  # accepts, and never answers
        conn, _ = server.accept()
        held.append(conn)
        connected.set()

    threading.Thread(target=accept, daemon=True).start()
    url = f"rtsp://user:{SECRET}@127.0.0.1:{server.getsockname()[1]}/live"
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), str(clip), url],
                            stderr=subprocess.PIPE, text=True)
    assert connected.wait(120)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, signum))
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    server.close()
    print(f"{signum} to the end of the run: {took:.2f} s")
    assert took < 3, stderr  # 5 s and more while the signal waited for FFmpeg's timeout
    assert proc.returncode == code and stderr.strip().splitlines()[-1] == f"segnet-console: {line}", stderr
    assert "Traceback" not in stderr and "error" not in stderr
    assert SECRET not in stderr and checksums(clip) == before


@pytest.mark.parametrize("signum, code, line", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_an_rtsp_output_stalled_mid_stream_ends_on_a_signal_at_once(net, tmp_path, signum, code, line):
    """The server takes the stream's set-up, then reads none of it: once the stream has filled the connection
    and the output's writes block, the first signal ends the run at once, and the video another camera of
    the run was writing is finished and kept."""
    import signal
    import subprocess
    import sys
    import time

    server = streams.StallingRTSP()
    url = f"rtsp://user:{SECRET}@127.0.0.1:{server.port}/live"
    # a live source that never ends, of noise that does not compress, in frames (500 kB) each far larger than
    # what the full connection still takes in a while: the connection is full in a moment, and a frame's write
    # then lasts as long as the connection stays full
    noise = "lavfi://color=c=gray:s=640x480:r=25,noise=alls=100:allf=t+u"
    listing = tmp_path / "cams.txt"
    listing.write_text(f"{noise} {url}\nlavfi://testsrc2=size=96x64:rate=25 kept.mp4\n")
    before = checksums(listing)
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), str(listing), "--bitrate",
                             "100000000"], stderr=subprocess.PIPE, text=True)
    try:
        assert server.recording.wait(120)
        server.wait_stalled()
        sent = time.monotonic()
        proc.send_signal(getattr(signal, signum))
        _, stderr = proc.communicate(timeout=60)  # for ever while the signal waited for the write to end
        took = time.monotonic() - sent
    finally:
        proc.kill()
        server.close()
    print(f"{signum} to the end of the run: {took:.2f} s")
    assert took < 3, stderr
    assert proc.returncode == code and stderr.strip().splitlines()[-1] == f"segnet-console: {line}", stderr
    assert "Traceback" not in stderr and "error" not in stderr and SECRET not in stderr
    frames, _, size, _ = streams.count_frames(tmp_path / "kept.mp4")
    assert frames > 0 and size == (96, 64) and checksums(listing) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.txt", "kept.mp4"]  # no temporary file left


# -- item 10: joining a live H.264 stream between keyframes ----------------------------------------------


def join_between_keyframes(net, out: Path, env=None):
    """segnet-console reading a camera's MPEG-TS over UDP, joined in the middle of a GOP: inside frame 5's PES,
    the keyframes (and H.264's parameter sets, sent only with them) at frames 0, 50 and 100, sent in real time
    so that frame 50 comes 1.8 s after the join, after the 1 s a live stream is probed for."""
    import threading

    ts = streams.h264_ts(150, gop=50)
    starts = streams.ts_frame_starts(ts)
    assert len(starts) == 150
    join = (starts[5] + starts[6]) // 2 // 188 * 188  # a TS packet in the middle of frame 5
    port = streams.free_port()

    def camera():
        streams.wait_listening(port)
        streams.send_udp(ts[join:], port, seconds=145 / 25)

    sender = threading.Thread(target=camera, daemon=True)
    sender.start()
    proc = run_cli("--model", net, f"udp://127.0.0.1:{port}", out, "--input-timeout", "2", "--alpha", "0",
                   "--json", env=env)  # alpha 0: each picture is the frame as decoded
    sender.join()
    return proc


def assert_started_at_the_next_keyframe(proc, out: Path) -> None:
    """The run read frames 50 to 149 (the first written is frame 50) and ended as a live source ends."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower(), proc.stderr
    assert "no frame for 2 s: ended" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    pictures = sorted(out.iterdir())
    assert len(pictures) == len(records) and records[0]["frame"] == 0
    # the run may drop frames while it is busy (UDP on loopback seldom does), never the first
    dropped = re.search(r"(\d+) dropped", proc.stderr)
    decoded = len(records) + (int(dropped[1]) if dropped else 0)
    assert 50 <= decoded <= 100, (len(records), proc.stderr)
    assert streams.nearest_frame(np.asarray(Image.open(pictures[0]).convert("RGB")), 150) == 50


def test_joining_a_live_h264_stream_between_keyframes_starts_at_the_next_keyframe(net, tmp_path):
    """Nothing can be decoded before frame 50 (it failed at once: "cannot decode it (Invalid data found when
    processing input)"): the run drops what comes before it, then reads the rest as any stream."""
    proc = join_between_keyframes(net, tmp_path / "out")
    assert "joined between keyframes" in proc.stderr
    assert_started_at_the_next_keyframe(proc, tmp_path / "out")


@pytest.mark.parametrize("container, codec", [("rtp", "h264"), ("rtp_mpegts", None)])
def test_joining_an_rtp_h264_stream_between_keyframes_starts_at_the_next_keyframe(net, tmp_path, container,
                                                                                   codec):
    """H.264 over RTP, raw (as jetson sends it) and in MPEG-TS, joined at frame 5 of a 50-frame GOP."""
    import threading

    port = streams.free_port()

    def camera():
        streams.wait_listening(port)
        streams.send(f"rtp://127.0.0.1:{port}", container, 150, gop=50, join=5)

    sender = threading.Thread(target=camera, daemon=True)
    sender.start()
    flags = ["--input-codec", codec] if codec else []
    proc = run_cli("--model", net, f"rtp://@:{port}", tmp_path / "out", "--input-timeout", "2", "--alpha", "0",
                   "--json", *flags)
    sender.join()
    assert_started_at_the_next_keyframe(proc, tmp_path / "out")


def test_a_stream_without_a_keyframe_in_time_is_a_one_line_error(net, tmp_path):
    proc = join_between_keyframes(net, tmp_path / "out", env={"SEGNET_KEYFRAME_WAIT": "0.2"})
    assert_one_line_error(proc, 1, "no keyframe within 0.2 s (nothing before one can be decoded); raise "
                                   "SEGNET_KEYFRAME_WAIT")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- item 8: an image URL that trickles ---------------------------------------------------------------------


class Trickle:
    """An HTTP server on 127.0.0.1 that promises a large image and sends it a byte every 0.2 s."""

    def __init__(self):
        import socket
        import threading

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.asked = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/slow.jpg"

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            conn.recv(4096)
            self.asked.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
            try:
                while not self.done.wait(0.2):
                    conn.sendall(b"\xff")
            except OSError:
                pass

    def close(self):
        self.done.set()
        self.server.close()


def test_a_trickling_image_url_has_an_overall_deadline(net, tmp_path):
    import time

    server = Trickle()
    url, start = server.url, time.monotonic()
    proc = run_cli("--model", net, url, tmp_path / "o.jpg", env={"SEGNET_URL_IMAGE_DEADLINE": "2"})
    server.close()
    assert time.monotonic() - start < 30
    assert_one_line_error(proc, 1, f"{url}: not fetched within 2 s (the server sends too slowly")
    assert not (tmp_path / "o.jpg").exists()


def test_a_trickling_image_url_yields_to_the_first_sigterm(net, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    server = Trickle()
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), server.url, str(tmp_path / "o.jpg")],
                            stderr=subprocess.PIPE, text=True)
    assert server.asked.wait(120)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # once
    _, stderr = proc.communicate(timeout=60)
    server.close()
    assert time.monotonic() - sent < 5, stderr
    assert proc.returncode == 143 and stderr.strip().splitlines()[-1] == "segnet-console: terminated", stderr
    assert "Traceback" not in stderr and not (tmp_path / "o.jpg").exists()
