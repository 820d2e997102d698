"""The device executor (issue 20): batches decoded, drawn inside the fused graph and encoded, overlapped.
On this CPU machine it runs with onnxruntime's CPU provider and the CPU codecs standing in for nvImageCodec
(``--fuse on --image-codec gpu``), so the same files as every other executor must come out."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from segnet.errors import UsageError
from segnet.run import Finished, ImageDone, ImageFailed, run
from segnet.run import device as device_executor
from tests.conftest import IMAGES


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path):
    """Street and indoor images of several sizes, a PNG, and a file that is not an image."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("city_0.jpg", "city_1.jpg", "room_0.jpg", "trail_0.jpg", "object_0.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    from PIL import Image

    Image.open(IMAGES / "peds_2.jpg").save(folder / "peds_2.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all")
    return folder


def test_the_device_executor_writes_what_the_cpu_executors_write(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(device_executor, "BATCH", 3)  # several batches, of mixed sizes, in flight
    used = []
    real = device_executor.run
    monkeypatch.setattr(device_executor, "run", lambda *a, **k: used.append(True) or real(*a, **k, batch=3))
    checksums = _digests(folder)
    events = []
    summary = run(folder, tmp_path / "device", fuse="on", image_codec="gpu", visualize="overlay,mask",
                  stats=True, on_event=events.append)
    assert used == [True]
    reference = run(folder, tmp_path / "cpu", image_codec="cpu", visualize="overlay,mask", stats=True)
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (6, 1)
    assert _digests(tmp_path / "device") == _digests(tmp_path / "cpu")  # byte for byte, PNG and JPEG
    assert _digests(folder) == checksums  # inputs untouched
    per_image = [e for e in events if isinstance(e, (ImageDone, ImageFailed))]
    assert [e.index for e in per_image] == list(range(7))  # input order, whatever batch each was in
    failed = [e for e in per_image if isinstance(e, ImageFailed)]
    assert [e.name.rsplit("/", 1)[-1] for e in failed] == ["broken.jpg"]
    assert all(e.stats and "grid size" in e.stats for e in per_image if isinstance(e, ImageDone))
    assert isinstance(events[-1], Finished)
    done = [e for e in per_image if isinstance(e, ImageDone)]
    assert all({"decode", "inference", "encode"} <= set(e.seconds) for e in done)


def test_cpu_threads_decode_the_batches_that_come_while_the_codec_is_busy(folder, tmp_path, monkeypatch):
    """Beside the GPU's decoders, CPU threads decode the batches that arrive while every codec has one (issue
    20): here the one codec holds its first batch until a CPU thread has decoded an image of a later batch, so
    both decode, and the files are still the CPU executor's, byte for byte, reported in input order."""
    import threading

    from segnet import gpu_codec

    threads, cpu_decoded = [], threading.Event()
    real_read = gpu_codec.read_on_cpu

    def read(path):
        threads.append(threading.current_thread().name)
        if threading.current_thread().name.startswith("segnet-decode-cpu"):
            cpu_decoded.set()
        return real_read(path)

    class HeldCodec:  # the GPU codec's interface, decoding on the CPU once a CPU thread has decoded
        on_gpu = False

        def read_images(self, paths, on_device=False):
            assert cpu_decoded.wait(60), "no batch went to the CPU threads while the codec held one"
            return [gpu_codec.read_on_cpu(path) for path in paths]

        def jpeg_data(self, pictures, paths):
            return {}  # write_file encodes with Pillow

    monkeypatch.setattr(gpu_codec, "read_on_cpu", read)
    real = device_executor.run
    monkeypatch.setattr(device_executor, "run", lambda segmenter, jobs, sink, codec, **given: real(
        segmenter, jobs, sink, codec=HeldCodec(), batch=2, decoders=1, cpu_decoders=2, **given))
    checksums = _digests(folder)
    events = []
    summary = run(folder, tmp_path / "device", fuse="on", image_codec="gpu", on_event=events.append)
    assert {name.rsplit("_", 1)[0] for name in threads} == {"segnet-decode", "segnet-decode-cpu"}
    reference = run(folder, tmp_path / "cpu", image_codec="cpu")
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (6, 1)
    assert _digests(tmp_path / "device") == _digests(tmp_path / "cpu")
    assert _digests(folder) == checksums
    assert [e.index for e in events if isinstance(e, (ImageDone, ImageFailed))] == list(range(7))


def test_the_run_begins_on_the_cpu_codecs_while_the_gpu_codec_starts(folder, tmp_path, monkeypatch):
    """nvImageCodec takes about a second to start: the run does not wait for it (issue 20). It is started once
    the first batch has run through the network; until it is there CPU threads decode and the writers encode;
    the batches after it decode and encode with it. Here the codec arrives once the first file is written, so
    both happen in one run; the files are the CPU executor's, byte for byte."""
    from concurrent.futures import Future

    from segnet import gpu_codec

    arriving: Future = Future()
    decoded, encoded = [], []

    class LateCodec:  # the GPU codec's interface on the CPU codecs
        on_gpu = False

        def read_images(self, paths, on_device=False):
            decoded.extend(paths)
            return [gpu_codec.read_on_cpu(path) for path in paths]

        def jpeg_data(self, pictures, paths):
            encoded.extend(paths)
            return {i: gpu_codec._cpu_jpeg(p) for i, (p, path) in enumerate(zip(pictures, paths))
                    if str(path).endswith(".jpg")}

    real_write = gpu_codec.write_file

    def write(picture, path, data):
        error = real_write(picture, path, data)
        if not arriving.done():
            arriving.set_result(LateCodec())
        return error

    from segnet.segmenter import Segmenter

    batches_run, started_after = [], []
    real_draw = Segmenter.draw_batch
    monkeypatch.setattr(Segmenter, "draw_batch", lambda self, images: batches_run.append(len(images)) or
                        real_draw(self, images))

    def start():  # the codec's start, which the executor calls once its first batch has run
        started_after.append(len(batches_run))
        return arriving

    monkeypatch.setattr(gpu_codec, "write_file", write)
    monkeypatch.setattr(gpu_codec, "may_start", lambda: True)
    monkeypatch.setattr(gpu_codec, "start_in_background", start)
    real = device_executor.run
    monkeypatch.setattr(device_executor, "run", lambda segmenter, jobs, sink, codec, **given: real(
        segmenter, jobs, sink, codec=codec, batch=2, decoders=1, cpu_decoders=2, **given))
    summary = run(folder, tmp_path / "device", fuse="on", image_codec="gpu")
    reference = run(folder, tmp_path / "cpu", image_codec="cpu")
    # started once, after the first batch's network run (whose CUDA-graph capture its CUDA calls would break)
    assert started_after == [1]
    assert decoded and encoded  # the codec joined the run ...
    assert len(encoded) < summary.done  # ... after it had begun without it
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (6, 1)
    assert _digests(tmp_path / "device") == _digests(tmp_path / "cpu")


def test_the_encoder_goes_on_while_a_batch_is_written(folder, tmp_path, monkeypatch):
    """Each write is synced, so a batch's writes take a while; the encoder hands them to the writers and goes
    on with the next batch (issue 20: waiting for them held the network's thread up). Here the first file's
    write waits until the next batch has been encoded; the files are still the CPU executor's."""
    import threading

    from segnet import gpu_codec

    batches, second_encoded = [], threading.Event()

    class Codec:  # the GPU codec's interface on the CPU codecs
        on_gpu = False

        def read_images(self, paths, on_device=False):
            return [gpu_codec.read_on_cpu(path) for path in paths]

        def jpeg_data(self, pictures, paths):
            batches.append(len(paths))
            if len(batches) == 2:
                second_encoded.set()
            return {}

    real_write, waited = gpu_codec.write_file, []

    def write(picture, path, data):
        if not waited:
            waited.append(second_encoded.wait(30))
        return real_write(picture, path, data)

    monkeypatch.setattr(gpu_codec, "write_file", write)
    real = device_executor.run
    monkeypatch.setattr(device_executor, "run", lambda segmenter, jobs, sink, codec, **given: real(
        segmenter, jobs, sink, codec=Codec(), batch=2, writers=1, **given))
    summary = run(folder, tmp_path / "device", fuse="on", image_codec="gpu")
    reference = run(folder, tmp_path / "cpu", image_codec="cpu")
    assert waited == [True]  # the second batch was encoded while the first one's write waited
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (6, 1)
    assert _digests(tmp_path / "device") == _digests(tmp_path / "cpu")


def test_the_device_executor_is_not_chosen_on_a_cpu_by_default(folder, tmp_path, monkeypatch, caplog):
    used = []
    monkeypatch.setattr(device_executor, "run", lambda *a, **k: used.append(True))
    with caplog.at_level(logging.INFO, logger="segnet"):
        run(folder, tmp_path / "auto")
        run(folder, tmp_path / "fused", fuse="on")  # the fused graph without pictures drawn in it
    assert used == []
    assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]  # nothing said about GPUs


