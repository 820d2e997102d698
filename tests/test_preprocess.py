"""Pre-processing memory is bounded by the pixels read and produced, whatever the image's shape: a wide strip
is narrowed before it is stretched (the same pixels are picked: tests/cli/test_golden.py holds normal images
to their bytes), and a strip past the side limit is refused before it is decoded.

Peak memory is that of a real child process (``os.wait4``'s resource usage of that one child)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from PIL import Image

from segnet import preprocess
from tests.conftest import GRID, ROOT, one_hot

GIB = 1 << 30


@pytest.fixture
def net(constant_net):
    """jetson's input size: stretching a strip's one row to 352 rows is what made it cost gigabytes."""
    return constant_net(one_hot(GRID, 4), width=480, height=352)


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    """A 4,000,000x1 PNG: a few kilobytes on disk, 12 MB decoded."""
    path = tmp_path_factory.mktemp("strip") / "strip.png"
    row = np.zeros((1, 4_000_000, 3), np.uint8)
    row[0, ::1000] = (200, 100, 50)
    Image.fromarray(row).save(path)
    return path


def measured(args: list, env: dict | None = None) -> tuple[int, str, str, int]:
    """``python args`` as a child process: exit code, stdout, stderr and its peak resident memory in bytes."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, *map(str, args)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource use, unlike RUSAGE_CHILDREN
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), usage.ru_maxrss * 1024  # kilobytes on Linux


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in kilobytes on Linux only")
def test_a_4_000_000x1_png_is_refused_by_the_side_limit_and_runs_in_bounded_memory_when_allowed(net, strip):
    before = strip.read_bytes()
    code, out, err, peak = measured(["-m", "segnet", "--model", net, "--stats", strip])
    assert code == 1 and peak < GIB, (err, peak)
    assert err.splitlines()[-1] == (f"segnet-console: error: {strip}: image is 4,000,000x1 pixels, wider than "
                                    "segnet reads (65,535 a side; raise the limit with SEGNET_MAX_IMAGE_SIDE)")
    code, out, err, peak = measured(["-m", "segnet", "--model", net, "--stats", strip],
                                    {"SEGNET_MAX_IMAGE_SIDE": "4000000"})
    assert code == 0, err
    assert peak < GIB, f"peak memory {peak / GIB:.2f} GiB"
    assert out.strip() and strip.read_bytes() == before  # the histogram printed, the input untouched


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in kilobytes on Linux only")
def test_the_library_segments_a_20_000_000_wide_array_in_bounded_memory(net):
    code, out, err, peak = measured(["-c", textwrap.dedent(f"""
        import numpy as np
        from segnet import Segmenter
        with Segmenter(model={str(net)!r}) as segmenter:
            result = segmenter(np.full((1, 20_000_000, 3), 7, np.uint8))  # touched: resident
            print(result.grid_size, int(result.histogram().sum()))
    """)])
    assert code == 0, err
    assert out.split() == ["(4,", "2)", "8"]
    assert peak < GIB, f"peak memory {peak / GIB:.2f} GiB"


@pytest.mark.parametrize("shape, size", [((1, 4000, 3), (480, 352)), ((4000, 1, 3), (480, 352)),
                                         ((2, 30000, 3), (64, 32)), ((352, 480, 3), (480, 352)),
                                         ((720, 1280, 3), (480, 352)), ((100, 60, 3), (480, 352))])
def test_narrowing_first_picks_the_same_pixels_as_stretching_first(shape, size):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ys, xs = (preprocess.nearest_indices(n, m) for n, m in ((shape[0], size[1]), (shape[1], size[0])))
    reference = image[ys][:, xs]  # jetson's stretch, pixel by pixel
    expected = ((reference.transpose(2, 0, 1) * np.float32(1 / 255)) - preprocess._MEAN) / preprocess._STD
    np.testing.assert_array_equal(preprocess.preprocess(image, *size), expected.astype(np.float32))
    np.testing.assert_array_equal(preprocess.resize(image, *size)[0], reference)
