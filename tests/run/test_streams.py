"""Videos, cameras and streams through ``segnet.run.run``: live sources drop what the network cannot keep up
with and files never do, several sources are batched together without waiting for each other, files loop,
images and videos come over HTTP, and the results come out as class-index PNGs and JSON records."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from segnet import Options, Segmenter
from segnet.errors import UsageError
from segnet.run import Finished, ImageDone, ImageFailed, SourceEnded, Started, run
from tests.conftest import IMAGES
from tests.support import golden, models, streams
from tests.support.http_server import ArchiveServer

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A real stride-32 network whose class map depends on the image."""
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                [f"c{i}" for i in range(5)], num_classes=5, width=64, height=64)


def slowed(segmenter: Segmenter, seconds: float) -> Segmenter:
    """The real segmenter, its network taking ``seconds`` longer per call: a network slower than the camera."""
    infer = segmenter.infer_maps

    def slow(tensors):
        time.sleep(seconds)
        return infer(tensors)

    segmenter.infer_maps = slow  # type: ignore[method-assign]
    return segmenter


def by_type(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_a_live_source_drops_frames_it_cannot_keep_up_with_and_latency_stays_bounded(net):
    # a camera-like source: 50 frames at 100 fps, in real time; the network takes 40 ms a frame, so keeping
    # every frame would end 1.5 s behind the camera
    events = []
    with Segmenter(model=net) as segmenter:
        summary = run("lavfi://testsrc2=size=96x64:rate=100:duration=0.5,realtime", None,
                      Options(model=net, stats_json=True), on_event=events.append,
                      segmenter=slowed(segmenter, 0.04))
    (ended,) = by_type(events, SourceEnded)
    done = by_type(events, ImageDone)
    assert ended.error is None and ended.frames == 50
    assert ended.dropped == summary.dropped > 0 and summary.done + summary.dropped == 50 == len(done) + ended.dropped
    assert by_type(events, Started)[0].live and by_type(events, Started)[0].total is None
    assert max(e.latency for e in done) < 1.0  # bounded: a few frames' worth, never the whole backlog
    numbers = [e.frame for e in done]
    assert numbers == sorted(numbers) and numbers[-1] >= len(done)  # frame numbers of the source, with gaps


def test_a_file_never_drops_a_frame_however_slow_the_network(net, tmp_path):
    video = streams.make_video(tmp_path / "clip.mp4", 20)
    events = []
    with Segmenter(model=net) as segmenter:
        summary = run(video, tmp_path / "out.mp4", Options(model=net), on_event=events.append,
                      segmenter=slowed(segmenter, 0.02))
    assert (summary.done, summary.dropped) == (20, 0)
    assert [e.frame for e in by_type(events, ImageDone)] == list(range(20))
    assert streams.count_frames(tmp_path / "out.mp4")[0] == 20


def test_two_sources_are_batched_through_the_network_together(net, tmp_path):
    # more frames than a source reads ahead, so that neither can be taken whole before the other opens
    dark = streams.make_video(tmp_path / "dark.mp4", 24, colour=(10, 10, 10))
    bright = streams.make_video(tmp_path / "bright.mkv", 24, colour=(240, 240, 240))
    sources = tmp_path / "cams.txt"
    sources.write_text(f"# two cameras\n{dark.name}\n\n{bright}\n")
    calls = []
    events = []
    with Segmenter(model=net, batch_size=2) as segmenter:
        infer = segmenter.infer_maps

        def spy(tensors):
            calls.append([float(t.mean()) for t in tensors])  # dark frames normalise below 0, bright above
            return infer(tensors)

        segmenter.infer_maps = spy  # type: ignore[method-assign]
        summary = run(sources, tmp_path / "out", Options(model=net, batch_size=2), on_event=events.append,
                      segmenter=segmenter)
    assert summary.done == 48 and summary.sources_failed == 0
    assert any(min(c) < 0 < max(c) for c in calls if len(c) == 2)  # one inference call, both cameras
    assert sorted(len(c) for c in calls)[-1] == 2
    for name in ("dark", "bright"):
        files = sorted(p.name for p in (tmp_path / "out" / name).iterdir())
        assert files == [f"{name}-{i:06d}.png" for i in range(24)]
    for source in (str(dark.name), str(bright)):
        assert [e.frame for e in by_type(events, ImageDone) if e.source == source] == list(range(24))
    assert {e.source for e in by_type(events, SourceEnded)} == {dark.name, str(bright)}


def test_a_dead_or_slow_source_never_holds_up_the_others(net, tmp_path):
    port = streams.free_port()
    sources = tmp_path / "cams.txt"
    sources.write_text(f"udp://127.0.0.1:{port}\n"  # nothing ever sends here
                       "lavfi://testsrc2=size=96x64:rate=1:duration=2,realtime\n"  # a frame a second
                       f"{golden.CLIP}\n")  # 8 frames, at once
    events = []
    start = time.monotonic()
    summary = run(sources, None, Options(model=net, stats_json=True, input_timeout=1), on_event=events.append)
    assert time.monotonic() - start < 30
    order = [(type(e).__name__, getattr(e, "source", None), getattr(e, "frame", None)) for e in events]
    clip = [i for i, (kind, source, _) in enumerate(order) if kind == "ImageDone" and source == str(golden.CLIP)]
    slow = [i for i, (kind, source, _) in enumerate(order) if kind == "ImageDone" and source.startswith("lavfi")]
    dead = [e for e in by_type(events, SourceEnded) if e.source.startswith("udp")]
    assert len(clip) == 8 and len(slow) == 2
    assert clip[-1] < slow[1]  # all of the file while the slow camera had sent one frame
    assert len(dead) == 1 and "no data for 1 s" in str(dead[0].error)
    assert (summary.done, summary.sources_failed) == (10, 1)


def test_an_output_that_fails_stops_its_source_only(net, tmp_path):
    gone = f"rtsp://127.0.0.1:{streams.free_port(streams.socket.SOCK_STREAM)}/live"  # no RTSP server there
    sources = tmp_path / "cams.txt"
    sources.write_text(f"{golden.CLIP} {gone}\n{golden.CLIP} kept.mkv\n")
    events = []
    summary = run(sources, None, Options(model=net), on_event=events.append)
    (failed,) = [e for e in by_type(events, SourceEnded) if e.error is not None]
    assert str(failed.error).startswith(f"cannot write {gone}: ") and "refused" in str(failed.error).lower()
    assert summary.sources_failed == 1 and streams.count_frames(tmp_path / "kept.mkv")[0] == 8


def test_input_loop_plays_a_file_n_times_with_times_going_on(net):
    events = []
    summary = run(golden.CLIP, None, Options(model=net, stats_json=True, input_loop=3), on_event=events.append)
    assert by_type(events, Started)[0].total == 24 and summary.done == 24
    done = by_type(events, ImageDone)
    assert [e.frame for e in done] == list(range(24))
    times = [e.time for e in done]
    assert all(b > a for a, b in zip(times, times[1:])) and times[8] == pytest.approx(8 / 15, abs=1e-3)
    with pytest.raises(UsageError, match="input_loop=3 replays video files"):
        run(IMAGES / "city_0.jpg", None, Options(model=net, stats=True, input_loop=3))


def test_an_image_url_gives_the_picture_of_the_same_file(net, tmp_path):
    with ArchiveServer() as server:
        url = server.add("/pics/city_0.jpg", (IMAGES / "city_0.jpg").read_bytes())
        missing = server.url("/pics/gone.jpg")
        assert run(url, tmp_path / "web", Options(model=net)).done == 1
        events = []
        failed = run(missing, tmp_path / "gone.png", Options(model=net), on_event=events.append)
    assert run(IMAGES / "city_0.jpg", tmp_path / "file.jpg", Options(model=net)).done == 1
    web = np.asarray(Image.open(tmp_path / "web" / "city_0.jpg"))
    assert np.array_equal(web, np.asarray(Image.open(tmp_path / "file.jpg")))
    assert failed.failed == 1 and str(by_type(events, ImageFailed)[0].error) == f"{missing}: HTTP 404 Not Found"
    assert not (tmp_path / "gone.png").exists()


def test_an_image_url_larger_than_the_limit_fails_alone(net, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNET_MAX_URL_IMAGE_BYTES", "50000")  # city_0.jpg is about 300 KB
    events = []
    with ArchiveServer() as server:
        url = server.add("/city_0.jpg", (IMAGES / "city_0.jpg").read_bytes())
        summary = run(url, tmp_path / "out.png", Options(model=net), on_event=events.append)
    assert summary.failed == 1 and not (tmp_path / "out.png").exists()
    assert str(by_type(events, ImageFailed)[0].error) == (f"{url}: larger than 50,000 bytes, more than segnet fetches "
                                                          "for an image (raise SEGNET_MAX_URL_IMAGE_BYTES)")


def test_a_video_over_http_keeps_every_frame(net, tmp_path):
    with ArchiveServer() as server:
        url = server.add("/clip.mp4", golden.CLIP.read_bytes())
        summary = run(url, tmp_path / "out.mkv", Options(model=net))
    assert (summary.done, summary.dropped) == (8, 0)
    assert streams.count_frames(tmp_path / "out.mkv")[:3] == (8, 15, (240, 180))


def point_sampled(class_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """jetson's point filter, per pixel (SPEC 4.3): cell (int(x / W * gw), int(y / H * gh)) in float32."""
    gh, gw = class_map.shape
    xs = (np.arange(width, dtype=np.float32) / np.float32(width) * np.float32(gw)).astype(int)
    ys = (np.arange(height, dtype=np.float32) / np.float32(height) * np.float32(gh)).astype(int)
    return class_map[ys[:, None], xs[None, :]]


def test_class_ids_are_the_class_map_point_sampled_at_the_image_size(net, tmp_path):
    source = IMAGES / "object_0.jpg"  # 500x333: not a multiple of the grid
    assert run([source, IMAGES / "city_0.jpg"], tmp_path / "ids", Options(model=net, visualize="classes")).done == 2
    with Segmenter(model=net) as segmenter:
        class_map = segmenter(source).class_map
        expected = point_sampled(class_map, 500, 333)
        assert np.array_equal(segmenter(source).classes(), expected)
    with Image.open(tmp_path / "ids" / "object_0.png") as written:  # a folder names them .png
        assert written.mode == "L" and written.format == "PNG"
        assert np.array_equal(np.asarray(written), expected)
    assert len(np.unique(expected)) > 1


def test_class_ids_of_video_frames_in_a_numbered_sequence(net, tmp_path):
    run(golden.CLIP, tmp_path / "ids" / "f_%04i.png", Options(model=net, visualize="classes"))
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == [f"f_{i:04d}.png" for i in range(8)]
    frames = list(av.open(str(golden.CLIP)).decode(video=0))
    with Segmenter(model=net) as segmenter:
        for i in (0, 7):
            class_map = segmenter(frames[i].to_ndarray(format="rgb24")).class_map
            written = np.asarray(Image.open(tmp_path / "ids" / f"f_{i:04d}.png"))
            assert np.array_equal(written, point_sampled(class_map, 240, 180))


@pytest.mark.parametrize("output", ["ids.jpg", "ids_%04i.jpg", "ids.mp4", "udp://127.0.0.1:9/"])
def test_class_ids_refuse_lossy_outputs_before_any_work(net, tmp_path, output):
    target = output if "://" in output else tmp_path / output
    source = golden.CLIP if "mp4" in output or "udp" in output else IMAGES / "city_0.jpg"
    with pytest.raises(UsageError, match="writes class indices as lossless single-channel PNG"):
        run(source, target, Options(model=net, visualize="classes"))
    assert list(tmp_path.iterdir()) == []


def test_json_records_are_the_library_histogram(net, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("city_0.jpg", "room_0.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    log = tmp_path / "stats" / "log.jsonl"
    events = []
    run(folder, None, Options(model=net, stats_json=True, stats_file=log), on_event=events.append)
    records = [e.record for e in by_type(events, ImageDone)]
    with Segmenter(model=net) as segmenter:
        for record, name in zip(records, ("city_0.jpg", "room_0.jpg")):
            result = segmenter(folder / name)
            counts = result.histogram()
            assert record["source"] == str(folder / name) and "frame" not in record
            assert record["grid"] == {"width": 2, "height": 2} and record["num_classes"] == 5
            assert [c["count"] for c in record["classes"]] == counts.tolist()
            assert [c["name"] for c in record["classes"]] == result.class_names
            assert [c["fraction"] for c in record["classes"]] == (counts / counts.sum()).tolist()
    assert [json.loads(line) for line in log.read_text().splitlines()] == records
    run(golden.CLIP, None, Options(model=net, stats_file=log))  # appends, one line per frame
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 10 and [r["frame"] for r in lines[2:]] == list(range(8))
    assert lines[3]["time"] == pytest.approx(1 / 15, abs=1e-3) and lines[3]["source"] == str(golden.CLIP)


def test_unsupported_sources_say_why_in_one_line(net, tmp_path):
    for spec, message in [
        ("csi://0", "MIPI CSI cameras are read through NVIDIA's Argus camera stack, which only Jetson devices have"),
        ("webrtc://@:8554/in", "WebRTC input is not supported: it needs the signalling and media server"),
        ("/dev/video97", "/dev/video97: no such camera"),
        ("v4l2:///dev/video97", "no such camera (/dev/video97 does not exist)"),
        ("gopher://x/y", "unknown source kind 'gopher://'"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run(spec, tmp_path / "out.mp4", Options(model=net))
    with pytest.raises(UsageError, match="segnet has no built-in RTSP server"):
        run(golden.CLIP, "rtsp://@:8554/out", Options(model=net))
    with pytest.raises(UsageError, match="WebRTC output is not supported"):
        run(golden.CLIP, "webrtc://@:8554/out", Options(model=net))


def test_a_list_of_sources_checks_every_line_before_any_work(net, tmp_path):
    listing = tmp_path / "cams.txt"
    listing.write_text(f"{golden.CLIP} {tmp_path / 'a.mp4'}\n{golden.CLIP} {tmp_path / 'a.mp4'}\n")
    with pytest.raises(UsageError, match="would both be written to"):
        run(listing, None, Options(model=net))
    listing.write_text(f"{golden.CLIP}\n{IMAGES / 'city_0.jpg'}\n")
    with pytest.raises(UsageError, match="line 2: .*a list takes videos, cameras and streams"):
        run(listing, tmp_path / "out", Options(model=net))
    listing.write_text(f"{golden.CLIP}\ncsi://0\n")
    with pytest.raises(UsageError, match="csi://0: MIPI CSI"):
        run(listing, tmp_path / "out", Options(model=net))
    listing.write_text(f"{golden.CLIP}\n{golden.CLIP}\n")
    with pytest.raises(UsageError, match="2 sources cannot share one output"):
        run(listing, tmp_path / "one.mp4", Options(model=net))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.txt"]


def test_file_uris_name_paths(net, tmp_path):
    assert run(f"file://{golden.CLIP}", f"file://{tmp_path}/out.mkv", Options(model=net)).done == 8
    assert streams.count_frames(tmp_path / "out.mkv")[0] == 8
    assert run(f"file://{IMAGES / 'city_0.jpg'}", f"file://{tmp_path}/city.png", Options(model=net)).done == 1
    assert Image.open(tmp_path / "city.png").size == (1024, 512)


def test_events_and_summary_of_a_stream_run(net, tmp_path):
    events = []
    summary = run(golden.CLIP, tmp_path / "frames", Options(model=net), on_event=events.append)
    assert isinstance(events[-1], Finished) and events[-1].summary == summary
    assert isinstance(events[-2], SourceEnded) and events[-2].frames == 8 and events[-2].error is None
    assert len(list((tmp_path / "frames").glob("camvid-clip-*.png"))) == 8


def test_a_live_source_keeps_its_first_frame_until_the_run_takes_it():
    """A burst of frames before the run takes any: the later ones are dropped, the first stays, so a live run
    starts at its source's first frame however busy the machine is while it starts (then the oldest go)."""
    import threading
    from fractions import Fraction

    import numpy as np

    from segnet import Options
    from segnet.run import Frame, InputKind, Opened
    from segnet.run.feeds import LIVE_BUFFER, SourceReader

    class Burst:
        def open(self):
            return Opened(Fraction(30), None, None)

        def frames(self):
            for n in range(6):
                yield Frame(np.full((4, 4, 3), n, np.uint8), n / 30)

        def close(self):
            pass

    class Camera(InputKind):
        live = True

        def reader(self, options):
            return Burst()

    reader = SourceReader(0, Camera("burst://"), None, Options())
    reader._read(threading.Condition(), threading.Event())  # the whole burst, nothing taken meanwhile
    assert [w.number for w in reader.buffer] == [0, 5] and len(reader.buffer) == LIVE_BUFFER
    assert reader.dropped == 4
