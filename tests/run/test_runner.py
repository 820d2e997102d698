"""``segnet.run.run``: folders, globs and videos as a library call that reports through events and never
prints."""

from __future__ import annotations

import numpy as np
import pytest

from segnet import Options, Segmenter
from segnet.errors import UsageError
from segnet.run import Finished, ImageDone, ImageFailed, Started, run
from tests.conftest import GRID, IMAGES, one_hot
from tests.support import golden


@pytest.fixture
def net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64)


def test_a_folder_reports_every_image_in_order_and_prints_nothing(net, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    for name, source in zip(names, ["city_0.jpg", "trail_0.jpg", "room_0.jpg", "object_0.jpg"]):
        (folder / name).write_bytes((IMAGES / source).read_bytes())
    (folder / "c.jpg").write_bytes(b"not a picture")
    events = []
    summary = run(folder, tmp_path / "out", Options(model=net, stats=True, workers=2), on_event=events.append)
    assert capsys.readouterr() == ("", "")
    assert isinstance(events[0], Started) and events[0].total == 4 and events[0].several
    assert isinstance(events[-1], Finished) and events[-1].summary == summary
    per_image = events[1:-1]
    assert [e.index for e in per_image] == [0, 1, 2, 3]
    assert [type(e) for e in per_image] == [ImageDone, ImageDone, ImageFailed, ImageDone]
    assert "not an image Pillow can read" in str(per_image[2].error)
    assert (summary.done, summary.failed, summary.skipped) == (3, 1, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.jpg", "d.jpg"]
    with Segmenter(model=net) as segmenter:
        assert per_image[0].stats == segmenter(folder / "a.jpg").stats()
    assert per_image[0].target == tmp_path / "out" / "a.jpg" and per_image[0].result.class_map.shape == (2, 4)


def test_keyword_options_and_a_loaded_segmenter_can_be_reused(net, tmp_path):
    with Segmenter(model=net) as segmenter:
        first = run(IMAGES / "city_0.jpg", tmp_path / "one.png", segmenter=segmenter, visualize="mask")
        again = run([IMAGES / "city_0.jpg", IMAGES / "room_0.jpg"], tmp_path / "two", segmenter=segmenter)
    assert (first.done, first.several, again.done, again.several) == (1, False, 2, True)
    mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "one.png"))
    assert mask.shape == (512, 1024, 3)


def test_problems_with_the_run_itself_raise_before_any_image(net, tmp_path):
    with pytest.raises(UsageError, match="no such file or directory"):
        run(tmp_path / "missing", None, Options(model=net))
    with pytest.raises(UsageError, match="a video output needs a video input"):
        run(IMAGES / "city_0.jpg", tmp_path / "out.mp4", Options(model=net))
    with pytest.raises(UsageError, match="unknown option 'alhpa'"):
        run(IMAGES / "city_0.jpg", None, alhpa=3)


def test_a_video_reports_frames(net, tmp_path):
    pytest.importorskip("av")
    events = []
    summary = run(golden.CLIP, tmp_path / "frames", Options(model=net), on_event=events.append)
    assert summary.done == 8 and [e.name for e in events if isinstance(e, ImageDone)][0] == "camvid-clip.mp4 frame 0"
    assert len(list((tmp_path / "frames").iterdir())) == 8
