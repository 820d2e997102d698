"""A video-file output stopped by Ctrl-C or SIGTERM, through a real segnet-console process: a playable partial
video of the frames done, written whole and renamed into place, and a status line that says it is partial."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.conftest import GRID, ROOT, one_hot
from tests.support.streams import count_frames

CLIP = ROOT / "tests" / "data" / "camvid-clip.mp4"  # 8 frames, 240x180, 15 fps


def lines_of(stream) -> queue.Queue:
    """The lines of ``stream`` as they come, read by a thread (so a test waits on them with a deadline)."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_video_run_keeps_a_playable_partial_video(constant_net, tmp_path, sig, code, word):
    pytest.importorskip("av")
    net = constant_net(one_hot(GRID, 4), width=128, height=64)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # --input-loop -1 plays the clip for ever: the run ends only by the signal
    proc = subprocess.Popen([sys.executable, "-m", "segnet", "--model", str(net), "--input-loop", "-1", "--json",
                             str(CLIP), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work)
    try:
        lines = lines_of(proc.stdout)
        for _ in range(20):  # 20 frames done: each frame's JSON line comes after the sink has encoded it
            line = lines.get(timeout=120)
            assert line is not None, proc.stderr.read()
            json.loads(line)
        assert not out.exists()  # until the video is complete, only its temporary file is there
        proc.send_signal(sig)
        proc.wait(timeout=120)  # its status lines are few: the pipe cannot fill meanwhile
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert stderr.rstrip().endswith(f"segnet-console: {word}") and "Traceback" not in stderr
    said = re.search(rf"segnet: {re.escape(str(out))}: stopped after (\d+) frames: kept as a partial video of "
                     "those frames", stderr)
    assert said, stderr
    frames = int(said[1])
    assert frames >= 20
    count, rate, size, codec = count_frames(out)  # decodes to the end: a complete container
    assert (count, rate, size, codec) == (frames, 15, (240, 180), "h264")
    assert sorted(p.name for p in work.iterdir()) == ["out.mp4"]  # no temporary file left


def test_a_video_run_stopped_by_an_error_still_leaves_nothing(constant_net, tmp_path, monkeypatch):
    """Only a signal keeps a partial video; a failure mid-run removes it, as before."""
    pytest.importorskip("av")
    from segnet import Options
    from segnet.run import feeds, run

    net = constant_net(one_hot(GRID, 4), width=128, height=64)
    out = tmp_path / "work" / "out.mp4"
    out.parent.mkdir()
    taken = feeds.FrameFeeds.details

    def fail_at_frame_5(self, job):
        if job.index == 5:
            raise RuntimeError("a bug mid-run")
        return taken(self, job)

    monkeypatch.setattr(feeds.FrameFeeds, "details", fail_at_frame_5)
    with pytest.raises(RuntimeError):
        run(CLIP, out, Options(model=net))
    assert list(out.parent.iterdir()) == []
