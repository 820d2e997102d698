"""The paths segnet-console is given, through its entry point: several inputs with the output last (as cp takes
them), sub-folders and recursion, and output paths whose errors name the real cause."""

from __future__ import annotations

import os
import shutil

import pytest
from PIL import Image

from tests.conftest import GRID, IMAGES, one_hot
from tests.support.cli import assert_one_line_error, run_cli


@pytest.fixture
def net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64, names=["void", "road", "car", "sky"])


def status_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("segnet: ")]


# -- several inputs, the output last (item 1) --------------------------------------------------------------------


def test_a_glob_the_shell_expanded_goes_into_the_folder_given_last(net, tmp_path):
    images = sorted(IMAGES.glob("c*.jpg"))  # what the shell makes of data/images/c*.jpg
    out = tmp_path / "out"
    proc = run_cli("--model", net, *images, f"{out}/")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in images]
    assert f"{len(images)} of {len(images)} images done" in proc.stderr


def test_a_new_name_without_extension_last_is_a_folder_and_flags_may_sit_between_paths(net, tmp_path):
    a, b = IMAGES / "city_0.jpg", IMAGES / "room_0.jpg"
    proc = run_cli("--model", net, a, "--alpha", "200", b, tmp_path / "new", "-q")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["city_0.jpg", "room_0.jpg"]
    assert proc.stderr == ""


def test_two_paths_are_still_an_input_and_its_output(net, tmp_path):
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / "b.png")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "b.png") as picture:
        assert picture.size == Image.open(IMAGES / "city_0.jpg").size


def test_stats_with_an_existing_image_last_reads_both_and_overwrites_nothing(net, tmp_path):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copy(IMAGES / "city_0.jpg", a)
    shutil.copy(IMAGES / "room_0.jpg", b)
    before = b.read_bytes()
    proc = run_cli("--model", net, "--stats", a, b)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("grid size:") == 2 and f"{a}:" in proc.stdout and f"{b}:" in proc.stdout
    assert b.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg"]
    assert any("taken as a second input and nothing is written" in line for line in status_lines(proc.stderr))
    # with --stats and a new name last, the last path is still the output
    proc = run_cli("--model", net, "--stats", a, b, tmp_path / "out/")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.jpg"]
    assert b.read_bytes() == before


def test_several_inputs_and_an_existing_picture_last_is_one_line_that_suggests_a_folder(net, tmp_path):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    c = tmp_path / "c.jpg"
    shutil.copy(IMAGES / "city_1.jpg", c)
    before = c.read_bytes()
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", IMAGES / "room_0.jpg", c)
    assert_one_line_error(proc, 2, f"{c}: the last of several paths is the output (as with cp), and one picture "
                                   "cannot take 2 inputs; give a folder last (out/), or --stats")
    assert c.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.jpg"]


def test_folders_and_globs_among_several_inputs_are_expanded(net, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    shutil.copy(IMAGES / "city_0.jpg", one / "x.jpg")
    shutil.copy(IMAGES / "room_0.jpg", two / "x.jpg")
    shutil.copy(IMAGES / "trail_0.jpg", two / "y.jpg")
    out = tmp_path / "out"
    proc = run_cli("--model", net, one, str(two / "*.jpg"), f"{out}/", "-q")
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert written == ["one/x.jpg", "two/x.jpg", "two/y.jpg"]  # mirrored below the common folder: no collision


def test_images_and_videos_cannot_be_mixed(net, tmp_path):
    pytest.importorskip("av")
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", IMAGES.parent.parent / "tests/data/camvid-clip.mp4",
                   tmp_path / "out/")
    assert_one_line_error(proc, 2, "cannot be mixed in one run; run them apart")
    assert not (tmp_path / "out").exists()


