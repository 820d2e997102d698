"""Which files make up a network: a pretrained name from the zoo, or a custom ONNX model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import SegnetError, UsageError, option
from ..options import Options
from . import registry as zoo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkFiles:
    """The model and its optional label and colour files."""

    name: str
    model: Path
    labels: Path | None = None
    colors: Path | None = None


def locate(options: Options) -> NetworkFiles:
    """The files of the network the options name: ``model`` (a .onnx file, or a folder in the zoo layout)
    overrides ``network``; explicit ``labels``/``colors`` override the folder's own."""
    if options.model is not None:
        files = _custom(options.model)
    else:
        files = _pretrained(options.network or zoo.DEFAULT_NETWORK, options.models_dir, not options.no_download)
    for path, name in ((options.labels, "labels"), (options.colors, "colors")):
        if path is not None and not path.is_file():
            raise UsageError(f"{option(name, path)}: no such file")
    return NetworkFiles(files.name, files.model, options.labels or files.labels, options.colors or files.colors)


def _custom(model: Path) -> NetworkFiles:
    if model.is_dir():
        return _folder(model.name, model)
    if not model.is_file():
        raise UsageError(f"{option('model', model)}: no such file")
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
            raise UsageError(f"network {info.name} is not installed in {root}: run "
                             f"'segnet-download-models {info.name}' (or drop {option('no_download')})")
        from .download import install

        log.info("network %s is not installed; downloading it to %s", info.name, root)
        install(info, root)
    return _folder(info.name, zoo.network_dir(info, root))
