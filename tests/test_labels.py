import numpy as np
import pytest

from segnet import labels
from segnet.errors import SegnetError

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