def test_image_codec_is_checked_like_every_option():
    with pytest.raises(UsageError, match=r"image_codec='tpu'.*choose auto, cpu or gpu"):
        run(IMAGES / "city_0.jpg", None, image_codec="tpu", stats=True)


def test_draw_batch_on_the_device_equals_drawing_here():
    from segnet import Segmenter
    from segnet.drawing import DrawSpec, draw

    spec = DrawSpec(("overlay", "mask"), "linear")
    images = np.stack([np.asarray(__import__("PIL.Image").Image.open(IMAGES / f"city_{i}.jpg").convert("RGB"))
                       for i in range(2)])
    with Segmenter(fuse="on", image_codec="gpu", drawing=spec) as device, Segmenter(drawing=spec) as here:
        assert device.draws_on_device and not here.draws_on_device
        for (a, picture_a), (b, picture_b) in zip(device.draw_batch(images), here.draw_batch(images)):
            assert (a.class_map == b.class_map).all()
            assert np.array_equal(picture_a, picture_b)
            assert np.array_equal(picture_b, draw(b.image, b.class_map, b.colors, spec))


def test_video_frames_are_drawn_with_the_network_in_batches_as_the_cpu_draws_them(tmp_path, monkeypatch):
    """Videos feed the device path (issue 20): where the network draws (the fused graph; here on the CPU
    provider, standing in for a GPU), a batch of frames is drawn with it and the frames written are the CPU's,
    byte for byte, in order; the source video is untouched."""
    from segnet.segmenter import Segmenter
    from tests.support import streams

    clip = streams.make_video(tmp_path / "clip.mp4", 12, size=(160, 96))
    before = _digests(tmp_path)
    batches = []
    real = Segmenter.draw_batch
    monkeypatch.setattr(Segmenter, "draw_batch", lambda self, images: batches.append(len(images)) or real(self, images))
    device = run(clip, tmp_path / "device" / "f_%03i.png", fuse="on", image_codec="gpu", batch_size=4,
                 visualize="overlay,mask")
    assert sum(batches) == 12 and max(batches) == 4  # every frame, in batches
    batches.clear()
    cpu = run(clip, tmp_path / "cpu" / "f_%03i.png", image_codec="cpu", batch_size=4, visualize="overlay,mask")
    assert batches == []  # drawn in the worker threads
    assert (device.done, device.failed) == (cpu.done, cpu.failed) == (12, 0)
    drawn = _digests(tmp_path / "device")
    assert len(drawn) == 12 and drawn == _digests(tmp_path / "cpu")
    assert {k: v for k, v in _digests(tmp_path).items() if k == "clip.mp4"} == before


