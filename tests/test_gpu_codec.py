"""``gpu_codec``: without nvImageCodec or a GPU it is exactly ``image_io``; with one, whatever the GPU codec
refuses (other formats, CMYK, images over the pixel limit, files it returns no image for) goes through the
CPU codecs, per image, and nothing is lost. The GPU itself is exercised by tools/device-gpu-path; here a
stand-in for nvImageCodec (decoding with Pillow) checks the routing with real files."""

from __future__ import annotations

import io
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet import gpu_codec
from segnet.errors import SegnetError
from segnet.gpu_codec import JPEG_QUALITY, GpuCodec
from segnet.image_io import read_image, write_image
from tests.conftest import IMAGES


@pytest.fixture
def files(tmp_path) -> list[Path]:
    """Real JPEGs, a PNG, a CMYK JPEG, an empty file, a text file and a missing one."""
    city, peds = IMAGES / "city_0.jpg", IMAGES / "peds_2.jpg"
    png, cmyk = tmp_path / "room.png", tmp_path / "cmyk.jpg"
    Image.open(IMAGES / "room_0.jpg").save(png)
    Image.open(city).convert("CMYK").save(cmyk, quality=90)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    return [city, png, cmyk, peds, tmp_path / "empty.jpg", tmp_path / "notes.jpg", tmp_path / "missing.jpg"]


def _same_as_cpu(results, paths):
    for result, path in zip(results, paths):
        try:
            want = read_image(path)
        except SegnetError as exc:
            assert isinstance(result, SegnetError) and str(result) == str(exc), path
        else:
            assert isinstance(result, np.ndarray) and (result == want).all(), path


