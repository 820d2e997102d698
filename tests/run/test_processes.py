"""Worker processes (``--processes``) keep the runner's promises: the same files as threads, input order, a bad
image that does not stop the folder, bounded memory, Ctrl-C and SIGTERM with nothing half-written, a worker
that fails or dies stopping the run with an error instead of a hang, and callers without a main guard."""

from __future__ import annotations

import functools
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from segnet import Options, Segmenter
from segnet.errors import SegnetError
from segnet.image_io import read_image
from segnet.run import processes
from segnet.run.job import Job
from tests.conftest import IMAGES
from tests.support import models
from tests.support.cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                ["void", "road", "car", "sky", "tree"], num_classes=5, width=160, height=96)


def _folder(tmp_path, bad=()):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, path in enumerate(sorted(IMAGES.glob("*.jpg"))):
        (folder / path.name).write_bytes(b"not a picture" if i in bad else path.read_bytes())
    return folder


def test_processes_write_what_threads_write_and_go_past_a_bad_image(net, tmp_path):
    folder = _folder(tmp_path, bad={4})
    outs = {}
    for kind, flags in (("threads", ["--processes", "0", "--fuse", "off"]),
                        ("processes", ["--processes", "2", "--fuse", "on"])):
        proc = run_cli("--model", net, *flags, "--batch-size", "3", "--visualize", "overlay,mask", folder,
                       tmp_path / kind)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("error:") == 1 and f"{sorted(IMAGES.glob('*.jpg'))[4].name}:" in proc.stderr
        outs[kind] = {p.name: p.read_bytes() for p in (tmp_path / kind).iterdir()}
    assert outs["processes"] == outs["threads"] and len(outs["threads"]) == len(list(folder.iterdir())) - 1


def test_sink_in_input_order_with_memory_bounded(net):
    pulled, sunk, ahead = [0], [], [0]

    def jobs():  # a generator: the pipeline must not list it
        paths = sorted(IMAGES.glob("*.jpg")) * 3
        for i, path in enumerate(paths):
            pulled[0] += 1
            load = functools.partial(read_image, path) if i != 7 else functools.partial(read_image, IMAGES / "no")
            yield Job(i, path.name, load)

    def sink(job):
        sunk.append((job.index, job.error is None, job.result is not None and job.result.image.shape))
        ahead[0] = max(ahead[0], pulled[0] - len(sunk))

    with Segmenter(model=net, batch_size=2) as seg:
        stats = processes.run(seg, jobs(), sink=sink, processes=2, depth=5)
    assert [i for i, _, _ in sunk] == list(range(42))
    assert [i for i, ok, _ in sunk if not ok] == [7]
    assert sunk[0][2] == read_image(sorted(IMAGES.glob("*.jpg"))[0]).shape  # the sink gets the whole result
    assert ahead[0] <= 5 + 1
    assert stats["kind"] == "processes" and stats["workers"] == 2 and stats["cpu_seconds"] > 0


def test_a_failing_worker_stops_the_run_and_a_dying_one_fails_its_own_images(net):
    with Segmenter(model=net) as seg:
        crash = [Job(0, "a", functools.partial(operator.truediv, 1, 0))]  # a bug, not a bad image
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            processes.run(seg, crash, processes=1)
        load = functools.partial(read_image, IMAGES / "city_0.jpg")
        dies = [Job(0, "a", load), Job(1, "b", functools.partial(os._exit, 3)), Job(2, "c", load)]
        sunk: list[Job] = []
        processes.run(seg, dies, sunk.append, processes=2)
        assert [j.index for j in sunk] == [0, 1, 2]
        assert "worker process 1 stopped (exit code 3)" in str(sunk[1].error)
        assert sunk[0].error is None and sunk[2].error is None  # the other worker did the rest
        every = [Job(0, "a", functools.partial(os._exit, 3)), *[Job(i, "x", load) for i in range(1, 20)]]
        with pytest.raises(SegnetError, match="every worker process died"):
            processes.run(seg, every, processes=1, depth=2)
        with pytest.raises(Exception, match="pickle"):  # a load that cannot travel fails here, not silently
            processes.run(seg, [Job(0, "a", lambda: None)], processes=1)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_to_the_whole_process_group_leaves_no_partial_files(net, tmp_path, sig, code, word):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    data = (IMAGES / "city_0.jpg").read_bytes()
    for i in range(300):
        (folder / f"f{i:03d}.jpg").write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), "--processes", "2",
                             "--visualize=overlay,mask", str(folder), str(out)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the signal goes to it and its workers
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.jpg"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C (or systemd's stop) does: every process gets it
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    written = sorted(out.iterdir())
    assert 3 <= len(written) < 300
    for path in written:  # complete pictures only, no temporary leftovers
        assert not path.name.startswith(".")
        with Image.open(path) as im:
            im.load()
    assert not _alive_in_group(proc.pid), "workers (or their fork server) outlived the run"