def test_a_run_that_wants_no_results_keeps_the_pixels_for_the_device(folder, tmp_path, monkeypatch):
    """Without ``--stats`` the executor runs resident (``DeviceBatch`` groups, no ``Segmentation`` per image);
    onnxruntime's CPU provider has no device buffers, so each batch's host copy runs, and the files are the
    CPU executors' byte for byte."""
    from segnet.gpu_codec import DeviceBatch

    monkeypatch.setattr(device_executor, "BATCH", 3)
    calls = []
    real = device_executor.run
    monkeypatch.setattr(device_executor, "run", lambda *a, **k: calls.append(k["resident"]) or real(*a, **k))
    batches = []
    real_host = DeviceBatch.host
    monkeypatch.setattr(DeviceBatch, "host", lambda self: batches.append(self.shape) or real_host(self))
    events = []
    summary = run(folder, tmp_path / "device", fuse="on", image_codec="gpu", visualize="overlay,mask",
                  on_event=events.append)
    reference = run(folder, tmp_path / "cpu", image_codec="cpu", visualize="overlay,mask")
    assert calls == [True]
    assert (summary.done, summary.failed) == (reference.done, reference.failed) == (6, 1)
    assert _digests(tmp_path / "device") == _digests(tmp_path / "cpu")
    assert sum(shape[0] for shape in batches) == 6  # every image that decoded went through a DeviceBatch
    assert all(e.result is None for e in events if isinstance(e, ImageDone))
