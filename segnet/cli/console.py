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
from .common import Parser, add_options, add_verbosity, configure_output, entry_points, error_line, options_from

PROG = "segnet-console"

EPILOG = f"""\
networks (--network, case-insensitive; the default is {zoo.DEFAULT_NETWORK}, trained on CamVid street
scenes; segnet-download-models --list shows sizes, accuracy and what is installed):
{chr(10).join(f"  {n.name:<34} {', '.join(n.aliases)}" for n in zoo.NETWORKS)}

examples:
  {PROG} city.jpg out.jpg                          overlay with the default network
  {PROG} --network=fcn-resnet18-cityscapes city.jpg out.jpg
  {PROG} --alpha=200 --filter-mode=point in.jpg out.png
  {PROG} --visualize=mask in.jpg mask.png
  {PROG} --visualize=overlay,mask "images/*.jpg" outdir/
  {PROG} drive.mp4 drive_overlay.mp4                every frame of a video (pip install 'segnet[video]')
  {PROG} --model=net.onnx --labels=classes.txt --colors=colors.txt in.jpg out.jpg
  {PROG} --stats in.jpg                            class histogram only, nothing written
  {PROG} --network=fcn-resnet18-voc --legend legend.png    the classes' colours and names
  {PROG} /dev/video0 udp://10.0.0.2:5000            a camera, live, streamed as MPEG-TS
  {PROG} rtp://@:5000 --input-codec=h264 cam.mp4    what jetson's rtp:// output sends
  {PROG} cams.txt outdir/                          one source per line, batched together
  {PROG} --visualize=classes in.jpg ids.png        class indices, one byte per pixel
  {PROG} drive.mp4 --json | jq .classes[3]         statistics as JSON lines

exit status: 0 success, 1 some inputs or sources failed (the rest were processed), 2 usage error.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Semantic segmentation of images and videos with FCN-ResNet18 networks, "
               "as jetson-inference's segnet-console does it, on onnxruntime or TensorRT.",
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="an image file, a directory of images, a quoted glob ('imgs/*.jpg'), "
                   "a video, a camera (/dev/video0), a stream (rtsp://, rtp://@:PORT, udp://@:PORT, http://), an "
                   "image URL, or a .txt list of sources")
    p.add_argument("output", nargs="?", help="output image (format from its extension: jpg, png, tga, bmp, ...), "
                   "a directory for several inputs or a video's frames, a sequence (out_%%04i.png), a video file, a "
                   "stream (udp://HOST:PORT, rtp://HOST:PORT, rtsp://SERVER/PATH) or display://0; omit to write "
                   "nothing")
    add_options(p, "network", "backend", "format", "draw", "run", "io")
    p.add_argument("--legend", metavar="PATH", help="also write a picture of every class's colour and name (with "
                   "the alpha the overlay uses); with no input, only that")
    p.add_argument("--ray", nargs="?", const="", default=argparse.SUPPRESS, metavar="ADDRESS",
                   help="run a folder job on a Ray cluster (ADDRESS as ray.init takes it; without one, $RAY_ADDRESS "
                   "or a local instance); needs segnet[ray]. Write --ray=ADDRESS, or put --ray after the paths")
    add_verbosity(p)
    return p


def run(args: argparse.Namespace) -> int:
    configure_output(args.quiet, args.verbose)
    _fix_ray_address(args)
    options = options_from(args)
    if args.input is None and args.legend is None:
        raise UsageError("give an input: an image, a folder, a quoted glob or a video (see --help)")
    from ..run.planning import plan, plan_files

    # the legend is one more file the run writes: it may not be an input or an output (writes.Paths)
    legend = [(f"--legend {args.legend}", args.legend)] if args.legend is not None else []
    feed = None
    if args.input is None:
        plan_files(legend)
    else:
        feed = plan(args.input, args.output, options, legend)  # every input and output checked, once
        wants_stats = options.stats or options.stats_json or options.stats_file is not None
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
    existing path and leaves the output empty was meant as the input."""
    address = getattr(args, "ray", None)
    if address and args.output is None and (Path(address).exists() or glob.has_magic(address)):
        args.ray, args.input, args.output = "", args.ray, args.input


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
