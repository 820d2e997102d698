"""Zoo archives built in jetson's layout around the shared tiny stride-32 model, for the download tests
and the console's on-demand download tests; and a URL where nothing listens."""

from __future__ import annotations

import functools
import io
import socket
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from segnet.zoo.registry import find_network
from tests.support import models as tiny_models

INFO = find_network("fcn-resnet18-deepscene")  # 5 classes, archive FCN-ResNet18-DeepScene-576x320


@functools.cache
def network_files(num_classes: int = 5) -> dict[str, bytes]:
    """The three files of a network in jetson's layout, around the shared tiny stride-32 model."""
    with tempfile.TemporaryDirectory() as folder:
        model = tiny_models.pooling_model(Path(folder) / "m.onnx", num_classes, width=64, height=64)
        onnx_bytes = model.read_bytes()
    return {
        "fcn_resnet18.onnx": onnx_bytes,
        "classes.txt": "".join(f"class{i}\n" for i in range(num_classes)).encode(),
        "colors.txt": "".join(f"{i} {2 * i} {3 * i}\n" for i in range(num_classes)).encode(),
    }


def check_installed_model(path: Path, num_classes: int = 5) -> None:
    """The installed model runs and computes what the shared pooling model must."""
    import onnxruntime

    tensor = np.random.default_rng(1).standard_normal((3, 64, 64)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["output_0"], {"input_0": tensor[None]})
    expected = tiny_models.pooling_reference(tensor, num_classes)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-4, atol=1e-5)


def member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def make_archive(folder: str = INFO.archive, *, omit=(), replace=None, extra=()) -> bytes:
    """A jetson-style .tar.gz: ``folder/``, the three network files, an incompressible 48 KB file that
    gives the transfer some length (and shows other members are ignored), plus ``extra`` members."""
    padding = np.random.default_rng(2).bytes(48 * 1024)
    files = {**network_files(), "padding.bin": padding, **(replace or {})}
    members = [member(folder, kind=tarfile.DIRTYPE)]
    members += [member(f"{folder}/{name}", data) for name, data in files.items() if name not in omit]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in [*members, *extra]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def closed_port_url(path: str = "/x.tar.gz") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
