"""The model zoo: one frozen record per pretrained network, and where installed networks live.

The records feed ``--network`` (names and aliases, case-insensitive), ``--help`` and the download tool.
A network on disk is a folder ``<models dir>/<name>/`` holding ``fcn_resnet18.onnx``, ``classes.txt`` and
``colors.txt`` (the layout of jetson-inference's model archives).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

MODEL_FILE = "fcn_resnet18.onnx"
LABELS_FILE = "classes.txt"
COLORS_FILE = "colors.txt"
NETWORK_FILES = (MODEL_FILE, LABELS_FILE, COLORS_FILE)
#: What a network that ships with segnet carries besides its network files (pyproject.toml's package data names
#: the same): how it was trained and measured.
SHIPPED_EXTRA_FILES = ("MODEL_CARD.md", "train.json", "train.log")
#: Folders the shipped network carries: the CamVid train images its INT8 copy is calibrated on
SHIPPED_FOLDERS = ("calibration",)

BOX = "https://nvidia.box.com/shared/static/"
GITHUB_MIRROR = "https://github.com/dusty-nv/jetson-inference/releases/download/model-mirror-190618/"

CITYSCAPES_21 = (
    "void", "ego_vehicle", "ground", "road", "sidewalk", "building", "wall", "fence", "pole",
    "traffic_light", "traffic_sign", "vegetation", "terrain", "sky", "person", "car", "truck", "bus",
    "train", "motorcycle", "bicycle",
)
DEEPSCENE_5 = ("trail", "grass", "vegetation", "obstacle", "sky")
VOC_21 = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
CAMVID_11 = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
    "Bicyclist",
)

JETSON_LICENCE = "jetson-inference pretrained model (MIT); the training data's own terms apply"


@dataclass(frozen=True)
class NetworkInfo:
    """One pretrained network: what it is, where it comes from, how big its input is."""

    name: str
    archive: str  # folder name inside the archive, also the archive's file stem
    input_size: tuple[int, int]  # (width, height)
    num_classes: int
    dataset: str
    licence: str
    aliases: tuple[str, ...] = ()
    url: str | None = None  # primary download URL (NVIDIA's box share); None: shipped with segnet
    classes: tuple[str, ...] = ()  # empty where only the archive's classes.txt knows them
    accuracy: float | None = None  # global pixel accuracy on the dataset's validation split, 0..1
    accuracy_measured: str = ""  # where segnet measured ``accuracy`` itself; empty: jetson's published table
    shipped_sha256: tuple[tuple[str, str], ...] = ()  # a network that ships with segnet: its files' SHA-256

    @property
    def ships_with_segnet(self) -> bool:
        """Whether the network comes with segnet (and has nothing to download)."""
        return self.url is None and bool(self.shipped_sha256)

    @property
    def mirror_url(self) -> str | None:
        return f"{GITHUB_MIRROR}{self.archive}.tar.gz" if self.url else None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _jetson(name, archive, box_id, size, num_classes, dataset, accuracy, classes=(), aliases=()):
    return NetworkInfo(
        name=name, archive=archive, input_size=size, num_classes=num_classes, dataset=dataset,
        licence=JETSON_LICENCE, aliases=tuple(aliases), url=f"{BOX}{box_id}.gz", classes=classes,
        accuracy=accuracy,
    )


DEFAULT_NETWORK = "fcn-resnet18-camvid-480x352"

NETWORKS: tuple[NetworkInfo, ...] = (
    NetworkInfo(
        name=DEFAULT_NETWORK, archive="FCN-ResNet18-CamVid-480x352", input_size=(480, 352), num_classes=11,
        dataset="CamVid", licence="CC BY-NC 4.0 (trained on CamVid)", aliases=("fcn-resnet18-camvid",),
        classes=CAMVID_11, accuracy=0.919,
        accuracy_measured="measured by segnet-eval on CamVid val (101 images; see its MODEL_CARD.md)",
        shipped_sha256=(  # as committed in models/<name>/; --verify checks the shipped files against these
            (MODEL_FILE, "ba34bd965e1e225598c8fabff5cba04b877db246643414a7e8bed1b0f8c6ad59"),
            (LABELS_FILE, "96b550928c77312d26ecb0aad5c67476290393bd5e49df63f4ab6ed56566a940"),
            (COLORS_FILE, "76017abb15cd172e963d9da30f3f863190c66768ee93b0a924ffa9d0d1cc3d66"),
        ),
    ),
    _jetson("fcn-resnet18-cityscapes-512x256", "FCN-ResNet18-Cityscapes-512x256",
            "k7s7gdgi098309fndm2xbssj553vf71s", (512, 256), 21, "Cityscapes", 0.833, CITYSCAPES_21,
            ["fcn-resnet18-cityscapes"]),
    _jetson("fcn-resnet18-cityscapes-1024x512", "FCN-ResNet18-Cityscapes-1024x512",
            "9aqg4gpjmk7ipz4z0raa5mvs35om6emy", (1024, 512), 21, "Cityscapes", 0.873, CITYSCAPES_21),
    _jetson("fcn-resnet18-cityscapes-2048x1024", "FCN-ResNet18-Cityscapes-2048x1024",
            "ylh3d2qk8qvitalq8sy803o7avrb6w0h", (2048, 1024), 21, "Cityscapes", 0.896, CITYSCAPES_21),
    _jetson("fcn-resnet18-deepscene-576x320", "FCN-ResNet18-DeepScene-576x320",
            "jm0zlezvweiimpzluohg6453s0u0nvcv", (576, 320), 5, "DeepScene", 0.964, DEEPSCENE_5,
            ["fcn-resnet18-deepscene"]),
    _jetson("fcn-resnet18-deepscene-864x480", "FCN-ResNet18-DeepScene-864x480",
            "gooux9b5nknk8wlk60ou9s2unpo760iq", (864, 480), 5, "DeepScene", 0.969, DEEPSCENE_5),
    _jetson("fcn-resnet18-mhp-512x320", "FCN-ResNet18-MHP-512x320",
            "dgaw0ave3bdws1t5ed333ftx5dbpt9zv", (512, 320), 21, "Multi-Human Parsing", 0.865,
            aliases=["fcn-resnet18-mhp"]),
    _jetson("fcn-resnet18-mhp-640x360", "FCN-ResNet18-MHP-640x360",
            "50mvlrjwbq9ugkmnnqp1sm99g2j21sfn", (640, 360), 21, "Multi-Human Parsing", 0.871),
    _jetson("fcn-resnet18-voc-320x320", "FCN-ResNet18-Pascal-VOC-320x320",
            "p63pgrr6tm33tn23913gq6qvaiarydaj", (320, 320), 21, "Pascal VOC", 0.859, VOC_21,
            ["fcn-resnet18-voc", "fcn-resnet18-pascal-voc", "fcn-resnet18-pascal-voc-320x320"]),
    _jetson("fcn-resnet18-voc-512x320", "FCN-ResNet18-Pascal-VOC-512x320",
            "njup7f3vu4mgju89kfre98olwljws5pk", (512, 320), 21, "Pascal VOC", 0.885, VOC_21),
    _jetson("fcn-resnet18-sun-512x400", "FCN-ResNet18-SUN-RGBD-512x400",
            "5vs9t2wah5axav11k8o3l9skb7yy3xgd", (512, 400), 21, "SUN RGB-D", 0.643,
            aliases=["fcn-resnet18-sun"]),
    _jetson("fcn-resnet18-sun-640x512", "FCN-ResNet18-SUN-RGBD-640x512",
            "z5llxysbcqd8zzzsm7vjqeihs7ihdw20", (640, 512), 21, "SUN RGB-D", 0.651),
)

_BY_NAME = {n.lower(): info for info in NETWORKS for n in info.names}


def find_network(name: str) -> NetworkInfo:
    """The record for a network name or alias (case-insensitive); a UsageError suggests close names."""
    info = _BY_NAME.get(name.strip().lower())
    if info is not None:
        return info
    close = difflib.get_close_matches(name.lower(), list(_BY_NAME), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run 'segnet-download-models --list' to see them"
    raise UsageError(f"unknown network '{name}': {hint}")


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """Where network folders live: ``override``, else ``$SEGNET_MODELS``, else the project's ``models/``
    folder when segnet runs from its source tree, else the user data directory."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SEGNET_MODELS")
    if env:
        return Path(env).expanduser()
    project = _source_tree_models()
    if project is not None:
        return project
    import platformdirs

    return Path(platformdirs.user_data_dir("segnet")) / "models"


def _source_tree_models() -> Path | None:
    """``models/`` beside the package when segnet runs from its source tree (a checkout, ``pip -e``)."""
    project = Path(__file__).resolve().parents[2] / "models"
    return project if (project.parent / "pyproject.toml").is_file() and project.is_dir() else None


def shipped_dir() -> Path | None:
    """The folder of the networks that ship with segnet: the project's ``models/``, which a wheel installs
    as the package data ``segnet/models`` (setuptools' package-dir mapping, so it never moves)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("segnet.models")
    except ImportError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        return Path(location)
    return _source_tree_models()


def network_dir(info: NetworkInfo, root: Path | None = None) -> Path:
    """The network's folder in ``root``; a network that ships with segnet and is not there comes from
    the installed package."""
    folder = (root or models_dir()) / info.name
    if info.url is None and not _complete(folder):
        shipped = shipped_dir()
        if shipped is not None and _complete(shipped / info.name):
            return shipped / info.name
    return folder


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in NETWORK_FILES)


def is_installed(info: NetworkInfo, root: Path | None = None) -> bool:
    return _complete(network_dir(info, root))
