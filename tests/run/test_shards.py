"""Device shards (issue 20): the device executor in this process and in shard processes, each with its own
network, on chunks of one folder. On this CPU machine the shards run as the device executor does here
(onnxruntime's CPU provider, the CPU codecs standing in for nvImageCodec: ``--fuse on --image-codec gpu``), as
real processes from the fork server; the files must be the single-process executor's, byte for byte."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal

import pytest

from segnet import Options
from segnet.run import ImageDone, ImageFailed, run, shards
from segnet.run.planning import plan
from tests.conftest import IMAGES

NAMES = ("city_0.jpg", "city_1.jpg", "room_0.jpg", "trail_0.jpg", "object_0.jpg", "peds_2.jpg")


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def folder(tmp_path):
    """24 images of several sizes; three (3, 10, 17) are files that are not JPEGs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(24):
        data = b"\xff\xd8\xff not a jpeg" if i % 7 == 3 else (IMAGES / NAMES[i % len(NAMES)]).read_bytes()
        (folder / f"im{i:02d}.jpg").write_bytes(data)
    return folder


@pytest.fixture
def sharded(monkeypatch):
    """Shards for small folders, in chunks of 4; this process takes its first chunk only once a shard has
    taken one, so that both run images whichever starts first. Returns what each run's executor returned."""
    monkeypatch.setattr(shards, "MIN_IMAGES", 8)
    monkeypatch.setattr(shards, "CHUNK", 4)
    real_take, real_run = shards._State.take, shards.run
    returned: list[dict] = []

    def take(self, shard):
        """This process's first chunk once a shard has one; the shards' others once this process has one."""
        with self.lock:
            if shard is None and not self.taken[None]:
                assert self.lock.wait_for(lambda: any(self.taken[n] for n in self.held), timeout=300)
            elif shard is not None and any(self.taken[n] for n in self.held):
                assert self.lock.wait_for(lambda: self.taken[None] or self.stopping, timeout=300)
        chunk = real_take(self, shard)
        with self.lock:
            self.lock.notify_all()
        return chunk

    monkeypatch.setattr(shards._State, "take", take)
    monkeypatch.setattr(shards, "run", lambda *a, **k: returned.append(real_run(*a, **k)) or returned[-1])
    return returned


def test_shards_write_the_single_process_files_in_input_order(folder, tmp_path, sharded):
    events: list = []
    summary = run(folder, tmp_path / "shards", fuse="on", image_codec="gpu", processes=2, on_event=events.append)
    [result] = sharded
    assert result["kind"] == "shards" and len(result["images_by_shard"]) == 3
    assert result["images_by_shard"][0] > 0 and sum(result["images_by_shard"][1:]) > 0  # both ran images
    assert sum(result["images_by_shard"]) == 24
    ready = [t for t, n in zip(result["shard_ready_s"], result["images_by_shard"][1:]) if n]
    assert ready and all(t is not None and t >= 0 for t in ready)  # a shard that ran had asked
    reference_events: list = []
    reference = run(folder, tmp_path / "one", fuse="on", image_codec="gpu", processes=0,
                    on_event=reference_events.append)
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (21, 3)
    assert _digests(tmp_path / "shards") == _digests(tmp_path / "one")  # byte for byte
    per_image = [e for e in events if isinstance(e, (ImageDone, ImageFailed))]
    assert [e.index for e in per_image] == list(range(24))  # input order, whoever ran each
    failed = {e.index: e.error for e in per_image if isinstance(e, ImageFailed)}
    expected = {e.index: e.error for e in reference_events if isinstance(e, ImageFailed)}
    assert sorted(failed) == [3, 10, 17] and {i: str(e) for i, e in failed.items()} == {
        i: str(e) for i, e in expected.items()}  # the shards' one-line errors came back whole
    assert all({"decode", "inference", "encode"} <= set(e.seconds) for e in per_image if isinstance(e, ImageDone))


def test_a_shard_killed_fails_the_images_it_held_and_the_run_goes_on(folder, tmp_path, sharded, monkeypatch):
    """The first shard handed a chunk is killed then: those four images fail with a line saying so; every
    other image is done by this process and the other shard."""
    real_take = shards._State.take
    killed: list[int] = []
    victim: list[int] = []

    def take(self, shard):
        chunk = real_take(self, shard)
        if shard is not None and chunk and not victim:
            victim.append(shard)
            [proc] = [p for p in multiprocessing.active_children() if p.name == f"segnet-shard-{shard}"]
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(60)
            killed.extend(job.index for job in chunk)
        return chunk

    monkeypatch.setattr(shards._State, "take", take)
    events: list = []
    summary = run(folder, tmp_path / "out", fuse="on", image_codec="gpu", processes=2, on_event=events.append)
    assert len(killed) == 4
    failed = {e.index: str(e.error) for e in events if isinstance(e, ImageFailed)}
    for index in killed:
        assert failed.pop(index) == f"shard process {victim[0]} was killed (signal 9) while this image was in it"
    assert sorted(failed) == sorted({3, 10, 17} - set(killed))  # the bad files, wherever they went
    assert summary.done == 24 - len(killed) - len(failed)
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert len(written) == summary.done and not any(f"im{i:02d}.jpg" in written for i in killed)


def test_when_a_run_is_sharded(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "MIN_IMAGES", 8)
    options = Options(fuse="on", image_codec="gpu")
    feed = plan(folder, tmp_path / "out", options)
    assert shards.count(options, feed, worker_processes=5, records=False) == shards.SHARDS - 1
    assert shards.count(options, feed, worker_processes=2, records=False) == 2
    assert shards.count(options, feed, worker_processes=0, records=False) == 0  # --processes 0, few cores
    assert shards.count(options, feed, worker_processes=5, records=True) == 0  # statistics wanted here
    assert shards.count(Options(stats=True), feed, worker_processes=5, records=False) == 0
    monkeypatch.setattr(shards, "MIN_IMAGES", 25)
    assert shards.count(options, feed, worker_processes=5, records=False) == 0  # too few images


def test_a_failure_in_this_process_s_side_of_the_shards_ends_the_run(folder, tmp_path, sharded, monkeypatch):
    """A bug where shard results arrive must stop the run with the error, not leave it waiting for them."""

    def broken(self, *args):
        raise ValueError("boom")

    monkeypatch.setattr(shards._State, "done_by_shard", broken)
    with pytest.raises(RuntimeError, match=r"^the shards' dispatcher failed: ValueError\('boom'\)$"):
        run(folder, tmp_path / "out", fuse="on", image_codec="gpu", processes=2)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("segnet-shard")]
