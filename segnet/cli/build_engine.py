"""``segnet-build-engine``: build the TensorRT engines a later ``segnet-console`` run loads from the cache, ahead of
time and without running any image: the network's own graph, and (unless ``--fuse off``) the fused graphs a run on
a GPU asks for, pre-processing and class map alone and with the drawing of ``--visualize``. With TensorRT-RTX it
needs no GPU and no CUDA package (build servers, CI, Docker image builds). With ``--calibrate DIR`` it first
calibrates the network's INT8 copies on a folder of the user's images (``--precision int8``; that needs no TensorRT
unless an INT8 engine is asked for too)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import Parser, add_options, add_verbosity, configure_output, entry_points, options_from

PROG = "segnet-build-engine"

EPILOG = """\
examples:
  segnet-build-engine                                          the default network, FP16
  segnet-build-engine --fuse=off                               its network's engine only
  segnet-build-engine --network=fcn-resnet18-cityscapes-1024x512 --batch-size=8
  segnet-build-engine --model=net.onnx --precision=fp32 --engine-cache=engines/
  segnet-build-engine --tensorrt-flavour=tensorrt_rtx --target=sm89,sm120
  segnet-build-engine --model=net.onnx --calibrate=my-images/                INT8 copies only, no TensorRT needed
  segnet-build-engine --model=net.onnx --calibrate=my-images/ --precision=int8    and the INT8 engine

TensorRT-RTX builds without a GPU: without --target, the portable engine for every GPU it supports by default
(compute capability 8.0, 8.6, 8.9, 12.0, 12.1); --target sm75 for Turing. TensorRT 10/11 build for this
machine's GPU. Give segnet-console the same network, --precision, --batch-size and --engine-cache to use them.

Besides the network's own engine, it builds the engines of the fused graph (pre-processing and class map inside
the engine, and in the second the drawing of --visualize), which a run on a GPU uses (--fuse auto); --fuse off
builds the first only. The fused engines depend on the model-format options and --ignore-class too: give the run
the same ones. TensorRT 10 with FP16 builds no fused engine (its FP16 flag may run any layer in FP16).

--calibrate DIR measures the ranges of the network's tensors on the images of DIR (at least 8, like those it will
see; pre-processed as a run does) and writes its INT8 copies to the cache: QOperator for onnxruntime
(segnet-console --precision int8) and QDQ, the form TensorRT builds INT8 engines from; how they were calibrated is
recorded beside them. The default network needs none: its copy is calibrated on CamVid train images it ships.
"""

FOR = {"qoperator": "for onnxruntime", "qdq": "for TensorRT"}

#: The options that decide which engines a run needs; the network and model-format groups' come with them.
ENGINE_OPTIONS = ("precision", "engine_cache", "batch_size", "tensorrt_flavour", "fuse")
#: The drawing and model-format options the fused graphs depend on.
GRAPH_OPTIONS = ("visualize", "ignore_class")
FORMAT_OPTIONS = ("input_layout", "output_layout", "mean", "std", "bgr", "resize", "input_size", "scores")

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Build the TensorRT engines of a network ahead of time, into the cache where "
               "segnet-console looks for them.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, "network")
    add_options(p, "backend", only=ENGINE_OPTIONS)
    add_options(p, "draw", only=GRAPH_OPTIONS)
    add_options(p, "format", only=FORMAT_OPTIONS)
    p.add_argument("--target", metavar="SM,...", help="TensorRT-RTX only: the compute capabilities to build for, "
                   "e.g. sm89,sm120 (sm75, sm80, sm86, sm89, sm120, sm121); default: its portable engine")
    p.add_argument("--calibrate", metavar="DIR", type=Path, help="calibrate the INT8 copies (for --precision int8) "
                   "on the images of DIR (at least 8); builds no engine unless --precision int8 is given too")
    add_verbosity(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..backends.tensorrt import build_ahead, parse_targets

    configure_output(args.quiet, args.verbose)
    targets = parse_targets(args.target) if args.target is not None else None
    options = options_from(args)
    if args.calibrate is not None:
        from ..backends.int8 import calibrate

        for made in calibrate(options, args.calibrate):
            print(f"calibrated in {made.seconds:.1f} s on {made.record['calibration_count']} images: INT8 copy "
                  f"({made.record['format']}, {FOR[made.record['form']]}), {made.path.stat().st_size / 1e6:.1f} MB")
            print(made.path)
        if options.precision != "int8":
            return 0
    report(build_ahead(options, targets))
    from ..backends.tensorrt import NotFused
    from ..segmenter import fused_graphs

    for spec, draws in fused_graphs(options):
        try:
            report(build_ahead(options, targets, fused=spec, draws=draws))
        except NotFused as exc:
            log.info(f"no fused engine: {exc}")
            break
    return 0


def report(built) -> None:
    """Two lines per engine: what was built (or found) and its size, then its path."""
    what = "built" if built.built else "already in the cache"
    time = f" in {built.seconds:.1f} s" if built.built else ""
    print(f"{what}{time}: {built.description}, {built.size / 1e6:.1f} MB")
    print(built.path)


main, console = entry_points(PROG, build_parser, run)

if __name__ == "__main__":
    console()
