"""Nothing lost, nothing overwritten, nothing unbounded, through segnet-console as a user meets it: a really
full disk (a small tmpfs), file names at the 255-byte limit, SIGTERM mid-folder, network inputs too large to
allocate, a Ray address where nothing answers, the limits themselves and the README that lists them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segnet import util
from segnet.errors import SegnetError, UsageError
from segnet.image_io import write_image
from segnet.options import LIMITS, limit
from tests.conftest import IMAGES, ROOT
from tests.support import models
from tests.support.cli import assert_one_line_error, run_cli

CLIP = ROOT / "tests" / "data" / "camvid-clip.mp4"


@pytest.fixture
def net(constant_net):
    return constant_net(np.zeros((2, 1, 2), np.float32), width=64, height=32)


@pytest.fixture
def small_disk(tmp_path):
    """Factory: a tmpfs of ``size`` (``"64k"``) mounted in tmp_path, unmounted afterwards."""
    mounted = []

    def make(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill a disk: {done.stderr.strip() or done.returncode}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def assert_complete_jpeg(path: Path) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\xff\xd9"), f"{path} is cut off"
    Image.open(path).load()


# -- a full disk ------------------------------------------------------------------------------------------


def test_full_disk_jpeg_fails_and_leaves_nothing(net, small_disk):
    disk = small_disk("64k")  # the city overlay is about 300 KB
    out = disk / "out.jpg"

    proc = run_cli("--model", net, IMAGES / "city_0.jpg", out)

    assert_one_line_error(proc, 1, f"cannot write {out}: no space left on the device")
    assert "->" not in proc.stderr  # no "done" line
    assert list(disk.iterdir()) == []


def test_full_disk_folder_run_reports_each_failure_and_keeps_only_whole_pictures(net, small_disk):
    disk = small_disk("128k")
    out = disk / "out"

    proc = run_cli("--model", net, IMAGES, out)

    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    written = sorted(p.name for p in out.iterdir())
    failed = re.findall(r"cannot write (\S+): no space left on the device", proc.stderr)
    total = len(list(IMAGES.glob("*.jpg")))
    assert written and failed and len(written) + len(failed) == total
    assert re.search(rf"{len(written)} of {total} images done in .*, {len(failed)} failed", proc.stderr)
    for name in written:
        assert_complete_jpeg(out / name)
    assert hidden(disk) == []


def test_full_disk_video_output_fails_and_leaves_nothing(net, small_disk):
    pytest.importorskip("av")
    disk = small_disk("8k")  # the clip's overlay is about 20 KB
    out = disk / "v.mp4"

    proc = run_cli("--model", net, CLIP, out)

    assert_one_line_error(proc, 1, f"cannot write {out}: no space left on the device")
    assert "images done" not in proc.stderr
    assert list(disk.iterdir()) == []


# -- file names and permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["a" * 251, "é" * 125], ids=["ascii", "two-byte"])
def test_file_names_at_the_255_byte_limit_work_end_to_end(net, tmp_path, stem):
    folder = tmp_path / "in"
    folder.mkdir()
    name = f"{stem}.jpg"
    assert len(os.fsencode(name)) in (254, 255)
    (folder / name).write_bytes((IMAGES / "humans_0.jpg").read_bytes())

    proc = run_cli("--model", net, folder, tmp_path / "out")

    assert proc.returncode == 0, proc.stderr
    assert_complete_jpeg(tmp_path / "out" / name)
    assert hidden(tmp_path / "out") == []


def test_a_name_too_long_is_blamed_on_the_name_not_the_folder(tmp_path):
    out = tmp_path / ("b" * 252 + ".png")  # 256 bytes

    with pytest.raises(SegnetError) as info:
        write_image(np.zeros((4, 4, 3), np.uint8), out)

    assert str(info.value) == f"cannot write {out}: file name too long"
    assert list(tmp_path.iterdir()) == []


def test_pictures_and_videos_follow_the_umask(net, tmp_path, monkeypatch):
    pytest.importorskip("av")
    monkeypatch.setattr(util, "_mode", None)  # the umask is read once per process
    previous = os.umask(0o027)
    try:
        picture, video = tmp_path / "p.png", tmp_path / "v.mp4"
        assert run_cli("--model", net, IMAGES / "humans_0.jpg", picture).returncode == 0
        assert run_cli("--model", net, CLIP, video).returncode == 0
    finally:
        os.umask(previous)
    assert oct(picture.stat().st_mode & 0o777) == oct(video.stat().st_mode & 0o777) == "0o640"


def test_sigterm_mid_folder_stops_cleanly_and_leaves_no_temporary_files(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    (folder / "img000.jpg").write_bytes((IMAGES / "city_0.jpg").read_bytes())
    for i in range(1, 150):
        os.link(folder / "img000.jpg", folder / f"img{i:03d}.jpg")
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=3, width=64, height=64)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "segnet.cli.console", "--model", str(net), "--workers", "2",
                             str(folder), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out.is_dir() and len(list(out.glob("*.jpg"))) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # what timeout, docker stop and systemd send
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert stderr.rstrip().endswith("segnet-console: terminated") and "Traceback" not in stderr
    written = list(out.glob("*.jpg"))
    assert 3 <= len(written) < 150
    for path in written:
        assert_complete_jpeg(path)
    assert hidden(out) == []


# -- network inputs too large to allocate -------------------------------------------------------------------


def _model(path: Path, width, height) -> Path:
    """Average pool 32 + 1x1 conv to 2 classes; ``width``/``height`` may be symbolic names."""
    nodes = [helper.make_node("AveragePool", ["input_0"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
             helper.make_node("Conv", ["pooled", "w"], ["output_0"])]
    grid = [h // 32 if isinstance(h, int) else "gh" for h in (height, width)]
    graph = helper.make_graph(
        nodes, "pool", [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 2, *grid])],
        [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_with_a_huge_fixed_input_is_refused_before_allocating(tmp_path):
    model = _model(tmp_path / "huge.onnx", 100000, 100000)

    proc = run_cli("--model", model, IMAGES / "humans_0.jpg", tmp_path / "o.png")

    assert_one_line_error(proc, 1, f"model {model}: a 100000x100000 network input is 10,000,000,000 pixels, more "
                          "than segnet allocates (16,777,216); raise the limit with SEGNET_MAX_INPUT_PIXELS")
    assert not (tmp_path / "o.png").exists()


def test_one_image_too_large_for_a_symbolic_size_model_fails_alone(tmp_path, monkeypatch):
    model = _model(tmp_path / "any-size.onnx", "W", "H")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, size in [("a.png", (64, 64)), ("big.png", (320, 256)), ("c.png", (96, 64))]:
        Image.new("RGB", size, (90, 20, 200)).save(folder / name)
    monkeypatch.setenv("SEGNET_MAX_INPUT_PIXELS", str(300 * 256))

    proc = run_cli("--model", model, folder, tmp_path / "out")

    assert_one_line_error(proc, 1, "a 320x256 image: a 320x256 network input is 81,920 pixels, more than segnet "
                          "allocates (76,800); raise the limit with SEGNET_MAX_INPUT_PIXELS")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert re.search(r"2 of 3 images done in .*, 1 failed", proc.stderr)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_a_limit_that_is_not_a_positive_number_is_a_usage_error(net, tmp_path, monkeypatch, value):
    monkeypatch.setenv("SEGNET_MAX_INPUT_PIXELS", value)
    with pytest.raises(UsageError, match=rf"^SEGNET_MAX_INPUT_PIXELS='{value}': give a number above 0$"):
        limit("SEGNET_MAX_INPUT_PIXELS")
    assert_one_line_error(run_cli("--model", net, IMAGES / "humans_0.jpg", tmp_path / "o.png"), 2,
                          "SEGNET_MAX_INPUT_PIXELS")


@pytest.mark.parametrize("prog, args", [("segnet-console", ["IMAGES", "OUT"]), ("segnet-eval", ["IMAGES", "IMAGES"]),
                                        ("segnet-download-models", ["fcn-resnet18-voc"])])
def test_a_bad_limit_is_said_once_before_any_work(net, tmp_path, monkeypatch, prog, args):
    """Not once per image, when each image first reads it."""
    monkeypatch.setenv("SEGNET_MAX_IMAGE_PIXELS", "lots")
    sums = {p.name: p.read_bytes() for p in IMAGES.iterdir()}
    given = [{"IMAGES": IMAGES, "OUT": tmp_path / "out"}.get(a, a) for a in args]
    proc = run_cli(*(["--model", net] if prog != "segnet-download-models" else ["--models-dir", tmp_path / "m"]),
                   *given, prog=prog)
    line = assert_one_line_error(proc, 2, prog=prog)
    assert line == f"{prog}: error: SEGNET_MAX_IMAGE_PIXELS='lots': give a number above 0"
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""  # nothing loaded, nothing done first
    assert sorted(p.name for p in tmp_path.iterdir()) == [net.name]
    assert {p.name: p.read_bytes() for p in IMAGES.iterdir()} == sums
    assert run_cli("--help", prog=prog).returncode == 0  # help needs no limit


# -- Ray ------------------------------------------------------------------------------------------------------


def test_ray_address_where_nothing_listens_fails_at_once(net, tmp_path):
    start = time.monotonic()
    proc = run_cli("--model", net, "--ray=127.0.0.1:1", IMAGES, tmp_path / "out")
    assert_one_line_error(proc, 1, "cannot reach the Ray cluster at 127.0.0.1:1: connection refused")
    assert time.monotonic() - start < 30  # a bound, not a speed target: it used to wait forever


def test_ray_address_that_never_answers_gives_up_after_the_connect_timeout(net, tmp_path, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname(), timeout=5)  # the backlog is now full: SYNs go unanswered
    monkeypatch.setenv("SEGNET_RAY_CONNECT_TIMEOUT", "0.3")
    try:
        proc = run_cli("--model", net, f"--ray=127.0.0.1:{server.getsockname()[1]}", IMAGES, tmp_path / "out")
    finally:
        filler.close()
        server.close()
    assert_one_line_error(proc, 1, "no answer within 0.3 s (wait longer with SEGNET_RAY_CONNECT_TIMEOUT)")


# -- documentation ----------------------------------------------------------------------------------------


def test_the_readme_lists_every_limit_with_its_default():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Limits and guarantees"):]
    section = section[:section.index("\n## ", 1)]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `SEGNET_")}
    assert set(rows) == {f"`{variable}`" for variable in LIMITS}
    for variable, (default, _) in LIMITS.items():
        if default is not None:
            assert f"| {int(default):,}" in rows[f"`{variable}`"], variable
