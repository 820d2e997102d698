"""``segnet-bench``: per-stage times, the sequential loop against the pipelined runner in the same run, and
the network alone (``segnet.benchmark``)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..options import Options
from ..run.inputs import expand_inputs
from .common import Parser, add_options, add_verbosity, compared_options, configure_output, entry_points, options_from

PROG = "segnet-bench"
DESCRIPTION = """\
Where the time goes, and what the pipeline buys. In one run, on the same images and network: a plain
sequential loop (decode, pre-process, inference, class map, colorize, encode, one image after another) and
the pipelined runner of segnet-console (worker threads or processes, batches). Prints per-stage milliseconds
per image, images/s for both and the network alone; then the CPU time per image of each stage, the cores,
the bound they imply (cores / CPU ms per image) and how far the pipelined run is below it. --json prints
everything as one JSON object instead; --json-file also writes it to a file.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="examples:\n  segnet-bench --images 'data/images/city_*.jpg' --repeat 4 --json-file bench.json\n"
               "  segnet-bench --compare processes=0        worker threads against the default, in one run\n"
               "  segnet-bench --compare precision=fp16     another precision, in one run\n"
               "\nnetworks: segnet-download-models --list")
    p.add_argument("--images", default=None, help="a directory or quoted glob of images (default: the bundled "
                   "street images, data/images/city_*.jpg, in a source checkout)")
    p.add_argument("--image-size", metavar="WxH", help="resize the images to this size first (re-encoded as "
                   "JPEG quality 95, so decoding costs what it would)")
    p.add_argument("--repeat", type=int, default=3, help="pass over the images this many times (default 3)")
    p.add_argument("--format", default="jpg", help="output format of the encode stage (default jpg)")
    p.add_argument("--network-runs", type=int, default=20, help="timed inference calls for the network-only "
                   "figure (default 20)")
    p.add_argument("--compare", metavar="OTHER", help="also run the pipelined runner with these options, in the "
                   "same run: NAME=VALUE joined by ',' (backend and run options: processes=0 for threads, "
                   "precision=fp16, batch_size=8, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--json-file", metavar="PATH", help="also write the results here as JSON")
    add_options(p, "network", "backend", "format", "draw", "run")
    add_verbosity(p)
    return p


def _images(spec: str | None, size: str | None, scratch: Path) -> list[Path]:
    from ..errors import UsageError
    from ..options import size as check_size

    if spec is None:
        bundled = Path(__file__).resolve().parents[2] / "data" / "images"
        if not bundled.is_dir():
            raise UsageError("no bundled images here (an installed segnet has none): give --images")
        spec = str(bundled / "city_*.jpg")
    paths, _ = expand_inputs(spec)  # the inputs segnet-console would take
    if not size:
        return paths
    from PIL import Image

    w, h = check_size("image_size", size)
    resized = []
    for p in paths:
        out = scratch / f"{p.stem}-{w}x{h}.jpg"
        Image.open(p).convert("RGB").resize((w, h), Image.Resampling.BILINEAR).save(out, quality=95)
        resized.append(out)
    return resized


def run(args: argparse.Namespace) -> int:
    from ..benchmark import benchmark, format_report
    from ..errors import OptionError

    configure_output(args.quiet, args.verbose)
    options = options_from(args)
    compare = None
    if args.compare is not None:
        changes_a, changes_b = compared_options(args.compare, "backend", "run")
        options = Options.create(options, **changes_a)
        compare = Options.create(options, **changes_b)
    for name in ("repeat", "network_runs"):
        if getattr(args, name) < 1:
            raise OptionError(name, getattr(args, name), "give a whole number of 1 or more")
    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as scratch:
        paths = _images(args.images, args.image_size, Path(scratch)) * args.repeat
        report = benchmark(paths, options, Path(scratch), fmt=args.format, network_runs=args.network_runs,
                           image_size=args.image_size, compare=compare, compare_label=args.compare or "")
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    if args.json_file:
        from ..util import atomic_write

        atomic_write(args.json_file, (json.dumps(report, indent=1) + "\n").encode())
    return 0


main, console = entry_points(PROG, build_parser, run)

if __name__ == "__main__":
    console()
