"""Pictures decoded as users expect, through segnet-console: deeper pixel formats scaled to 8 bits (not
clipped), CMYK, palette and grey-with-alpha right, EXIF orientation applied; a file that cannot be read is
said to be unreadable, not "truncated or corrupt"; images and labels over the size limit are refused.

An overlay drawn with ``--alpha 0`` (a network without colors.txt, so every class takes ``--alpha``) is the
input picture itself, so the written PNG shows exactly how segnet decoded the input."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from segnet import image_io
from segnet.errors import SegnetError
from tests.conftest import IMAGES
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.users import as_other_user, need_root, shared_folder, warm_up


@pytest.fixture
def net(constant_net):
    return constant_net(np.zeros((2, 1, 1), np.float32), width=32, height=32)


def seen_by_segnet(net, source, tmp_path) -> np.ndarray:
    """The input as segnet-console decoded it: its ``--alpha 0`` overlay."""
    out = tmp_path / "seen.png"
    proc = run_cli("--model", net, "--alpha", "0", "--quiet", source, out)
    assert proc.returncode == 0, proc.stderr
    return np.asarray(Image.open(out))


def _png16_rgb(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    data = io.BytesIO()
    image.save(data, format=fmt, **kwargs)
    return data.getvalue()


def _grey(value: int, shape=(6, 8)):
    return np.full((*shape, 3), value, np.uint8)


FORMATS = {  # file name: (its bytes, what segnet must see, tolerance)
    "grey16.png": (lambda: _saved(Image.fromarray(np.full((6, 8), 0x8040, np.uint16)), "PNG"), _grey(128), 0),
    "rgb16.png": (lambda: _png16_rgb(np.tile(np.array([65535, 32768, 256], np.uint16), (6, 8, 1))),
                  np.tile(np.array([255, 128, 1], np.uint8), (6, 8, 1)), 0),
    "int32.tif": (lambda: _saved(Image.fromarray(np.full((6, 8), 2**30, np.int32)), "TIFF"), _grey(128), 0),
    "float32.tif": (lambda: _saved(Image.fromarray(np.full((6, 8), 0.5, np.float32)), "TIFF"), _grey(128), 0),
    "cmyk.jpg": (lambda: _saved(Image.new("RGB", (8, 6), (200, 50, 30)).convert("CMYK"), "JPEG", quality=100),
                 np.tile(np.array([200, 50, 30], np.uint8), (6, 8, 1)), 2),
    "palette.png": (lambda: _saved(Image.new("RGB", (8, 6), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE),
                                   "PNG"),
                    np.tile(np.array([10, 200, 30], np.uint8), (6, 8, 1)), 0),
    "grey-alpha.png": (lambda: _saved(Image.new("LA", (8, 6), (100, 50)), "PNG"), _grey(100), 0),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_pixel_format_is_decoded_as_its_viewers_show_it(net, tmp_path, name):
    make, expected, tolerance = FORMATS[name]
    source = tmp_path / name
    source.write_bytes(make())

    seen = seen_by_segnet(net, source, tmp_path)

    assert seen.shape == expected.shape
    assert np.abs(seen.astype(int) - expected).max() <= tolerance, seen[0, 0]


def test_32_bit_unsigned_and_negative_values_scale_by_the_full_range():
    big = Image.fromarray(np.array([[0, 2**31 - 1, -5]], np.int32))  # Pillow writes signed 32-bit TIFFs
    decoded = image_io.decode_image(io.BytesIO(_saved(big, "TIFF")), "t.tif")
    assert decoded[0, :, 0].tolist() == [0, 255, 0]
    floats = Image.fromarray(np.array([[-1.0, 0.0, 1.0, 7.0, np.nan]], np.float32))
    assert image_io.decode_image(io.BytesIO(_saved(floats, "TIFF")), "f.tif")[0, :, 0].tolist() == [0, 0, 255, 255, 0]


def test_exif_orientation_is_honoured(net, tmp_path):
    # stored 8 wide and 4 high, left half red; orientation 6 says "rotate 90 degrees clockwise to view"
    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    source = tmp_path / "phone.jpg"
    source.write_bytes(_saved(Image.fromarray(stored), "JPEG", quality=100, exif=exif.tobytes()))

    seen = seen_by_segnet(net, source, tmp_path)

    assert seen.shape == (8, 4, 3)  # upright: 4 wide, 8 high
    assert seen[:3, :, 0].min() > 200 and seen[5:, :, 0].max() < 60  # the stored left half is now on top


def test_a_jpeg_with_130_mb_of_exif_segments_opens_at_once_and_keeps_its_orientation(net, tmp_path):
    """Pillow appends each Exif segment to the ones before: 2,000 of them took a minute to open."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    upright = np.zeros((48, 64, 3), np.uint8)
    upright[:, :32] = 250  # stored as 64x48; left half white
    stored = _saved(Image.fromarray(upright), "JPEG", quality=100, exif=exif.tobytes())
    at = stored.index(b"\xff\xe1")
    end = at + 2 + int.from_bytes(stored[at + 2:at + 4], "big")  # after the segment with the orientation
    bulk = b"Exif\0\0II*\0\x08\0\0\0\0\0".ljust(65533, b"\0")
    source = tmp_path / "bulk.jpg"
    with open(source, "wb") as f:
        f.write(stored[:end])
        for _ in range(2000):
            f.write(b"\xff\xe1" + (len(bulk) + 2).to_bytes(2, "big") + bulk)
        f.write(stored[end:])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    started = time.monotonic()
    seen = seen_by_segnet(net, source, tmp_path)
    assert time.monotonic() - started < 20  # was 56 s (166 s here) in Pillow alone
    assert seen.shape == (64, 48, 3)  # turned upright as the first Exif segment says
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest and source.stat().st_size > 130_000_000


