"""segnet-console with real streams on 127.0.0.1: UDP/MPEG-TS and RTP sent by PyAV and read live, streams
written by segnet-console and read back, RTSP pushed to a server, codecs and bitrates, sequences, JSON
statistics on stdout, and one-line errors for what is not supported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest

from segnet.run import ImageDone, Started
from tests.conftest import IMAGES
from tests.support import golden, models, streams
from tests.support.cli import assert_one_line_error, run_cli

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                [f"c{i}" for i in range(5)], num_classes=5, width=64, height=64)


def sending(url: str, container: str, frames: int, port: int, **kwargs) -> threading.Thread:
    """Send once something listens on ``port`` (segnet-console, started next)."""

    def work():
        streams.wait_listening(port)
        streams.send(url, container, frames, **kwargs)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def dropped(stderr: str) -> int:
    found = re.search(r"(\d+) dropped", stderr)
    return int(found[1]) if found else 0


def test_a_udp_mpegts_stream_from_pyav_is_read_live(net, tmp_path):
    port = streams.free_port()
    sender = sending(f"udp://127.0.0.1:{port}", "mpegts", 15, port)
    proc = run_cli("--model", net, f"udp://127.0.0.1:{port}", tmp_path / "out.mp4", "--input-timeout", "1",
                   "--stats", "--json")
    sender.join()
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) + dropped(proc.stderr) == 15 and records[0]["frame"] == 0
    assert all(r["source"] == f"udp://127.0.0.1:{port}" for r in records)
    assert "no frame for 1 s: ended" in proc.stderr
    count, _, size, codec = streams.count_frames(tmp_path / "out.mp4")
    assert (count, size, codec) == (len(records), (96, 64), "h264")


@pytest.mark.parametrize("container, codec", [("rtp", "h264"), ("rtp_mpegts", None)])
def test_rtp_streams_are_read_as_jetson_sends_them_and_as_segnet_does(net, tmp_path, container, codec):
    port = streams.free_port()
    # 1.6 s of video sent at once: more than the probe waits for, so the test need not wait in real time
    sender = sending(f"rtp://127.0.0.1:{port}", container, 40, port, pace=False)
    flags = ["--input-codec", codec] if codec else []
    proc = run_cli("--model", net, f"rtp://@:{port}", tmp_path / "out", "--input-timeout", "1", "--json", *flags)
    sender.join()
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    # the MPEG-TS demuxer keeps the last frame or two when a stream stops without an end
    assert 37 <= len(records) + dropped(proc.stderr) <= 40 and records[0]["frame"] == 0
    frames = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert frames == [f"stream-{port}-{i:06d}.png" for i in range(len(records))]


def test_a_stream_written_by_segnet_console_is_read_back_whole(net):
    port = streams.free_port()
    receiver = streams.receive(f"udp://127.0.0.1:{port}", timeout=0.5, options={"analyzeduration": "1000000"})
    streams.wait_listening(port)
    # the clip 10 times (5 s of video) so that the receiver's probe ends without waiting for a timeout
    proc = run_cli("--model", net, golden.CLIP, f"udp://127.0.0.1:{port}", "--loop", "10")
    receiver.join(60)
    assert proc.returncode == 0, proc.stderr
    got = receiver.received
    assert got.error is None and got.codec == "h264"
    assert len(got.frames) == 80 and {f[:2] for f in got.frames} == {(240, 180)}


def test_rtsp_output_is_pushed_to_an_rtsp_server(net):
    port = streams.free_port(streams.socket.SOCK_STREAM)
    url = f"rtsp://127.0.0.1:{port}/live"
    server = streams.receive(url, timeout=None, options={"rtsp_flags": "listen", "listen_timeout": "60"})
    streams.wait_listening(port, "tcp")
    proc = run_cli("--model", net, golden.CLIP, url, "--output-codec", "h264", "--bitrate", "1000000")
    server.join(60)
    assert proc.returncode == 0, proc.stderr
    assert server.received.error is None and len(server.received.frames) == 8


@pytest.mark.parametrize("name, codec, wanted", [("out.mkv", "h265", "hevc"), ("out.webm", None, "vp9"),
                                                 ("out.avi", "mjpeg", "mjpeg")])
def test_output_codecs(net, tmp_path, name, codec, wanted):
    flags = ["--output-codec", codec] if codec else []
    proc = run_cli("--model", net, golden.CLIP, tmp_path / name, *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") <= 3  # no encoder banner
    count, rate, size, found = streams.count_frames(tmp_path / name)
    assert (count, rate, size, found) == (8, 15, (240, 180), wanted)


def test_bitrate_sets_the_size_of_the_video(net, tmp_path):
    for bitrate in ("50000", "4000000"):
        assert run_cli("--model", net, "--loop", "3", golden.CLIP, tmp_path / f"{bitrate}.mp4", "--output-codec",
                       "mpeg4", "--bitrate", bitrate).returncode == 0
    small, large = (tmp_path / "50000.mp4").stat().st_size, (tmp_path / "4000000.mp4").stat().st_size
    assert small * 2 < large


@pytest.mark.parametrize("args, message", [
    (["OUT/v.mp4", "--output-codec", "vp8"], "cannot write libvpx video there"),
    (["OUT/v.mp4", "--output-codec", "nosuch"], "--output-codec nosuch: this PyAV's FFmpeg has no nosuch video "
                                                "encoder; it has h264, h265, hevc, vp8, vp9"),
    (["OUT/v.mp4", "--visualize", "classes"], "writes class indices as lossless single-channel PNG"),
    (["rtsp://@:8554/out"], "segnet has no built-in RTSP server"),
    (["udp://127.0.0.1"], "give the receiver as udp://HOST:PORT"),
    (["OUT/one.png"], "the frames of a video cannot all be written to one picture"),
])
def test_outputs_segnet_cannot_write_are_one_line_errors_before_any_work(net, tmp_path, args, message):
    args = [str(a).replace("OUT", str(tmp_path)) for a in args]
    assert_one_line_error(run_cli("--model", net, golden.CLIP, *args), 2, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source, message", [
    ("csi://0", "csi://0: MIPI CSI cameras are read through NVIDIA's Argus camera stack, which only Jetson devices "
                "have (use jetson-inference there)"),
    ("webrtc://@:8554/in", "WebRTC input is not supported: it needs the signalling and media server that "
                           "jetson-utils builds from GStreamer's webrtcbin, and FFmpeg"),
    ("/dev/video97", "/dev/video97: no such camera"),
    ("rtp://127.0.0.1", "give the port to receive on, rtp://@:PORT"),
])
def test_sources_segnet_cannot_read_are_one_line_errors(net, tmp_path, source, message):
    assert_one_line_error(run_cli("--model", net, source, tmp_path / "out.mp4"), 2, message)
    assert_one_line_error(run_cli("--model", net, source), 2, message)  # before "give an output" too


def test_a_list_needs_an_output_somewhere(net, tmp_path):
    listing = tmp_path / "cams.txt"
    listing.write_text(f"{golden.CLIP}\n{golden.CLIP}\n")
    assert_one_line_error(run_cli("--model", net, listing), 2, "give an output")
    listing.write_text(f"{golden.CLIP} one.mkv\n{golden.CLIP}\n")  # one output is enough
    assert run_cli("--model", net, listing).returncode == 0
    assert streams.count_frames(tmp_path / "one.mkv")[0] == 8


def test_input_codec_is_for_rtp_sources_only(net, tmp_path):
    assert_one_line_error(run_cli("--model", net, golden.CLIP, tmp_path / "o.mp4", "--input-codec", "h264"), 2,
                          "--input-codec h264 says what an rtp:// input carries")


def test_a_display_is_never_tried_without_one(net, tmp_path):
    headless = {"DISPLAY": None, "WAYLAND_DISPLAY": None}
    assert_one_line_error(run_cli("--model", net, golden.CLIP, "display://0", env=headless), 2,
                          "display://0: there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)")
    try:
        import cv2  # noqa: F401
    except ImportError:
        assert_one_line_error(run_cli("--model", net, golden.CLIP, "display://0", env={"DISPLAY": ":97"}), 2,
                              "a preview window needs OpenCV: pip install 'segnet[display]'")


@pytest.mark.parametrize("pattern, names", [("f_%i.jpg", [f"f_{i}.jpg" for i in range(8)]),
                                            ("%04i.png", [f"{i:04d}.png" for i in range(8)])])
def test_video_frames_as_a_numbered_sequence(net, tmp_path, pattern, names):
    assert run_cli("--model", net, golden.CLIP, tmp_path / "seq" / pattern).returncode == 0
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == sorted(names)


def test_json_stats_are_one_object_per_line_on_stdout(net, tmp_path):
    proc = run_cli("--model", net, golden.CLIP, "--json", "--stats-file", tmp_path / "s.jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == list(range(8)) and records[1]["time"] == pytest.approx(1 / 15, abs=1e-3)
    assert set(records[0]) == {"source", "frame", "time", "grid", "num_classes", "classes"}
    assert (tmp_path / "s.jsonl").read_text().splitlines() == lines
    assert "grid size" not in proc.stdout
    image = run_cli("--model", net, IMAGES / "city_0.jpg", "--stats", "--json")
    (record,) = [json.loads(line) for line in image.stdout.splitlines()]
    assert record["source"] == str(IMAGES / "city_0.jpg") and sum(c["count"] for c in record["classes"]) == 4


def test_an_unwritable_stats_file_is_a_usage_error(net, tmp_path):
    (tmp_path / "dir").mkdir()
    assert_one_line_error(run_cli("--model", net, golden.CLIP, "--stats-file", tmp_path / "dir"), 2,
                          f"cannot write --stats-file {tmp_path / 'dir'}")


def test_live_status_gives_fps_time_per_stage_latency_and_drops(caplog):
    from segnet.cli.console import Report

    caplog.set_level("INFO", logger="segnet")
    report = Report(quiet=False, interval=0.0)
    report(Started(None, 0, True, "net", (64, 64), 5, "onnxruntime", live=True))
    for i in range(3):
        report(ImageDone(i, f"cam frame {i}", None, None, seconds={"decode": 0.002, "inference": 0.010,
                                                                    "colorize": 0.004}, source="cam", frame=i,
                         latency=0.05, dropped=4))
    lines = [r.getMessage() for r in caplog.records if "frames:" in r.getMessage()]
    assert re.fullmatch(r"3 frames: [\d.]+ fps, latency 50 ms, 4 dropped, decode 2.0 network 10.0 draw 4.0 ms",
                        lines[-1])
    caplog.clear()
    quiet = Report(quiet=True, interval=0.0)
    quiet(Started(None, 0, True, "net", (64, 64), 5, "onnxruntime", live=True))
    quiet(ImageDone(0, "cam frame 0", None, None, seconds={"decode": 0.002}, source="cam", frame=0))
    assert not [r for r in caplog.records if "frames:" in r.getMessage()]


def test_tables_and_status_on_a_terminal_keep_off_the_bar(net, tmp_path):
    """In a terminal (a pty), each --stats table starts on a line of its own, never on the progress bar's,
    and the bar carries the status."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("city_0.jpg", "room_0.jpg", "trail_0.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    pid, fd = pty.fork()
    if pid == 0:  # the child: segnet-console on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "segnet.cli.console", "--model", str(net), "--stats",
                                  str(folder)])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode(errors="replace")
    screen = [line.rsplit("\r", 2)[-2] if line.endswith("\r") else line.rsplit("\r", 1)[-1]
              for line in text.split("\n")]
    for name in ("city_0.jpg", "room_0.jpg", "trail_0.jpg"):
        assert f"{folder / name}:" in screen, text
    assert [line for line in screen if line.startswith("grid size:")] == ["grid size: 2x2"] * 3
    assert "%|" in text and "network" in text and "fps" in text  # the bar was drawn, with the status


def test_help_names_the_new_options_without_pyav(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    (tmp_path / "av.py").write_text("raise ImportError('no PyAV here')\n")
    proc = subprocess.run([sys.executable, "-m", "segnet.cli.console", "--help"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0
    for flag in ("--input-loop", "--loop", "--output-codec", "--bitrate", "--json", "--stats-file",
                 "--input-codec", "--input-timeout"):
        assert flag in proc.stdout
