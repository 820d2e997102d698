"""A new kind of input and a new kind of output, added from outside the package: each is one class and one
registration, and ``segnet.run.run`` reads and writes through them as through the built-in kinds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from segnet import Segmenter
from segnet.drawing import DrawSpec, draw
from segnet.errors import UsageError
from segnet.image_io import read_image
from segnet.run import (
    Finished,
    Frame,
    ImageDone,
    InputKind,
    Opened,
    SourceEnded,
    Started,
    inputs,
    outputs,
    register_input,
    register_output,
    run,
)
from tests.support import models

WIDTH, HEIGHT = 96, 64


def synthetic_frame(number: int) -> np.ndarray:
    """A frame of the test pattern: gradients that move with the frame number."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([(x * 4 + number * 17) % 256, (y * 4) % 256, (x + y + number * 31) % 256], -1).astype(np.uint8)


class Synthetic(InputKind):
    """``test://N``: N frames of a moving test pattern at 10 frames per second."""

    def __init__(self, spec: str, options):
        super().__init__(spec, label="synthetic")
        self.total = self.count = int(spec[len("test://"):] or 3)

    def reader(self, options):
        return SyntheticReader(self.count)


class SyntheticReader:
    def __init__(self, count: int):
        self.count, self.closed = count, False

    def open(self) -> Opened:
        return Opened(Fraction(10), self.count, self.count / 10)

    def frames(self):
        for n in range(self.count):
            yield Frame(synthetic_frame(n), n / 10)

    def close(self) -> None:
        self.closed = True


class Collected:
    """``collect://NAME``: every picture kept in memory, in order (the frames of a test run)."""

    in_order = True
    lossless = True  # takes class-index pictures too
    made: dict[str, Collected] = {}

    def __init__(self, spec: str, options):
        self.closed, self.rate, self.finished = False, None, False
        self.pictures: list[tuple[int, np.ndarray, int | None]] = []
        Collected.made[spec] = self

    def target(self, frame: int) -> int:
        return frame

    def write(self, picture, target, pts) -> None:
        self.pictures.append((target, picture.copy(), pts))

    def close(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.pictures.clear()


@pytest.fixture
def registries(monkeypatch):
    """The registries as they are, given back after the test."""
    monkeypatch.setattr(inputs, "INPUT_KINDS", dict(inputs.INPUT_KINDS))
    monkeypatch.setattr(outputs, "OUTPUT_KINDS", dict(outputs.OUTPUT_KINDS))
    Collected.made.clear()


@pytest.fixture
def net(tmp_path):
    return models.write_network(tmp_path / "net", models.pooling_model, ["a", "b", "c", "d"], num_classes=4,
                                width=WIDTH, height=HEIGHT)


def test_an_input_kind_and_an_output_kind_from_outside_run_through_run(registries, net):
    register_input("test", Synthetic)
    register_output("collect", Collected)
    events = []
    summary = run("test://5", "collect://all", model=net, on_event=events.append)
    assert isinstance(events[0], Started) and events[0].total == 5 and not events[0].live
    assert isinstance(events[-1], Finished) and (summary.done, summary.failed) == (5, 0)
    done = [e for e in events if isinstance(e, ImageDone)]
    assert [(e.frame, e.time, e.source) for e in done] == [(n, n / 10, "test://5") for n in range(5)]
    ended = [e for e in events if isinstance(e, SourceEnded)]
    assert [(e.source, e.frames, e.error) for e in ended] == [("test://5", 5, None)]
    sink = Collected.made["collect://all"]
    assert sink.finished and sink.rate == Fraction(10)
    assert [target for target, _, _ in sink.pictures] == list(range(5))
    with Segmenter(model=net) as segmenter:  # the pictures are the library's own drawing of each frame
        for n, (_, picture, _) in enumerate(sink.pictures):
            expected = segmenter(synthetic_frame(n))
            assert np.array_equal(picture, draw(expected.image, expected.class_map, expected.colors, DrawSpec()))


def test_a_new_input_kind_writes_to_the_built_in_outputs(registries, net, tmp_path):
    register_input("test", Synthetic)
    summary = run("test://3", tmp_path / "frames_%02i.png", model=net, visualize="mask")
    assert summary.done == 3
    with Segmenter(model=net) as segmenter:
        for n in range(3):
            assert np.array_equal(read_image(tmp_path / f"frames_{n:02d}.png"),
                                  segmenter(synthetic_frame(n)).render("mask"))


def test_a_new_output_kind_takes_a_real_video(registries, net):
    clip = Path(__file__).resolve().parents[1] / "data" / "camvid-clip.mp4"
    register_output("collect", Collected)
    summary = run(clip, "collect://clip", model=net, visualize="classes")
    sink = Collected.made["collect://clip"]
    assert summary.done == len(sink.pictures) > 0 and sink.finished
    assert all(picture.ndim == 2 for _, picture, _ in sink.pictures)  # lossless: class indices kept


def test_unregistered_kinds_are_usage_errors_naming_the_known_ones(registries, net, tmp_path):
    with pytest.raises(UsageError, match=r"unknown source kind 'test://'.*rtsp://"):
        run("test://3", tmp_path / "out", model=net)
    register_input("test", Synthetic)
    with pytest.raises(UsageError, match=r"unknown output kind 'collect://'.*udp://"):
        run("test://3", "collect://x", model=net)