def test_images_without_an_orientation_tag_are_untouched():
    for source in sorted(IMAGES.glob("*.jpg")):  # like jetson's own images: no orientation tag
        assert Image.open(source).getexif().get(0x0112) is None
        assert np.array_equal(image_io.read_image(source), np.asarray(Image.open(source).convert("RGB")))


def test_a_directory_given_as_an_image_is_called_a_directory(net, tmp_path):
    from segnet import Segmenter

    (tmp_path / "folder.jpg").mkdir()
    with Segmenter(model=net) as segmenter, pytest.raises(SegnetError) as info:
        segmenter(tmp_path / "folder.jpg")
    assert str(info.value) == f"{tmp_path / 'folder.jpg'}: is a directory, not an image"


def test_an_image_another_user_cannot_read_says_permission_denied(tmp_path, constant_net):
    folder = shared_folder()
    try:
        net = constant_net(np.zeros((2, 1, 1), np.float32), width=32, height=32)
        shutil.copytree(net, folder / "net")
        (folder / "net").chmod(0o755)
        private = folder / "private.jpg"
        shutil.copy(IMAGES / "humans_0.jpg", private)
        private.chmod(0o600)

        # the command once as this user, so that the second one needs no file of the checkout (which may be in
        # a folder only this user can enter): everything it imports is imported before the fork
        warm_up(lambda: run_cli("--model", folder / "net", IMAGES / "humans_0.jpg", folder / "warm.png"))
        (folder / "warm.png").unlink()
        result = as_other_user(lambda: vars(run_cli("--model", folder / "net", private, folder / "o.png")),
                               needs=(folder / "net" / "fcn_resnet18.onnx",))

        assert result["returncode"] == 1
        errors = [line for line in result["stderr"].splitlines() if "error" in line]
        assert errors == [f"segnet-console: error: {private}: cannot read it (permission denied)"]
        assert not (folder / "o.png").exists()
    finally:
        shutil.rmtree(folder)


