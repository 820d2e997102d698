"""``segnet-console`` (also ``segnet`` and ``python -m segnet``): parses the flags, calls ``segnet.run``, and
turns its events into status lines, a progress bar and ``--stats`` tables.

Exit status: 2 for usage errors, 1 when some inputs failed (after processing the rest), 0 on success.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from collections import deque
from pathlib import Path

from .. import zoo
from ..errors import UsageError
from ..run import Finished, ImageDone, ImageFailed, SourceEnded, Started
from ..run.stats import line as stats_line
from ..run.uris import local_path, output_kind, scheme
from .common import Parser, add_options, add_verbosity, configure_output, entry_points, error_line, options_from

PROG = "segnet-console"

EPILOG = f"""\
networks (--network, case-insensitive; the default is {zoo.DEFAULT_NETWORK}, trained on CamVid street
scenes; segnet-download-models --list shows sizes, accuracy and what is installed):
{chr(10).join(f"  {n.name:<34} {', '.join(n.aliases)}" for n in zoo.NETWORKS)}

examples (from a checkout: they read data/images/ and tests/data/; videos need PyAV, the [video] extra):
  {PROG} data/images/camvid_0.jpg out.jpg                     overlay, default network
  {PROG} --alpha=200 data/images/camvid_0.jpg out.jpg
  {PROG} --visualize=mask data/images/camvid_0.jpg mask.png   class colours only
  {PROG} --filter-mode=point data/images/camvid_0.jpg blocky.png
  {PROG} --visualize=classes data/images/camvid_0.jpg ids.png   class indices, one byte per pixel
  {PROG} --stats data/images/camvid_0.jpg                     class histogram only, nothing written
  {PROG} --legend legend.png                                  every class's colour and name
  {PROG} "data/images/camvid_*.jpg" outdir/                   a glob, quoted: segnet expands it
  {PROG} data/images/camvid_*.jpg outdir/                     the shell expands it: the last path is the output
  {PROG} --batch-size=8 --skip-existing data/images/ outdir/  a directory; resumes an interrupted run
  {PROG} tests/data/camvid-clip.mp4 clip_overlay.mp4          every frame of a video, same rate, H.264
  {PROG} --stats --json tests/data/camvid-clip.mp4 | jq .classes[3].fraction   statistics as JSON lines
  {PROG} --network=fcn-resnet18-cityscapes data/images/city_0.jpg city.jpg   downloads the network once
  {PROG} /dev/video0 udp://192.168.1.20:5000                  a camera, live, streamed as MPEG-TS
  {PROG} rtp://@:5000 --input-codec=h264 cam.mp4              what jetson's rtp:// output sends
  {PROG} cams.txt out/                                        a list of cameras and streams, batched together