# -- sub-folders (item 7) ------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """in/a.jpg, in/two/b.jpg, in/two/deep/c.jpg, in/three/d.jpg"""
    root = tmp_path / "in"
    for name, image in (("a.jpg", "city_0.jpg"), ("two/b.jpg", "room_0.jpg"), ("two/deep/c.jpg", "trail_0.jpg"),
                        ("three/d.jpg", "peds_2.jpg")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(IMAGES / image, root / name)
    return root


def written(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_folder_says_how_many_sub_folders_it_left_out_and_suggests_recursive(net, tree, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--model", net, tree, out)
    assert proc.returncode == 0, proc.stderr
    assert written(out) == ["a.jpg"]
    assert f"segnet: {tree}: left out 2 sub-folder(s) (three, two); give --recursive to go into them" in \
        status_lines(proc.stderr)


def test_recursive_mirrors_the_folder_tree_in_the_output(net, tree, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--model", net, "--recursive", tree, out)
    assert proc.returncode == 0, proc.stderr
    assert written(out) == ["a.jpg", "three/d.jpg", "two/b.jpg", "two/deep/c.jpg"]
    assert "4 of 4 images done" in proc.stderr and "sub-folder" not in proc.stderr
    # the tree is mirrored from the folder given, even when every image sits in one sub-folder
    proc = run_cli("--model", net, "-r", tree / "two", tmp_path / "out2", "-q")
    assert proc.returncode == 0, proc.stderr
    assert written(tmp_path / "out2") == ["b.jpg", "deep/c.jpg"]
    proc = run_cli("--model", net, "-r", tree / "three", tmp_path / "out3", "-q")
    assert proc.returncode == 0, proc.stderr
    assert written(tmp_path / "out3") == ["d.jpg"]


def test_recursive_into_an_output_folder_inside_the_input_does_not_take_earlier_pictures(net, tree):
    for _ in range(2):
        proc = run_cli("--model", net, "--recursive", tree, tree / "out")
        assert proc.returncode == 0, proc.stderr
    assert written(tree / "out") == ["a.jpg", "three/d.jpg", "two/b.jpg", "two/deep/c.jpg"]
    assert f"segnet: {tree / 'out'}: left out 4 picture(s) already in the output folder" in status_lines(proc.stderr)


def test_two_stars_in_a_glob_recurse(net, tree, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--model", net, str(tree / "**" / "*.jpg"), out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert written(out) == ["a.jpg", "three/d.jpg", "two/b.jpg", "two/deep/c.jpg"]


# -- output paths (item 10) ----------------------------------------------------------------------------------------


def test_a_file_where_a_folder_should_be_is_named(net, tmp_path):
    blocker = tmp_path / "file.jpg"
    shutil.copy(IMAGES / "city_0.jpg", blocker)
    for output in (blocker / "out.jpg", blocker / "sub" / "out.jpg", f"{blocker}/sub/"):
        proc = run_cli("--model", net, IMAGES / "city_0.jpg", output)
        assert_one_line_error(proc, 2, f"{blocker} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.jpg", "net0"]


def test_a_folder_that_takes_no_files_says_so_not_no_such_file(net):
    # /proc exists and refuses new files even to root (which CI runs as), answering ENOENT
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", "/proc/segnet-out.jpg")
    line = assert_one_line_error(proc, 2, "cannot write to output directory /proc: the folder exists but does not "
                                          "accept files")
    assert "No such file" not in line


def test_a_folder_this_user_may_not_write_says_permission_denied(net, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into any folder (this case is checked when the tests run as another user)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", locked / "out.jpg")
    assert_one_line_error(proc, 2, f"cannot write to output directory {locked}: permission denied")


def test_a_new_nested_output_folder_is_made_with_a_line_that_says_so(net, tree, tmp_path):
    proc = run_cli("--model", net, IMAGES, tmp_path / "outt" / "sub/")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "outt" / "sub" / "city_0.jpg").is_file()
    assert f"segnet: created the output folder {tmp_path / 'outt' / 'sub'} (and {tmp_path / 'outt'} above it, " \
        "which did not exist either)" in status_lines(proc.stderr)
    # one new level is what the user named: no line; nor for the sub-folders that mirror the inputs'
    proc = run_cli("--model", net, "--recursive", tree, tmp_path / "outt" / "new")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "outt" / "new" / "two" / "deep" / "c.jpg").is_file()
    assert "created" not in proc.stderr


def test_several_videos_go_into_a_new_folder_a_sub_folder_each(net, tmp_path):
    pytest.importorskip("av")
    from tests.support.streams import make_video

    a, b = make_video(tmp_path / "a.mp4", 3), make_video(tmp_path / "b.mp4", 4)
    out = tmp_path / "new" / "out"
    out.parent.mkdir()
    proc = run_cli("--model", net, "--visualize=mask", a, b, out)
    assert proc.returncode == 0, proc.stderr
    assert written(out) == [f"a/a-{i:06d}.png" for i in range(3)] + [f"b/b-{i:06d}.png" for i in range(4)]
    assert "created" not in proc.stderr  # one new level, the one named: no line


def test_symlinked_images_keep_their_place_in_the_mirrored_tree(net, tmp_path):
    root = tmp_path / "links"
    (root / "sub").mkdir(parents=True)
    (root / "top.jpg").symlink_to(IMAGES / "city_0.jpg")
    (root / "sub" / "deep.jpg").symlink_to(IMAGES / "room_0.jpg")  # the file itself lives elsewhere
    proc = run_cli("--model", net, "-r", root, tmp_path / "out", "-q")
    assert proc.returncode == 0, proc.stderr
    assert written(tmp_path / "out") == ["sub/deep.jpg", "top.jpg"]
