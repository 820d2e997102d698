"""The pipelined runner: order, bounded memory, failures mid-folder, batches, video, interruption."""

import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from segnet import Segmenter
from segnet.errors import SegnetError
from segnet.run import threads
from segnet.run.job import Job
from tests.conftest import IMAGES
from tests.support import models
from tests.support.cli import run_cli
from tests.support.streams import count_frames, make_video


@pytest.fixture(scope="module")
def pooling_net(tmp_path_factory):
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                [f"c{i}" for i in range(5)], num_classes=5, width=160, height=96)


def _jobs(n, delays=False, fail=()):
    rng = random.Random(0)
    image = np.asarray(Image.open(IMAGES / "room_0.jpg").convert("RGB"))

    def load(i):
        if delays:
            time.sleep(rng.random() * 0.01)
        if i in fail:
            raise SegnetError(f"image {i} is broken")
        return image

    return [Job(i, f"img{i}", lambda i=i: load(i)) for i in range(n)]


@pytest.mark.parametrize("batch", [1, 3])
def test_results_reach_the_sink_in_input_order(pooling_net, batch):
    seen = []
    with Segmenter(model=pooling_net, batch_size=batch) as net:
        threads.run(net, _jobs(20, delays=True, fail={4, 11}), sink=lambda job: seen.append(
            (job.index, job.error is None)), workers=3)
    assert [i for i, _ in seen] == list(range(20))
    assert [i for i, ok in seen if not ok] == [4, 11]


def test_memory_stays_bounded_with_a_slow_consumer(pooling_net):
    alive, peak, lock = [0], [0], threading.Lock()
    image = np.asarray(Image.open(IMAGES / "room_0.jpg").convert("RGB"))

    def load():
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        return image

    def slow_sink(job):
        time.sleep(0.005)
        with lock:
            alive[0] -= 1

    jobs = (Job(i, str(i), load) for i in range(300))  # a generator: never listed in full
    with Segmenter(model=pooling_net, batch_size=2) as net:
        threads.run(net, jobs, sink=slow_sink, workers=2, depth=4)
    assert alive[0] == 0
    assert peak[0] <= 4 + 2 + 4 + 1  # loading + one batch + rendering, whatever the input count


def test_batches_give_the_same_results_as_single_images(pooling_net):
    paths = sorted(IMAGES.glob("*.jpg"))
    with Segmenter(model=pooling_net) as one, Segmenter(model=pooling_net, batch_size=4) as four:
        singles = [one(p) for p in paths]
        batched = four.segment_batch(paths)
    for a, b in zip(singles, batched):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
        assert (a.class_map == b.class_map).all()


def test_batch_size_on_the_command_line_gives_identical_files(pooling_net, tmp_path):
    outs = []
    for batch in (1, 4):
        out = tmp_path / f"b{batch}"
        proc = run_cli("--model", pooling_net, f"--batch-size={batch}", "--visualize=mask", IMAGES, out)
        assert proc.returncode == 0, proc.stderr
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1] and len(outs[0]) == len(list(IMAGES.glob("*.jpg")))


def test_skip_existing_resumes_a_folder(pooling_net, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "city_0.jpg").write_bytes(b"already done")
    proc = run_cli("--model", pooling_net, "--skip-existing", IMAGES, out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "city_0.jpg").read_bytes() == b"already done"
    assert "1 skipped (output exists)" in proc.stderr
    assert len(list(out.iterdir())) == len(list(IMAGES.glob("*.jpg")))


def test_ctrl_c_leaves_no_partial_outputs(pooling_net, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    data = (IMAGES / "city_0.jpg").read_bytes()
    for i in range(200):
        (folder / f"f{i:03d}.jpg").write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(pooling_net), "--visualize=overlay,mask",
                             str(folder), str(out / "x")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "x").glob("*.jpg"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    written = sorted((out / "x").iterdir())
    assert 3 <= len(written) < 200
    for path in written:  # every file there is a complete picture, no temporary leftovers
        assert not path.name.startswith(".")
        with Image.open(path) as im:
            im.load()
            assert im.size == (1536, 512)


def test_video_round_trip_keeps_every_frame_and_the_rate(pooling_net, tmp_path):
    pytest.importorskip("av")
    source = tmp_path / "in.mp4"
    make_video(source, 37, "12")
    out = tmp_path / "out.mp4"
    proc = run_cli("--model", pooling_net, "--batch-size=4", source, out)
    assert proc.returncode == 0, proc.stderr
    count, rate, size, _ = count_frames(out)
    assert count == 37 and rate == 12 and size == (96, 64)
    frames = tmp_path / "frames"
    assert run_cli("--model", pooling_net, "--visualize=mask", source, frames).returncode == 0
    assert len(list(frames.glob("in-*.png"))) == 37
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_odd_sized_video_and_composite(pooling_net, tmp_path):
    pytest.importorskip("av")
    source = tmp_path / "odd.mkv"
    make_video(source, 5, "30000/1001", size=(98, 66))
    out = tmp_path / "out.mkv"
    assert run_cli("--model", pooling_net, "--visualize=overlay,mask", source, out).returncode == 0
    count, rate, size, _ = count_frames(out)
    assert count == 5 and rate == pytest.approx(30000 / 1001) and size == (148, 66)  # 98 + 49 = 147 -> padded


def test_video_run_that_fails_before_any_frame_leaves_nothing(tmp_path):
    pytest.importorskip("av")
    source = tmp_path / "in.mp4"
    make_video(source, 3, "12")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    proc = run_cli("--model", bad, source, tmp_path / "out.mp4")
    assert proc.returncode == 1 and "cannot load model" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "in.mp4"]
