"""Every picture segnet-console writes is exactly what it wrote before the package was reorganised: the
bundled images with the real default network, both filter modes, overlay, mask and composite, a batch, a
real third-party model, and every frame of a video (``tests/support/golden.py`` made the fingerprints)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import golden

EXPECTED = json.loads(golden.GOLDEN.read_text())


@pytest.mark.parametrize("case", sorted(golden.CASES))
def test_pictures_are_unchanged(case, tmp_path):
    if case == "video-frames":
        pytest.importorskip("av")
    got = golden.fingerprint(case, tmp_path)
    expected = EXPECTED[case]
    if golden.CASES[case][1] == golden.SOME:  # run on a few of the images the fingerprints were made on
        expected = {name: digest for name, digest in expected.items() if name.split("/")[-1] in golden.SOME}
        assert len(expected) == len(golden.SOME)
    assert got == expected


def test_a_batch_writes_what_single_images_write():
    assert EXPECTED["overlay-linear-batch4"] == EXPECTED["overlay-linear"]


def test_video_file_output_has_every_frame_close_to_the_exact_frames(tmp_path):
    """H.264 is lossy: the frames of the written video are within a few levels of the exact PNG frames."""
    av = pytest.importorskip("av")
    from PIL import Image

    assert golden.console(["-q", str(golden.CLIP), str(tmp_path / "frames")]) == 0
    assert golden.console(["-q", str(golden.CLIP), str(tmp_path / "out.mp4")]) == 0
    exact = [np.asarray(Image.open(p).convert("RGB"), np.int16) for p in sorted((tmp_path / "frames").iterdir())]
    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    assert len(frames) == len(exact) == 8
    for got, want in zip(frames, exact):
        assert got.shape == want.shape and np.abs(got - want).mean() < 4