exit status: 0 success, 1 some inputs or sources failed (the rest were processed), 2 usage error.
"""


def build_parser() -> argparse.ArgumentParser:
    p = _ConsoleParser(prog=PROG, usage="%(prog)s [options] INPUT [INPUT ...] [OUTPUT]",
                       description="Semantic segmentation of images and videos with FCN-ResNet18 networks, "
                       "as jetson-inference's segnet-console does it, on onnxruntime or TensorRT.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="inputs, then the output. An input is an image file, a directory of images, a glob "
                   "('imgs/*.jpg'), a video, a camera (/dev/video0), a stream (rtsp://, rtp://@:PORT, udp://@:PORT, "
                   "http://), an image URL, or a .txt list of sources. The output is an image (format from its "
                   "extension: jpg, png, tga, bmp, ...), a directory for several inputs or a video's frames, a "
                   "sequence (out_%%04i.png), a video file, a stream (udp://HOST:PORT, rtp://HOST:PORT, "
                   "rtsp://SERVER/PATH) or display://0. With one path there is no output; with two, the second is "
                   "the output; with more, the last is the output, as cp takes it (images/*.jpg out/). With --stats "
                   "and an existing image or video last, every path is an input and nothing is written")
    add_options(p, "network", "backend", "format", "draw", "run", "io")
    p.add_argument("--legend", metavar="PATH", help="also write a picture of every class's colour and name (with "
                   "the alpha the overlay uses); with no input, only that")
    p.add_argument("--ray", nargs="?", const="", default=argparse.SUPPRESS, metavar="ADDRESS",
                   help="run a folder job on a Ray cluster (ADDRESS as ray.init takes it; without one, $RAY_ADDRESS "
                   "or a local instance); needs segnet[ray]. Write --ray=ADDRESS, or put --ray after the paths")
    add_verbosity(p)
    return p


class _ConsoleParser(Parser):
    """Flags may come between the paths (``rtsp://cam/s --output-codec h265 cam.mkv``): argparse's intermixed
    parsing gathers every path into one list, whatever the flags between them."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def run(args: argparse.Namespace) -> int:
    configure_output(args.quiet, args.verbose)
    _fix_ray_address(args)
    options = options_from(args)
    wants_stats = options.stats or options.stats_json or options.stats_file is not None
    inputs, output = split_paths(args.paths, wants_stats)
    if inputs is None and args.legend is None:
        raise UsageError("give an input: an image, a folder, a quoted glob or a video (see --help)")
    from ..run.planning import plan, plan_files

    # the legend is one more file the run writes: it may not be an input or an output (writes.Paths)
    legend = [(f"--legend {args.legend}", args.legend)] if args.legend is not None else []
    feed = None
    if inputs is None:
        plan_files(legend)
    else:
        feed = plan(inputs, output, options, legend)  # every input and output checked, once
        if not feed.wants_pictures() and not wants_stats:
            raise UsageError("give an output (a picture, a folder, a sequence like out_%04i.jpg, a video, a stream "
                             "or display://0) or --stats: without either nothing would be written or printed")
    if args.legend is None:
        return _run(feed, options, args.quiet)
    from ..segmenter import Segmenter

    with Segmenter(options=options) as segmenter:
        _write_legend(segmenter, args.legend)
        return 0 if feed is None else _run(feed, options, args.quiet, segmenter)


def _run(feed, options, quiet: bool, segmenter=None) -> int:
    from .. import run as runner

    report = Report(quiet, json_lines=options.stats_json)
    try:
        summary = runner.run(feed, None, options, on_event=report, segmenter=segmenter)
    finally:
        report.close()
    return 1 if summary.failed or summary.sources_failed else 0


def _write_legend(segmenter, path: str) -> None:
    import logging

    from ..image_io import write_image

    write_image(segmenter.legend(), path)
    logging.getLogger("segnet").info(f"legend of {segmenter.name} -> {path}")


def _fix_ray_address(args: argparse.Namespace) -> None:
    """``--ray images/ out/`` makes argparse read ``images/`` as the address: an address that names an
    existing path or a glob was meant as the first input."""
    address = getattr(args, "ray", None)
    if address and (Path(address).exists() or glob.has_magic(address)):
        args.ray, args.paths = "", [address, *args.paths]


def split_paths(paths: list[str], stats: bool) -> tuple[str | list[str] | None, str | None]:
    """The inputs and the output the positional paths name, as ``cp`` reads its arguments: one path is an
    input (no output); of two or more, the last is the output. With statistics asked for (``--stats``), a last
    path that is an existing image or video is an input too, so ``--stats a.jpg b.jpg`` never overwrites
    ``b.jpg``: nothing is written then."""
    if not paths:
        return None, None
    if len(paths) == 1:
        return paths[0], None
    *inputs, last = paths
    if stats and _existing_input(last):
        if len(paths) == 2:
            logging.getLogger("segnet").info(f"{last} exists: with --stats it is taken as a second input and "
                                             "nothing is written (give a new name or a folder to write pictures)")
        return paths, None
    if len(inputs) == 1:
        return inputs[0], last
    if _existing_input(last) and output_kind(last) == "image":
        raise UsageError(f"{last}: the last of several paths is the output (as with cp), and one picture cannot "
                         f"take {len(inputs)} inputs; give a folder last (out/), or --stats to only print "
                         "statistics")
    return inputs, last


def _existing_input(path: str) -> bool:
    """Whether ``path`` is an existing image or video file (something segnet reads, not a new output)."""
    from ..image_io import READ_EXTENSIONS
    from ..run.video import is_video

    if scheme(path):
        return False
    local = Path(local_path(path))
    return local.is_file() and (local.suffix.lower() in READ_EXTENSIONS or is_video(local))


class Report:
    """``segnet.run``'s events as the console shows them: status lines and errors on stderr, a progress
    bar on a terminal, ``--stats`` tables or JSON lines on stdout. Live work (cameras, streams) gets a status
    of frames per second and time per stage: on the bar of a terminal, else a line every ``interval`` s."""

    STAGES = (("decode", "decode"), ("preprocess", "pre"), ("inference", "network"), ("classmap", "classes"),
              ("colorize", "draw"), ("encode", "encode"))

    def __init__(self, quiet: bool, json_lines: bool = False, interval: float = 10.0):
        self.quiet, self.json_lines, self.interval = quiet, json_lines, interval
        self.bar = None
        self.several = self.live = False
        self.sources = 1
        self.start = time.perf_counter()
        self.recent: deque[tuple[float, dict[str, float], float | None]] = deque(maxlen=50)
        self.dropped: dict[str, int] = {}
        self.frames = 0
        self.last_status = time.perf_counter()

    def __call__(self, event) -> None:
        log = logging.getLogger("segnet")
        if isinstance(event, Started):
            self.several, self.live, self.sources = event.several, event.live, event.sources
            about = [f"{event.input_size[0]}x{event.input_size[1]}"] if event.input_size else []
            about += [f"{event.num_classes} classes"] if event.num_classes is not None else []
            details = f" ({', '.join(about)})" if about else ""
            log.info(f"{event.network}{details} on {event.backend}")
            if event.several and not self.quiet and sys.stderr.isatty():
                from .common import tqdm_bar

                self.bar = tqdm_bar(event.total, "", unit="frame" if event.live else "img")
        elif isinstance(event, ImageFailed):
            error_line(PROG, str(event.error))
            self._step()
        elif isinstance(event, ImageDone):
            if self.json_lines and event.record is not None:
                self._print(stats_line(event.record))
            elif event.stats is not None:
                self._print(f"{event.name}:\n{event.stats}" if self.several else event.stats)
            if not self.several and event.target is not None:
                log.info(f"{event.name} -> {event.target} ({sum(event.seconds.values()) * 1000:.0f} ms)")
            if event.frame is not None and event.source is not None:
                self.dropped[event.source] = event.dropped
            self.frames += 1
            self.recent.append((time.perf_counter(), event.seconds, event.latency))
            self._step()
            self._live_status(log)
        elif isinstance(event, SourceEnded):
            self.dropped[event.source] = event.dropped
            if event.error is not None:
                error_line(PROG, str(event.error))
            elif self.sources > 1 or event.dropped:
                dropped = f", {event.dropped} dropped to keep up" if event.dropped else ""
                log.info(f"{event.source}: ended after {event.frames} frames{dropped}")
        elif isinstance(event, Finished):
            self.close()
            s = event.summary
            if s.several:
                where = " on Ray" if s.ray else ""
                skipped = f", {s.skipped} skipped (output exists)" if s.skipped else ""
                failed = f", {s.failed} failed" if s.failed else ""
                dropped = f", {s.dropped} dropped (live sources faster than the network)" if s.dropped else ""
                sources = f", {s.sources_failed} source(s) failed" if s.sources_failed else ""
                log.info(f"{s.done} of {s.done + s.failed} images done{where} in {s.seconds:.1f} s "
                         f"({s.images_per_second:.1f} images/s){failed}{skipped}{dropped}{sources}")

    def status(self) -> str:
        """Frames per second over the last frames, mean time per stage, latency and frames dropped."""
        recent = list(self.recent)
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        parts = [f"{(len(recent) - 1) / span:.1f} fps" if span > 0 else "- fps"]
        latencies = [lat for _, _, lat in recent if lat is not None]
        if latencies:
            parts.append(f"latency {1000 * sum(latencies) / len(latencies):.0f} ms")
        dropped = sum(self.dropped.values())
        if dropped:
            parts.append(f"{dropped} dropped")
        stages = []
        for key, label in self.STAGES:
            times = [s[key] for _, s, _ in recent if key in s]
            if times:
                stages.append(f"{label} {1000 * sum(times) / len(times):.1f}")
        if stages:
            parts.append(" ".join(stages) + " ms")
        return ", ".join(parts)

    def _live_status(self, log) -> None:
        if self.quiet or not self.several:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(self.status(), refresh=False)  # drawn with the bar's next update
        elif self.live and time.perf_counter() - self.last_status >= self.interval:
            self.last_status = time.perf_counter()
            log.info(f"{self.frames} frames: {self.status()}")

    def _print(self, text: str) -> None:
        """Data on stdout, line by line as it comes (``| jq`` sees each record at once); on a terminal the bar
        is taken off its line first and drawn again below (tqdm's own lock keeps its redraws out)."""
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(text, flush=True)

    def _step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


main, console = entry_points(PROG, build_parser, run)

if __name__ == "__main__":
    console()
