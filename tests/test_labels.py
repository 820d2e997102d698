import numpy as np
import pytest

from segnet import labels
from segnet.errors import SegnetError
from tests.conftest import GRID, IMAGES, one_hot
from tests.support.cli import run_cli

# SPEC section 3: the generated colours of classes 0..20.
SPEC_PALETTE = [
    (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128),
    (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128), (128, 64, 128),
]


def test_generated_colours_are_the_voc_palette_skipping_black():
    table = labels.class_colors(21, None, alpha=120)
    assert [tuple(int(v) for v in row[:3]) for row in table] == SPEC_PALETTE
    assert (table[:, 3] == 120).all()


def test_explicit_alpha_is_exempt_from_the_alpha_option(tmp_path):
    path = tmp_path / "colors.txt"
    path.write_text("200 155 75 180\n85 210 100\n15 100 20 255\n")
    table = labels.class_colors(4, labels.read_class_colors(path), alpha=33)
    assert table[:, 3].tolist() == [180, 33, 33, 33]  # 255 is not explicit; class 3 is generated
    assert table[3, :3].tolist() == [0, 0, 128]  # the generated colour of class 3 (palette entry 4)


def test_class_names_drop_synset_ids_and_fill_missing(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n01440764 tench\nroad\nn0144 not a synset\n\n")
    assert labels.class_names(5, labels.read_class_names(path)) == [
        "tench", "road", "n0144 not a synset", "Class #3", "Class #4"]


@pytest.mark.parametrize("text, line", [
    ("1 2 3\n1 2\n", 2), ("1 2 3\n4 5 300\n", 2), ("red green blue\n", 1), ("1 2 3\n\n4 5 6\n", 2),
    ("1 2 3 4 5\n", 1), ("1.5 2 3\n", 1),
])
def test_bad_colour_lines_name_the_line(tmp_path, text, line):
    path = tmp_path / "colors.txt"
    path.write_text(text)
    with pytest.raises(SegnetError, match=f"line {line}:"):
        labels.read_class_colors(path)


def test_binary_classes_file_is_refused_with_its_line(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"road\n\xff\xfe\x00junk\n")
    with pytest.raises(SegnetError, match="line 2: not UTF-8"):
        labels.read_class_names(path)


def test_colours_accept_extra_whitespace(tmp_path):
    path = tmp_path / "colors.txt"
    path.write_text("  0\t120  255   150 \n")
    assert labels.read_class_colors(path) == [(0, 120, 255, 150)]
    assert labels.class_colors(1, labels.read_class_colors(path)).dtype == np.float32


@pytest.mark.parametrize("which, text, line", [
    ("labels", "", "{path} is empty: all 4 classes get 'Class #N' names"),
    ("labels", "road\ncar\n", "{path} has 2 names for 4 classes: classes 2 to 3 get 'Class #N' names"),
    ("labels", "a\nb\nc\nd\ne\nf\n", "{path} has 6 names for 4 classes: the last 2 are not used (is it the file of "
                                     "another network?)"),
    ("colors", "\n", "{path} is empty: all 4 classes get generated colours"),
    ("colors", "1 2 3\n", "{path} has 1 colours for 4 classes: classes 1 to 3 get generated colours"),
])
def test_a_label_file_with_the_wrong_number_of_lines_is_said_in_one_line(constant_net, tmp_path, which, text, line):
    """jetson fills in missing lines and ignores extra ones, silently; segnet does the same and says so."""
    net = constant_net(one_hot(GRID, 4), width=64, height=32)
    path = tmp_path / f"{which}.txt"
    path.write_text(text)
    proc = run_cli("--model", net / "fcn_resnet18.onnx", f"--{which}", path, IMAGES / "city_0.jpg",
                   tmp_path / "o.png")
    assert proc.returncode == 0 and (tmp_path / "o.png").is_file(), proc.stderr
    assert [s for s in proc.stderr.splitlines() if str(path) in s] == ["segnet: " + line.format(path=path)]
    quiet = run_cli("-q", "--model", net / "fcn_resnet18.onnx", f"--{which}", path, IMAGES / "city_0.jpg",
                    tmp_path / "q.png")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_label_files_that_match_the_network_say_nothing(constant_net, tmp_path):
    net = constant_net(one_hot(GRID, 4), width=64, height=32, names=["a", "b", "c", "d"],
                       colors=[(1, 2, 3)] * 4)
    proc = run_cli("--model", net, IMAGES / "city_0.jpg", tmp_path / "o.png")
    assert proc.returncode == 0 and "classes" not in proc.stderr.replace("4 classes)", ""), proc.stderr