def test_without_nvimagecodec_every_call_is_image_ios(files, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(gpu_codec, "_installed", lambda: False)  # as on this machine, whatever is installed
    with caplog.at_level(logging.INFO, "segnet"):
        codec = GpuCodec()
    assert not codec.on_gpu and "pip install 'segnet[gpu]'" in codec.reason
    assert [r.getMessage() for r in caplog.records] == [f"JPEG decoding and encoding stay on the CPU: {codec.reason}"]
    _same_as_cpu(codec.read_images(files), files)

    pictures = [read_image(IMAGES / "city_0.jpg"), read_image(IMAGES / "humans_0.jpg")]
    paths = [tmp_path / "out" / "a.jpg", tmp_path / "out" / "b.png"]
    (tmp_path / "out").mkdir()
    assert codec.write_images(pictures, paths) == [None, None]
    for picture, path in zip(pictures, paths):
        write_image(picture, tmp_path / f"want{path.suffix}")
        assert path.read_bytes() == (tmp_path / f"want{path.suffix}").read_bytes()
    errors = codec.write_images([pictures[0]], [tmp_path / "out" / "c.xyz"])
    assert isinstance(errors[0], SegnetError) and "cannot write '.xyz' pictures" in str(errors[0])


def test_the_cpu_fallback_encodes_as_image_io_does(tmp_path):
    picture = read_image(IMAGES / "trail_0.jpg")
    write_image(picture, tmp_path / "want.jpg")  # Pillow at image_io's quality: JPEG_QUALITY must be it
    assert gpu_codec._cpu_jpeg(picture) == (tmp_path / "want.jpg").read_bytes()
    assert JPEG_QUALITY == 95


def test_without_a_gpu_nvimagecodec_is_not_started(monkeypatch):
    started = []
    fake = types.SimpleNamespace(Decoder=lambda **kw: started.append(kw))
    monkeypatch.setitem(sys.modules, "nvidia", types.SimpleNamespace(nvimgcodec=fake))
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", fake)
    monkeypatch.setattr(gpu_codec, "_installed", lambda: True)
    monkeypatch.setattr(gpu_codec, "_gpu_visible", lambda: False)
    codec = GpuCodec()
    assert not codec.on_gpu and codec.reason == "the NVIDIA driver reports no GPU" and started == []


class _StandIn:
    """nvImageCodec's calls that gpu_codec makes, decoding and encoding with Pillow; files named in
    ``refuse`` get no image, as nvImageCodec answers None for what it cannot decode."""

    CMYK, YCCK, SRGB = "cmyk", "ycck", "srgb"

    def __init__(self, refuse=()):
        self.refuse, self.decoded, self.encoded = set(refuse), [], 0

    def CodeStream(self, path):  # noqa: N802 (nvImageCodec's name)
        with Image.open(path) as image:
            return types.SimpleNamespace(path=path, codec_name=image.format.lower(), width=image.width,
                                         height=image.height, num_channels=len(image.getbands()),
                                         color_spec={"CMYK": self.CMYK}.get(image.mode, "sycc"))

    def decode(self, streams, params=None):
        self.decoded += [Path(s.path).name for s in streams]
        return [None if Path(s.path).name in self.refuse else
                types.SimpleNamespace(cpu=lambda s=s: read_image(s.path)) for s in streams]

    def encode(self, pictures, codec, params=None):
        assert codec == "jpeg" and params == "params"
        self.encoded += len(pictures)
        return [None if p.shape[1] % 2 else gpu_codec._cpu_jpeg(p) for p in pictures]  # odd widths refused


def _started(stand_in) -> GpuCodec:
    codec = GpuCodec.__new__(GpuCodec)
    codec.on_gpu, codec.reason, codec.device = True, "", 0
    codec.counts = dict.fromkeys(("gpu_decoded", "cpu_decoded", "gpu_encoded", "cpu_encoded"), 0)
    codec._nvimgcodec, codec._decoder, codec._encoder = stand_in, stand_in, stand_in
    codec._params = "params"
    codec._decode_params = None
    return codec


def test_what_the_gpu_refuses_goes_through_the_cpu_per_image(files, monkeypatch):
    stand_in = _StandIn(refuse={"peds_2.jpg"})
    codec = _started(stand_in)
    results = codec.read_images(files)
    _same_as_cpu(results, files)  # nothing lost, every error the CPU's own
    assert stand_in.decoded == ["city_0.jpg", "peds_2.jpg"]  # not the PNG, the CMYK JPEG nor the broken files
    assert codec.counts["gpu_decoded"] == 1 and codec.counts["cpu_decoded"] == len(files) - 1

    monkeypatch.setenv("SEGNET_MAX_IMAGE_PIXELS", str(1024 * 512 - 1))
    stand_in.decoded = []
    (city,) = _started(stand_in).read_images(files[:1])
    assert stand_in.decoded == [] and "refusing a possible decompression bomb" in str(city)


def test_pictures_the_gpu_encoder_refuses_are_encoded_by_pillow(tmp_path):
    stand_in = _StandIn()
    codec = _started(stand_in)
    pictures = [read_image(IMAGES / name) for name in ("city_0.jpg", "humans_0.jpg", "humans_3.jpg")]  # 413 wide
    paths = [tmp_path / "a.jpg", tmp_path / "b.JPEG", tmp_path / "c.png"]
    assert codec.write_images(pictures, paths) == [None, None, None]
    assert stand_in.encoded == 2  # the PNG never went to the GPU encoder; the odd-width picture came back
    assert codec.counts["gpu_encoded"] == 1 and codec.counts["cpu_encoded"] == 1
    for picture, path in zip(pictures, paths):
        write_image(picture, tmp_path / f"want{path.suffix}")
        assert path.read_bytes() == (tmp_path / f"want{path.suffix}").read_bytes()
        assert np.asarray(Image.open(io.BytesIO(path.read_bytes()))).shape == picture.shape


def test_a_codec_that_cannot_start_leaves_the_cpu_codecs_with_one_line(monkeypatch, caplog):
    def refuse(**kwargs):
        os.write(2, b"[nvimgcodec] Failed to load libcuda.so\n")
        raise RuntimeError("Internal error - Could not create decoder. Code: 8")

    fake = types.SimpleNamespace(Decoder=refuse)
    monkeypatch.setitem(sys.modules, "nvidia", types.SimpleNamespace(nvimgcodec=fake))
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", fake)
    monkeypatch.setattr(gpu_codec, "_installed", lambda: True)
    monkeypatch.setattr(gpu_codec, "_gpu_visible", lambda: True)
    with caplog.at_level(logging.INFO, "segnet"):
        codec = GpuCodec()
    assert not codec.on_gpu
    assert [r.getMessage() for r in caplog.records] == [
        "JPEG decoding and encoding stay on the CPU: nvImageCodec cannot start on GPU 0 (Internal error - Could not "
        "create decoder. Code: 8)"]
    _same_as_cpu(codec.read_images([IMAGES / "city_0.jpg"]), [IMAGES / "city_0.jpg"])


def test_native_stderr_becomes_debug_records(caplog):
    with caplog.at_level(logging.DEBUG, "segnet.gpu_codec"), gpu_codec._stderr_to_log():
        os.write(2, b"Failed to load nvjpeg2k library!\n")
    assert [r.getMessage() for r in caplog.records] == ["nvImageCodec: Failed to load nvjpeg2k library!"]


def test_a_codec_started_in_the_background_prints_nothing_and_hides_no_other_output(tmp_path, monkeypatch,
                                                                                     capfd, caplog):
    """nvImageCodec's import prints a line per codec library it does not find; the capture that turns them into
    debug records takes every thread's writes to stderr while it lasts. So ``start_in_background`` imports in
    the calling thread, and the thread that starts the decoder and encoder captures nothing: a line another
    thread writes meanwhile reaches stderr."""
    import threading

    package = tmp_path / "site" / "nvidia" / "nvimgcodec"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import os, threading\n"
        "os.write(2, b'Failed to load nvjpeg2k library!\\n')\n"
        "release = threading.Event()\n"
        "SRGB = CMYK = YCCK = None\n"
        "class Decoder:\n"
        "    def __init__(self, **kwargs):\n"
        "        assert release.wait(30)\n"  # starting takes a while: another thread prints meanwhile
        "Encoder = Decoder\n"
        "def DecodeParams(**kwargs): return kwargs\n"
        "def EncodeParams(**kwargs): return kwargs\n"
        "def JpegEncodeParams(**kwargs): return kwargs\n"
        "class QualityType: QUALITY = 'quality'\n"
        "class ChromaSubsampling: CSS_420 = '420'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("nvidia", "nvidia.nvimgcodec"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(gpu_codec, "_gpu_visible", lambda: True)
    captured = []
    real_capture = gpu_codec._stderr_to_log

    def capture():
        captured.append(threading.current_thread().name)
        return real_capture()

    monkeypatch.setattr(gpu_codec, "_stderr_to_log", capture)
    with caplog.at_level(logging.DEBUG, "segnet.gpu_codec"):
        started = gpu_codec.start_in_background()
        os.write(2, b"segnet: a line of the run\n")  # while the decoder starts in the other thread
        sys.modules["nvidia.nvimgcodec"].release.set()
        codec = started.result(timeout=30)
    assert codec.on_gpu and codec.twin().on_gpu
    assert captured == [threading.current_thread().name]  # the import's, here; none in the starting thread
    err = capfd.readouterr().err
    assert "segnet: a line of the run" in err and "nvjpeg2k" not in err
    assert "nvImageCodec: Failed to load nvjpeg2k library!" in [r.getMessage() for r in caplog.records]
