"""Pre-processing memory is bounded by the pixels read and produced, whatever the image's shape: a wide strip
is narrowed before it is stretched (the same pixels are picked: tests/cli/test_golden.py holds normal images
to their bytes), and a strip past the side limit is refused before it is decoded.

Peak memory is that of a real child process (``os.wait4``'s resource usage of that one child, forked from a
small launcher so that it does not start with the test process's own peak)."""

from __future__ import annotations

import os
import subprocess
import sys
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


#: Runs the command as its own child and reports that child's peak. A child forked straight from the test
#: process would start with the test process's peak (Linux keeps the high-water mark across fork and exec), so
#: a small intermediate process forks it instead.
LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nmaxrss-kib {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(args: list, env: dict | None = None) -> tuple[int, str, str, int]:
    """``python args`` as a child process: exit code, stdout, stderr and its peak resident memory in bytes."""
    proc = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    err, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    return proc.returncode, proc.stdout, err, int(last.split()[1]) * 1024  # kilobytes on Linux


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
