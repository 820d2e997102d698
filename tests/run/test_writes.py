"""The write rule (``writes.Paths.check``) on long plans: every write against every read and every earlier write,
found by lookups, with the same first collision and the same message as one comparison after another."""

from __future__ import annotations

import pytest

from segnet.errors import UsageError
from segnet.run.writes import Paths

N = 3000


def plan_of(tmp_path, writes, reads=()):
    paths = Paths()
    for path in reads:
        paths.read(path)
    for path, owner, *names in writes:
        paths.write(path, owner, *names)
    return paths


def test_a_long_plan_without_collisions_passes_and_creates_nothing(tmp_path):
    reads = [tmp_path / "in" / f"{i}.jpg" for i in range(N)]
    (tmp_path / "in").mkdir()
    for path in reads[:10]:
        path.write_bytes(b"x")
    paths = plan_of(tmp_path, [(tmp_path / "out" / f"{i}.jpg", str(r)) for i, r in enumerate(reads)], reads)
    paths.check()
    assert not (tmp_path / "out").exists()


def test_the_last_write_of_a_long_plan_colliding_with_the_first_names_the_first(tmp_path):
    writes = [(tmp_path / "out" / f"{i}.jpg", f"source {i}") for i in range(N)]
    writes.append((tmp_path / "out" / "0.jpg", "the last source"))
    with pytest.raises(UsageError, match="source 0 and the last source would both be written to"):
        plan_of(tmp_path, writes).check()


def test_the_last_write_replacing_an_existing_input_is_found_through_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "photo.jpg").write_bytes(b"an input")
    (tmp_path / "link").symlink_to(real)
    reads = [tmp_path / f"in{i}.jpg" for i in range(N)] + [real / "photo.jpg"]
    writes = [(tmp_path / "out" / f"{i}.jpg", f"source {i}") for i in range(N)]
    writes.append((tmp_path / "link" / "photo.jpg", "the last source"))
    with pytest.raises(UsageError, match=f"would overwrite the input {real / 'photo.jpg'}"):
        plan_of(tmp_path, writes, reads).check()


def test_outputs_not_yet_there_collide_through_a_linked_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    writes = [(tmp_path / "real" / "a.jpg", "first"), (tmp_path / "link" / "a.jpg", "second")]
    with pytest.raises(UsageError, match="first and second would both be written to"):
        plan_of(tmp_path, writes).check()


@pytest.mark.parametrize("order", ["sequence first", "single first"])
def test_a_sequence_and_a_single_file_it_would_write_collide_in_either_order(tmp_path, order):
    sequence = (tmp_path / "out", "the video", r"f_\d{3}\.png")
    single = (tmp_path / "out" / "f_007.png", "--legend")
    others = [(tmp_path / "other" / f"{i}.png", f"source {i}") for i in range(100)]
    writes = [*others, sequence, single] if order == "sequence first" else [*others, single, sequence]
    first, second = ("the video", "--legend") if order == "sequence first" else ("--legend", "the video")
    with pytest.raises(UsageError, match=f"{first} and {second} would both be written to"):
        plan_of(tmp_path, writes).check()


def test_a_sequence_into_a_folder_of_inputs_names_the_input_it_would_replace(tmp_path):
    (tmp_path / "in").mkdir()
    reads = [tmp_path / "in" / f"x_{i:03d}.png" for i in range(200)]
    for path in reads:
        path.write_bytes(b"x")
    with pytest.raises(UsageError, match=f"would overwrite the input {reads[0]}"):
        plan_of(tmp_path, [(tmp_path / "in", "the video", r"x_\d{3}\.png")], reads).check()
