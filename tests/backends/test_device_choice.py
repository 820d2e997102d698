"""Where onnxruntime runs the network (``device``): a run of fewer than ``CPU_BELOW`` images on the CPU where
CUDA could run it (CUDA's start costs more than the work), every other run on CUDA, ``cuda`` and ``cpu`` as asked,
and one-line errors where they cannot be had. This machine has no GPU: the tests that need onnxruntime to see
one make its provider list say CUDA and record the providers each real session is asked for (the sessions
themselves run on the CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import segnet.backends
from segnet import Options, Segmenter
from segnet.backends import CPU_BELOW, open_backend
from segnet.backends import onnxruntime as ort_backend
from segnet.errors import SegnetError
from tests.support.models import pooling_model

REPO = Path(__file__).resolve().parents[2]
CUDA = "CUDAExecutionProvider"


@pytest.fixture
def model(tmp_path):
    return pooling_model(tmp_path / "fcn.onnx", num_classes=5, width=64, height=32)


@pytest.fixture
def asked(monkeypatch) -> list[list[str]]:
    """onnxruntime as on a machine with a GPU it can use; the provider names each session is asked for."""
    calls: list[list[str]] = []
    real = onnxruntime.InferenceSession

    def session(model, options=None, providers=None, **kwargs):
        calls.append([p[0] if isinstance(p, tuple) else p for p in providers or []])
        return real(model, options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    monkeypatch.setattr(ort_backend, "_cuda_device_visible", lambda: True)
    return calls


def opened(model, images: int | None, **options):
    return open_backend(model, Options(backend="onnxruntime", **options), expected_images=images)


def test_a_run_of_few_images_runs_on_the_cpu_and_says_so(model, asked):
    for images in range(1, CPU_BELOW):
        with opened(model, images) as backend:
            assert asked[-1] == ["CPUExecutionProvider"]
            count = "1 image finishes" if images == 1 else f"{images} images finish"
            assert backend.description == (f"onnxruntime (CPUExecutionProvider; {count} sooner here than CUDA "
                                           "starts: device='cuda' for the GPU)")
            assert backend.infer(np.zeros((1, 3, 32, 64), np.float32)).shape == (1, 5, 1, 2)


def test_more_images_an_unknown_count_or_device_cuda_run_on_cuda(model, asked):
    for images, device in ((CPU_BELOW, "auto"), (None, "auto"), (1, "cuda")):
        with opened(model, images, device=device) as backend:
            assert asked[-1] == [CUDA, "CPUExecutionProvider"], (images, device)
            assert "sooner" not in backend.description


def test_device_cpu_runs_on_the_cpu_whatever_the_count(model, asked):
    for images in (1, 1000, None):
        with opened(model, images, device="cpu") as backend:
            assert asked[-1] == ["CPUExecutionProvider"]
            assert backend.description == "onnxruntime (CPUExecutionProvider)"


def test_device_cpu_keeps_auto_off_tensorrt_on_a_machine_with_a_gpu(model, monkeypatch):
    monkeypatch.setattr(segnet.backends, "NVIDIA_GPU_SIGNS", (__file__,))  # as on a machine with a GPU
    backend = open_backend(model, Options(device="cpu"))
    assert type(backend) is ort_backend.OnnxRuntimeBackend  # neither TensorRT nor a fallback that says why
    with pytest.raises(SegnetError, match=r"^device='cpu': TensorRT runs only on a GPU; use backend='auto' or "
                                          r"onnxruntime to run on the CPU$"):
        open_backend(model, Options(backend="tensorrt", device="cpu"))


def test_device_cuda_without_cuda_is_a_one_line_error(model, monkeypatch):
    monkeypatch.setattr(ort_backend, "_cuda_device_visible", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    with pytest.raises(SegnetError, match=r"^device='cuda': onnxruntime sees no CUDA GPU here; use "
                                          r"device='auto' to run where it can$"):
        opened(model, None, device="cuda").__enter__()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(SegnetError, match=r"has no CUDA provider here \(pip install onnxruntime-gpu\)"):
        opened(model, None, device="cuda").__enter__()


def test_the_segmenter_passes_its_run_size(model, asked):
    """The run loop gives the segmenter its image count; the segmenter's backend decides with it."""
    labels = model.parent / "classes.txt"
    labels.write_text("".join(f"c{i}\n" for i in range(5)))
    with Segmenter(model=model, labels=labels, backend="onnxruntime", expected_images=1) as one:
        assert asked[-1] == ["CPUExecutionProvider"] and "1 image finishes" in one.description
    with Segmenter(model=model, labels=labels, backend="onnxruntime", expected_images=500) as many:
        assert asked[-1] == [CUDA, "CPUExecutionProvider"] and "sooner" not in many.description


def test_the_console_says_which_device_cannot_be_had(tmp_path):
    """The real command on this machine (no CUDA provider): one line, exit status 1, nothing written."""
    image, out = REPO / "data" / "images" / "city_0.jpg", tmp_path / "out.jpg"
    proc = subprocess.run([sys.executable, "-m", "segnet", "--device", "cuda", str(image), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has a CUDA provider here")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ("segnet-console: error: --device cuda: onnxruntime has no CUDA provider here (pip "
                           "install onnxruntime-gpu); use --device auto to run where it can\n")
    assert not out.exists()