def test_a_second_user_who_cannot_reach_the_test_files_skips_with_the_reason(tmp_path):
    """From a clone in a folder only its owner may enter (tmp_path is 0700): a skip that says why, never the
    KeyError of a result that was an exception."""
    need_root()
    tmp_path.chmod(0o700)
    with pytest.raises(pytest.skip.Exception, match=rf"the second user \(nobody\) cannot reach {tmp_path}: the "
                                                     "checkout or its virtual environment is in a folder other"):
        as_other_user(lambda: 1, needs=(tmp_path,))
    with pytest.raises(pytest.fail.Exception, match="^as the second user: ValueError: bad$"):
        as_other_user(lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert as_other_user(lambda: os.getcwd()) == "/"


def test_an_io_error_while_reading_is_not_called_corrupt():
    class FailingDisk(io.BytesIO):
        def read(self, *args):
            if self.tell() > 100:
                raise OSError(5, "Input/output error")
            return super().read(*args)

    data = (IMAGES / "humans_0.jpg").read_bytes()
    with pytest.raises(SegnetError) as info:
        image_io.decode_image(FailingDisk(data), "disk.jpg")
    assert str(info.value).startswith("disk.jpg: cannot read it (input/output error")
    with pytest.raises(SegnetError, match=r"^cut\.jpg: truncated or corrupt image"):
        image_io.decode_image(io.BytesIO(data[:5000]), "cut.jpg")


def test_image_size_limit_is_checked_before_decoding_and_can_be_raised(net, tmp_path, monkeypatch):
    source = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(source)
    monkeypatch.setenv("SEGNET_MAX_IMAGE_PIXELS", "19999")
    assert_one_line_error(run_cli("--model", net, source, tmp_path / "o.png"), 1,
                          "big.png: image is larger than 19,999 pixels; refusing a possible decompression bomb "
                          "(raise the limit with SEGNET_MAX_IMAGE_PIXELS)")
    monkeypatch.setenv("SEGNET_MAX_IMAGE_PIXELS", "20000")
    assert run_cli("--model", net, source, tmp_path / "o.png").returncode == 0


def _labelled(tmp_path, label: Image.Image):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.jpg")
    label.save(labels / "a.png")
    return images, labels


def test_segnet_eval_labels_get_the_decompression_bomb_guard(net, tmp_path, monkeypatch):
    images, labels = _labelled(tmp_path, Image.new("L", (300, 200)))
    monkeypatch.setenv("SEGNET_MAX_IMAGE_PIXELS", "50000")
    proc = run_cli("--model", net, images, labels, prog="segnet-eval")
    assert_one_line_error(proc, 1, f"{labels / 'a.png'}: label is larger than 50,000 pixels; refusing a possible "
                          "decompression bomb", prog="segnet-eval")
    monkeypatch.delenv("SEGNET_MAX_IMAGE_PIXELS")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own limit, far exceeded: it refuses at open
    proc = run_cli("--model", net, images, labels, prog="segnet-eval")
    assert_one_line_error(proc, 1, "label is larger than 1,000 pixels", prog="segnet-eval")


@pytest.mark.parametrize("size, out, words", [
    ((70000, 8), "o.jpg", "a 70000x8 picture is too large for JPEG (at most 65500 pixels a side); write it as .png"),
    ((16384, 8), "o.webp", "a 16384x8 picture is too large for WEBP (at most 16383 pixels a side); write it as .png"),
])
def test_a_picture_too_large_for_its_format_is_one_line_for_that_image(net, tmp_path, monkeypatch, size, out,
                                                                       words):
    monkeypatch.setenv("SEGNET_MAX_IMAGE_SIDE", "70000")  # read a picture JPEG cannot hold
    source = tmp_path / "wide.png"
    Image.new("RGB", size, (10, 20, 30)).save(source)
    before = source.read_bytes()
    proc = run_cli("--model", net, source, tmp_path / out)
    line = assert_one_line_error(proc, 1)
    assert line == f"segnet-console: error: cannot write {tmp_path / out}: {words}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["wide.png", net.name])  # no temporary file left
    assert source.read_bytes() == before
    assert run_cli("--model", net, source, tmp_path / "o.png").returncode == 0  # as the line says
