"""Where pictures go, by the rule the README states, checked before any image is processed: a folder keeps
the input names (mirroring sub-folders), a ``%i``/``%04i`` name is a numbered sequence, one picture file
takes one input, nothing overwrites an input and no two outputs collide."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import GRID, IMAGES, one_hot
from tests.support.cli import assert_one_line_error, run_cli


@pytest.fixture
def net(constant_net):
    return constant_net(one_hot(GRID, 4), width=128, height=64)


def copy(name, folder, as_name=None):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (as_name or name)
    target.write_bytes((IMAGES / name).read_bytes())
    return target


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_an_output_with_an_image_extension_is_one_picture(net, tmp_path):
    single = tmp_path / "one"
    copy("city_0.jpg", single)
    assert run_cli("--model", net, single, tmp_path / "single.jpg").returncode == 0  # a folder of one image
    assert run_cli("--model", net, str(single / "*.jpg"), tmp_path / "glob.png").returncode == 0  # a glob of one
    assert (tmp_path / "single.jpg").is_file() and (tmp_path / "glob.png").is_file()
    proc = run_cli("--model", net, IMAGES, tmp_path / "many.jpg")
    assert_one_line_error(proc, 2, "14 inputs cannot all be written to one picture; give a folder (many/) or a "
                                   "numbered sequence (many_%04i.jpg)")
    assert not (tmp_path / "many.jpg").exists()


def test_a_name_without_extension_or_with_a_slash_is_a_folder(net, tmp_path):
    assert run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / "plain").returncode == 0
    assert run_cli("--model", net, IMAGES / "room_0.jpg", f"{tmp_path / 'slash.jpg'}/").returncode == 0
    assert files(tmp_path / "plain") == ["city_0.jpg"] and files(tmp_path / "slash.jpg") == ["room_0.jpg"]


def test_sequences_number_the_inputs_from_zero(net, tmp_path):
    assert run_cli("--model", net, str(IMAGES / "city_[0-2].jpg"), tmp_path / "seq" / "out_%i.png").returncode == 0
    assert files(tmp_path / "seq") == ["out_0.png", "out_1.png", "out_2.png"]
    assert run_cli("--model", net, str(IMAGES / "city_[0-1].jpg"), tmp_path / "pad" / "f%04i.jpg").returncode == 0
    assert files(tmp_path / "pad") == ["f0000.jpg", "f0001.jpg"]
    assert Image.open(tmp_path / "seq" / "out_1.png").size == (1024, 512)


def test_same_names_in_two_folders_keep_both_results(net, tmp_path):
    copy("city_0.jpg", tmp_path / "g1", "x.jpg")
    copy("room_0.jpg", tmp_path / "g2", "x.jpg")
    proc = run_cli("--model", net, str(tmp_path / "g*" / "x.jpg"), tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert files(tmp_path / "out") == ["g1/x.jpg", "g2/x.jpg"]
    assert Image.open(tmp_path / "out" / "g2" / "x.jpg").size == Image.open(IMAGES / "room_0.jpg").size


def test_an_output_that_is_an_input_is_refused_before_any_work(net, tmp_path):
    image = copy("city_0.jpg", tmp_path / "d")
    before = image.read_bytes()
    assert_one_line_error(run_cli("--model", net, image, image), 2,
                          f"{image} would overwrite the input {image}: choose another output")
    assert_one_line_error(run_cli("--model", net, tmp_path / "d", tmp_path / "d"), 2, "would overwrite the input")
    assert image.read_bytes() == before and files(tmp_path / "d") == ["city_0.jpg"]


def test_a_glob_takes_the_images_and_says_what_it_left_out(net, tmp_path):
    folder = tmp_path / "mixed"
    copy("city_0.jpg", folder)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "clip.mp4").write_bytes(b"\0" * 10)
    proc = run_cli("--model", net, str(folder / "*"), tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "left out 2 file(s) that are not images (clip.mp4, notes.txt)" in proc.stderr
    assert files(tmp_path / "out") == ["city_0.jpg"]


@pytest.mark.parametrize("extension", [".blp", ".emf", ".wmf", ".h5", ".xbm", ".txt"])
def test_formats_pillow_cannot_write_are_refused_up_front(net, tmp_path, extension):
    proc = run_cli("--model", net, IMAGES, tmp_path / "out" / f"seq_%i{extension}")
    assert_one_line_error(proc, 2, f"cannot write '{extension}' pictures: give the output a .jpg, .png")
    assert not (tmp_path / "out").exists()


def test_a_video_goes_to_a_video_a_folder_or_a_sequence_never_one_picture(net, tmp_path):
    pytest.importorskip("av")
    from tests.support.golden import CLIP

    assert_one_line_error(run_cli("--model", net, CLIP, tmp_path / "x.jpg"), 2,
                          "the frames of a video cannot all be written to one picture; give a folder (x/), a "
                          "numbered sequence (x_%04i.jpg) or a video file (.mp4)")
    assert run_cli("--model", net, CLIP, tmp_path / "frames" / "frame_%04i.jpg").returncode == 0
    assert files(tmp_path / "frames") == [f"frame_{i:04d}.jpg" for i in range(8)]
    assert_one_line_error(run_cli("--model", net, CLIP, CLIP), 2, "would overwrite the input")
    assert_one_line_error(run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / "v.mp4"), 2,
                          "a video output needs a video input")


def test_an_output_name_longer_than_file_systems_allow_is_a_usage_error(net, tmp_path):
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / ("x" * 300 + ".jpg"))
    assert_one_line_error(proc, 2, "the file name is longer than file systems allow (255 bytes)")
