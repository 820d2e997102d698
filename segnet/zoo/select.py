"""Which networks a zoo command works on: names resolved (before any work), those ``--all`` downloads and
why the others are left, the network an archive holds, those installed, and each one's status."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .registry import NETWORKS, NetworkInfo, find_network, is_installed, network_dir


def networks_named(names: list[str]) -> list[NetworkInfo]:
    """The records for ``names`` (all resolved before any work starts), without duplicates."""
    return list({info.name: info for info in map(find_network, names)}.values())


def downloadable() -> tuple[list[NetworkInfo], list[tuple[NetworkInfo, str]]]:
    """What ``--all`` downloads: every network with a download URL; and the others, each with why not."""
    from .download import candidate_urls

    chosen, left = [], []
    for info in NETWORKS:
        if candidate_urls(info):
            chosen.append(info)
        elif info.ships_with_segnet:
            left.append((info, "it ships with segnet"))
        else:
            left.append((info, f"no download URL (install it with --archive FILE {info.name})"))
    return chosen, left


def network_for_archive(archive: Path) -> NetworkInfo:
    """The network whose archive file name ``archive`` has (``<Archive>.tar.gz``)."""
    stem = archive.name
    for suffix in (".tar.gz", ".tgz", ".gz"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for info in NETWORKS:
        if info.archive.lower() == stem.lower():
            return info
    raise UsageError(f"cannot tell which network {archive.name} holds; name it: --archive FILE NAME")


def present(root: Path) -> list[NetworkInfo]:
    """The networks with a folder in ``root``, and the one that ships with segnet."""
    return [info for info in NETWORKS if (root / info.name).is_dir() or info.ships_with_segnet]


def status(info: NetworkInfo, root: Path) -> str:
    """``ships with segnet (45.0 MiB)``, ``installed (...)``, ``incomplete`` or ``not installed``."""
    folder = network_dir(info, root)
    if is_installed(info, root):
        return f"{'ships with segnet' if info.ships_with_segnet else 'installed'} ({_size(folder)})"
    return "incomplete" if folder.is_dir() else "not installed"


def _size(folder: Path) -> str:
    total = float(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
    for unit in ("B", "KiB", "MiB"):
        if total < 1024:
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"
