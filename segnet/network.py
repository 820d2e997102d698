"""Which files make up a network: a pretrained name from the zoo, or a custom ONNX model."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from . import zoo
from .errors import SegnetError, UsageError


@dataclass(frozen=True)
class NetworkFiles:
    """The model and its optional label and colour files."""

    name: str
    model: Path
    labels: Path | None = None
    colors: Path | None = None


def locate(network: str | None = None, model: str | Path | None = None, labels: str | Path | None = None,
           colors: str | Path | None = None, models_dir: str | Path | None = None,
           download: bool = True) -> NetworkFiles:
    """Resolve the CLI's network options to files. ``model`` (a .onnx file, or a folder in the zoo layout)
    overrides ``network``; explicit ``labels``/``colors`` override the folder's own."""
    if model is not None:
        files = _custom(Path(model))
    else:
        files = _pretrained(network or zoo.DEFAULT_NETWORK, models_dir, download)
    for path, flag in ((labels, "--labels"), (colors, "--colors")):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    return NetworkFiles(files.name, files.model, Path(labels) if labels else files.labels,
                        Path(colors) if colors else files.colors)


def _custom(model: Path) -> NetworkFiles:
    if model.is_dir():
        return _folder(model.name, model)
    if not model.is_file():
        raise UsageError(f"--model {model}: no such file")
    return NetworkFiles(model.stem, model)


def _folder(name: str, folder: Path) -> NetworkFiles:
    onnx = folder / zoo.MODEL_FILE
    if not onnx.is_file():
        raise SegnetError(f"{folder} holds no {zoo.MODEL_FILE}")
    optional = [folder / f if (folder / f).is_file() else None for f in (zoo.LABELS_FILE, zoo.COLORS_FILE)]
    return NetworkFiles(name, onnx, *optional)


def _pretrained(name: str, models_dir, download: bool) -> NetworkFiles:
    info = zoo.find_network(name)
    root = zoo.models_dir(models_dir)
    if not zoo.is_installed(info, root):
        folder = zoo.network_dir(info, root)
        if info.url is None:
            raise SegnetError(f"network {info.name} should ship with segnet but is missing from {folder}: "
                              "reinstall segnet, or set SEGNET_MODELS to a folder that holds it")
        if not download:
            raise SegnetError(f"network {info.name} is not installed in {root}: run "
                              f"'segnet-download-models {info.name}' (or drop --no-download)")
        from .download import install

        print(f"segnet: network {info.name} is not installed; downloading it to {root}", file=sys.stderr)
        install(info, root)
    return _folder(info.name, zoo.network_dir(info, root))