def _alive_in_group(group: int, wait: float = 10.0) -> list[str]:
    """Processes of the group that are still running (zombies waiting for a reaper do not count)."""
    deadline = time.time() + wait
    while True:
        ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(group)], capture_output=True, text=True).stdout
        alive = [line for line in ps.splitlines() if line.split()[1:2] != ["Z"]]
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)


def test_a_script_without_a_main_guard_runs_once(net, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import segnet.run\n"
                      f"print('run', segnet.run.run({str(IMAGES)!r}, None, model={str(net)!r}, processes=2).done)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"run {len(list(IMAGES.glob('*.jpg')))}\n"


def test_how_many_processes(monkeypatch):
    monkeypatch.setattr(processes, "cores", lambda: 16)
    assert processes.count(Options(), 512) == 15  # one core left to the network's process
    assert processes.count(Options(), 4) == 4 and processes.count(Options(), 1) == 0
    assert processes.count(Options(processes=0), 512) == 0 and processes.count(Options(processes=3), 512) == 3
    monkeypatch.setattr(processes, "cores", lambda: 4)
    assert processes.count(Options(), 512) == 0  # small machines: threads


def test_processes_are_capped_against_cores_and_memory(net, tmp_path):
    folder = _folder(tmp_path)
    before = _checksums(folder)
    huge = run_cli("--model", net, "--processes", "1024", folder, tmp_path / "out")
    assert_one_line_error(huge, 2, "--processes 1024: more worker processes than this machine can run")
    capped = run_cli("--model", net, "--processes", "2", folder, tmp_path / "out", env={"SEGNET_MAX_PROCESSES": "1"})
    assert_one_line_error(capped, 2, "--processes 2: more worker processes than this machine can run (1:")
    assert _checksums(folder) == before and not (tmp_path / "out").exists()


def _many(tmp_path, count=300):
    folder = tmp_path / "in"
    folder.mkdir()
    data = (IMAGES / "city_0.jpg").read_bytes()
    for i in range(count):
        (folder / f"f{i:03d}.jpg").write_bytes(data)
    return folder


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _workers(pid: int, count: int, timeout: float = 60.0) -> list[int]:
    """The worker processes of segnet process ``pid`` (children of its fork server), once ``count`` run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [w for child in _children(pid) for w in _children(child)]
        if len(workers) >= count:
            return workers
        time.sleep(0.01)
    raise AssertionError(f"no {count} workers under {pid}")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _checksums(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_fails_its_own_images_and_the_run_goes_on(net, tmp_path):
    folder, out = _many(tmp_path), tmp_path / "out"
    before = _checksums(folder)
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), "--processes", "2", str(folder),
                             str(out)], stderr=subprocess.PIPE, text=True)
    victim = _workers(proc.pid, 2)[0]
    os.kill(victim, signal.SIGSTOP)  # it holds its images: the run cannot end before it is killed
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    failed = [line for line in stderr.splitlines() if line.startswith("segnet-console: error: ")]
    assert failed and all("was killed (signal 9) while this image was in it" in line for line in failed), stderr
    assert "Traceback" not in stderr and "leaked" not in stderr
    assert len(list(out.iterdir())) + len(failed) == 300  # every other image was done
    assert _checksums(folder) == before
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"segnet-{victim}-")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc")
def test_workers_die_with_their_parent(net, tmp_path):
    folder, out = _many(tmp_path), tmp_path / "out"
    before = _checksums(folder)
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), "--processes", "2", str(folder),
                             str(out)], stderr=subprocess.DEVNULL)
    workers = _workers(proc.pid, 2)
    proc.kill()
    proc.wait(30)
    assert all(_gone(w, 20) for w in workers), "workers outlived their killed parent"
    assert not [n for n in os.listdir("/dev/shm") if any(n.startswith(f"segnet-{w}-") for w in workers)]
    assert _checksums(folder) == before
    assert all(not p.name.startswith(".") for p in out.rglob("*")) if out.exists() else True
