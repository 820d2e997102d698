"""``segnet-download-models``: list, download, install and verify the pretrained networks.

A thin shell over ``segnet.download`` and ``segnet.zoo``: it parses flags, loops over networks and turns
``SegnetError`` into one ``segnet-download-models: error: ...`` line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import SegnetError, UsageError
from ..zoo import select
from ..zoo.registry import NETWORKS, find_network, is_installed, models_dir, network_dir
from .common import Parser, add_verbosity, configure_output, entry_points, error_line

PROG = "segnet-download-models"
log = logging.getLogger("segnet")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Download and install the pretrained segmentation networks (FCN-ResNet18 zoo).",
        epilog="Download order: $SEGNET_MODEL_MIRROR (a base URL or folder holding <Archive>.tar.gz), "
        "NVIDIA's box share, then the jetson-inference GitHub release mirror.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="networks to download (names or aliases)")
    p.add_argument("--list", action="store_true", help="list every network and whether it is installed")
    p.add_argument("--all", action="store_true", help="download every network that has a download URL")
    p.add_argument("--models-dir", metavar="DIR",
                   help="where networks live (default: $SEGNET_MODELS, else the source tree's models/ "
                   "folder, else the user data folder)")
    p.add_argument("--archive", metavar="FILE", help="install NAME from a local <Archive>.tar.gz")
    p.add_argument("--verify", action="store_true",
                   help="check installed networks (NAME..., else all installed) against their manifest")
    p.add_argument("--force", action="store_true", help="download and reinstall even if installed")
    add_verbosity(p)
    return p



def _run(args) -> int:
    configure_output(args.quiet, args.verbose)
    modes = [flag for flag, on in (("--list", args.list), ("--verify", args.verify),
                                   ("--archive", args.archive is not None)) if on]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be combined")
    if args.all and args.names:
        raise UsageError("give network names or --all, not both")
    root = models_dir(args.models_dir)
    if args.list:
        if args.names or args.all:
            raise UsageError("--list takes no network names")
        _list(root)
        return 0
    if args.verify:
        return _verify(args, root)
    if args.archive is not None:
        return _install_archive(args, root)
    if not args.names and not args.all:
        raise UsageError("name the networks to download, or use --all or --list")
    return _download(args, root)


def _download(args, root: Path) -> int:
    from ..zoo.download import install

    if args.all:
        networks, left = select.downloadable()
        for info, why in left:
            log.info(f"skipping {info.name}: {why}")
    else:
        networks = select.networks_named(args.names)
    failed = 0
    for info in networks:
        if info.ships_with_segnet and not args.force:
            log.info(f"{info.name} ships with segnet ({network_dir(info, root)}): nothing to download")
            continue
        if is_installed(info, root) and not args.force:
            log.info(f"{info.name} is already installed in {root} (--force reinstalls)")
            continue
        try:
            install(info, root, force=args.force)
        except SegnetError as exc:
            if isinstance(exc, UsageError) or len(networks) == 1:
                raise
            error_line(PROG, str(exc))
            failed += 1
    return 1 if failed else 0


def _install_archive(args, root: Path) -> int:
    from ..zoo.download import install

    archive = Path(args.archive).expanduser()
    if len(args.names) > 1 or args.all:
        raise UsageError("--archive installs one network: --archive FILE NAME")
    if args.names:
        info = find_network(args.names[0])
    else:
        info = select.network_for_archive(archive)
    if not archive.is_file():
        raise UsageError(f"--archive: no such file: {archive}")
    if is_installed(info, root) and not args.force:
        log.info(f"{info.name} is already installed in {root} (--force replaces it)")
        return 0
    install(info, root, archive=archive, force=args.force)
    return 0


def _verify(args, root: Path) -> int:
    from ..zoo.download import verify

    if args.names:
        networks = select.networks_named(args.names)
    else:
        networks = select.present(root)
        if not networks:
            log.info(f"no networks installed in {root}")
            return 0
    bad = 0
    for info in networks:
        problems = verify(info, root)
        if problems:
            bad += 1
            for problem in problems:
                error_line(PROG, f"{info.name}: {problem}")
        else:
            print(f"{info.name}: ok{' (as shipped with segnet)' if info.ships_with_segnet else ''}")
    return 1 if bad else 0


def _list(root: Path) -> None:
    rows = [("NAME", "INPUT", "CLASSES", "DATASET", "ACCURACY", "STATUS")]
    aliases = {}
    notes: list[str] = []
    for info in NETWORKS:
        status = select.status(info, root)
        accuracy = f"{info.accuracy:.1%}" if info.accuracy is not None else "-"
        if info.accuracy_measured:
            accuracy += "*"
            notes.append(f"* {info.name}: {info.accuracy_measured}")
        width, height = info.input_size
        rows.append((info.name, f"{width}x{height}", str(info.num_classes), info.dataset, accuracy, status))
        aliases[info.name] = info.aliases
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"models directory: {root}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if aliases.get(row[0]):
            print(f"    aliases: {', '.join(aliases[row[0]])}")
    print("accuracy: global pixel accuracy on the dataset's validation split, as jetson-inference published it"
          + (" (* measured by segnet)" if notes else ""))
    for note in notes:
        print(note)
    print("a network's classes and colours: segnet-console --network NAME --legend legend.png")


main, console = entry_points(PROG, _parser, _run)

if __name__ == "__main__":
    console()
