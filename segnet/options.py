"""Every option of segnet in one frozen, typed object, validated once, here.

``Options`` is what the library, the CLI, Ray, the benchmark and evaluation pass around; its field names
are the CLI's flags (``batch_size`` is ``--batch-size``). Each field carries its own validator, help text
and flag spelling, so the command-line parsers are generated from it and nothing keeps a second list of
option names. Values may be given typed (``mean=(0.5, 0.5, 0.5)``) or as the CLI's text (``mean="0.5,0.5,0.5"``):
either way they are checked and normalised when the object is made, and an invalid or misspelt option is a
``UsageError`` naming the option and what it accepts.

The same validators check the values of a model's ``segnet.json`` (``model_format``), so a sidecar and a
flag are held to the same rules.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import OptionError, UsageError, option

#: The largest network input segnet allocates for one image, in pixels (``SEGNET_MAX_INPUT_PIXELS``
#: raises it): 4096 x 4096 is 200 MB of float32 input.
MAX_INPUT_PIXELS = 4096 * 4096

#: Every limit that keeps segnet's work bounded, by the environment variable that changes it: (default, what
#: it bounds). Read when used, so a library user can set them with ``os.environ`` too. The README's "Limits
#: and guarantees" section lists the same (a test checks it names each one).
LIMITS: dict[str, tuple[float | None, str]] = {
    "SEGNET_MAX_INPUT_PIXELS": (MAX_INPUT_PIXELS, "pixels of one network input (--input-size, a model's own size, "
                                "or an image's size for a model with a symbolic size)"),
    "SEGNET_MAX_IMAGE_PIXELS": (None, "pixels of one image or label (default: Pillow's decompression-bomb "
                                "limit, PIL.Image.MAX_IMAGE_PIXELS)"),
    "SEGNET_MAX_IMAGE_SIDE": (65_535, "width and height of one image or label, in pixels (what JPEG, TGA and "
                              "GIF hold)"),
    "SEGNET_MAX_ARCHIVE_BYTES": (1 << 29, "bytes of a model archive, downloaded and unpacked"),
    "SEGNET_MAX_ARCHIVE_MEMBERS": (10_000, "members (files, folders) of a model archive"),
    "SEGNET_DOWNLOAD_TRIES": (5, "tries per download URL (only errors that can change are tried again)"),
    "SEGNET_DOWNLOAD_DEADLINE": (1800, "seconds for installing one network from all its URLs; also the longest "
                                 "wait for another process installing it"),
    "SEGNET_DOWNLOAD_STALL": (60, "seconds a download URL may send nothing, over all its tries, before the "
                              "next URL is tried"),
    "SEGNET_LOCK_TIMEOUT": (3600, "seconds to wait for another process's download or TensorRT engine build"),
    "SEGNET_RAY_CONNECT_TIMEOUT": (30, "seconds to reach a Ray cluster given by address"),
    "SEGNET_MAX_URL_IMAGE_BYTES": (1 << 28, "bytes of an image fetched from a URL"),
    "SEGNET_MAX_PROCESSES": (None, "worker processes --processes may ask for (default: 4 per core, and no more "
                             "than the available memory holds at 256 MiB each)"),
    "SEGNET_URL_IMAGE_DEADLINE": (60, "seconds for fetching one image URL, every byte included"),
    "SEGNET_MAX_OPEN_SOURCES": (16, "videos, cameras and streams of a list read at once (the other files wait "
                                "their turn)"),
    "SEGNET_KEYFRAME_WAIT": (60, "seconds a live stream joined between keyframes may send what cannot be decoded "
                             "before its first keyframe"),
}


def check_limits() -> None:
    """Read every limit once: a bad ``SEGNET_*`` value is one usage error before any work, not an error per
    image when the limit is first used (commands call this after parsing their flags)."""
    for variable in LIMITS:
        limit(variable)


def limit(variable: str) -> float | None:
    """The limit ``variable`` names (a key of ``LIMITS``): the environment's positive number, else the default.
    A value that is not a positive number is a one-line UsageError, not silently ignored."""
    default, _ = LIMITS[variable]
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{variable}={text!r}: give a number above 0")
    return value

VISUALIZE_MODES = ("overlay", "mask", "classes")
CODEC_MODES = ("auto", "cpu", "gpu")
FILTER_MODES = ("point", "linear")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cuda", "cpu")
TENSORRT_FLAVOURS = ("auto", "tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp16", "fp32", "int8")
LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("nearest", "bilinear", "letterbox")
SCORES = ("logits", "sigmoid")
FUSE_MODES = ("auto", "on", "off")
INPUT_CODECS = ("mpegts", "h264", "h265", "vp8", "vp9", "mjpeg", "mpeg4")  # what an rtp:// input carries
MEAN = (0.485, 0.456, 0.406)  # ImageNet, on RGB scaled to 0..1 (SPEC 4.1)
STD = (0.229, 0.224, 0.225)

Coerce = Callable[[str, Any], Any]


def max_input_pixels() -> int:
    return int(limit("SEGNET_MAX_INPUT_PIXELS") or MAX_INPUT_PIXELS)


# -- validators: (option name, value) -> normalised value, or OptionError ------------------------------


def choice(*allowed: str, upper: bool = False) -> Coerce:
    def check(name, value):
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if not isinstance(value, str) or text not in allowed:
            raise OptionError(name, value, f"choose {', '.join(allowed[:-1])} or {allowed[-1]}")
        return text
    return check


def boolean(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise OptionError(name, value, "give true or false")


def integer(low: int, high: int | None = None) -> Coerce:
    def check(name, value):
        try:
            number = int(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int) or number < low or \
                (high is not None and number > high):
            span = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise OptionError(name, value, f"give a whole number {span}")
        return number
    return check


def number(low: float, high: float | None = None) -> Coerce:
    def check(name, value):
        try:
            x = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        except ValueError:
            x = None
        if x is None or not math.isfinite(x) or x < low or (high is not None and x > high):
            span = f"from {low:g} to {high:g}" if high is not None else f"of {low:g} or more"
            raise OptionError(name, value, f"give a number {span}")
        return x
    return check


#: The smallest size of a --std value: it divides values of about 1 in float32, where a denormal or tinier one
#: overflows (numpy then warns, and the network sees infinities).
MIN_STD = 1e-6


def triple(divisor: bool = False) -> Coerce:
    """Three finite numbers, R,G,B: ``"0.5,0.5,0.5"`` or a sequence; a ``divisor``'s are at least ``MIN_STD`` in
    size."""
    def check(name, value):
        parts = value.replace(" ", "").split(",") if isinstance(value, str) else value
        try:
            values = tuple(float(v) for v in parts if not isinstance(v, (bool, list, tuple, dict)))
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3 or (isinstance(parts, Sequence) and len(parts) != 3) or \
                not all(math.isfinite(v) for v in values):
            raise OptionError(name, value, "give three numbers R,G,B (e.g. 0.5,0.5,0.5)")
        if divisor and 0 in values:
            raise OptionError(name, value, "no value may be 0 (it divides)")
        if divisor and any(abs(v) < MIN_STD for v in values):
            raise OptionError(name, value, f"no value may be smaller than {MIN_STD:g} in size (it divides: the "
                                           "result would overflow)")
        return values
    return check


def size(name, value):
    """``"WxH"`` or ``(W, H)``: whole numbers of 1 or more, within the memory limit."""
    if isinstance(value, str):
        parts: Any = value.lower().replace(" ", "").split("x")
    else:
        parts = value
    try:
        w, h = (int(v) if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) else None
                for v in parts)
    except (TypeError, ValueError):
        w = h = None
    if not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
        raise OptionError(name, value, "give WxH, e.g. 512x256")
    check_input_pixels(w, h, name)
    return w, h


def check_input_pixels(width: int, height: int, what: str) -> None:
    """Refuse a network input too large to allocate, before anything is allocated."""
    limit = max_input_pixels()
    if width * height > limit:
        raise UsageError(f"{what}: a {width}x{height} network input is {width * height:,} pixels, more than "
                         f"segnet allocates ({limit:,}); raise the limit with SEGNET_MAX_INPUT_PIXELS")


def text(name, value):
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise OptionError(name, value, "give a non-empty name")
    return value.strip()


def path(name, value):
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise OptionError(name, value, "give a path")
    return Path(value).expanduser()


def visualize(name, value):
    """``overlay``, ``mask`` or both, joined by ``,`` or ``|`` (or a sequence); or ``classes`` alone (the class
    index of every pixel, a single-channel picture)."""
    words = value.replace("|", ",").split(",") if isinstance(value, str) else value
    try:
        modes = tuple(dict.fromkeys(str(w).strip().lower() for w in words if str(w).strip()))
    except TypeError:
        modes = ()
    if not modes or any(m not in VISUALIZE_MODES for m in modes) or ("classes" in modes and len(modes) > 1):
        raise OptionError(name, value, "use overlay, mask, overlay,mask or classes")
    return modes


def class_name(name, value):
    """A class name; ``none`` (any case) means no class."""
    text_value = text(name, value)
    return None if text_value.lower() == "none" else text_value


def codec(name, value):
    """A video codec name as ``--output-codec`` takes it (h264, vp9, ...; whether this FFmpeg has an encoder
    for it is checked when an output is planned, where PyAV is imported)."""
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise OptionError(name, value, "give a codec name such as h264, h265, vp9 or mjpeg")
    return text


def anything(name, value):
    return str(value)


def optional(check: Coerce) -> Coerce:
    def maybe(name, value):
        return None if value is None else check(name, value)
    return maybe


# -- the options -------------------------------------------------------------------------------------


def _option(default, check: Coerce, help: str, group: str, metavar: str | None = None,
            aliases: tuple[str, ...] = (), flag: bool = False, cli: bool = True):
    return field(default=default, metadata={"check": check, "help": help, "group": group, "metavar": metavar,
                                            "aliases": aliases, "flag": flag, "cli": cli})


def cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: ``processes`` a run may ask for: this many per core (workers wait on disks too) ...
WORKERS_PER_CORE = 4
#: ... and no more than the available memory holds at this much each (a worker's interpreter, its images in
#: flight and their shared-memory slots).
WORKER_BYTES = 256 << 20


def most_processes() -> int:
    """The most worker processes a run may start: ``SEGNET_MAX_PROCESSES`` when set, else
    ``WORKERS_PER_CORE`` per core, and no more than the available memory holds at ``WORKER_BYTES`` each."""
    given = limit("SEGNET_MAX_PROCESSES")
    if given is not None:
        return int(given)
    most = WORKERS_PER_CORE * cores()
    try:
        with open("/proc/meminfo") as info:  # Linux: memory that new processes can take
            available = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
        most = min(most, max(1, available // WORKER_BYTES))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return most


def check_processes(options: Options) -> None:
    """``processes`` above ``most_processes()`` is a UsageError, before any process starts."""
    if options.processes is not None and options.processes > most_processes():
        raise UsageError(f"{option('processes', options.processes)}: more worker processes than this machine can "
                         f"run ({most_processes()}: {WORKERS_PER_CORE} per core, {WORKER_BYTES >> 20} MiB of "
                         "available memory each; SEGNET_MAX_PROCESSES sets another bound)")


NETWORK, BACKEND, FORMAT, DRAW, RUN, IO = "network", "backend", "format", "draw", "run", "io"


@dataclass(frozen=True)
class Options:
    """Everything that says how to segment. ``None`` means "not given": the network's ``segnet.json``, else
    jetson's default, decides."""

    # which network
    network: str | None = _option(None, optional(text), "a pretrained network (see segnet-download-models "
                                  "--list); default: the embedded default network", NETWORK, "NAME")
    model: Path | None = _option(None, optional(path), "a custom ONNX model, or a folder holding "
                                 "fcn_resnet18.onnx, classes.txt, colors.txt; overrides --network", NETWORK, "PATH")
    labels: Path | None = _option(None, optional(path), "classes.txt for a custom model: one name per line",
                                  NETWORK, "PATH")
    colors: Path | None = _option(None, optional(path), "colors.txt for a custom model: 'r g b [a]' per line",
                                  NETWORK, "PATH")
    input_blob: str | None = _option(None, optional(text), "input tensor name (default: input_0, else the "
                                     "model's only input)", NETWORK, "NAME", ("--input_blob",))
    output_blob: str | None = _option(None, optional(text), "output tensor name (default: output_0, else the "
                                      "model's only output)", NETWORK, "NAME", ("--output_blob",))
    models_dir: Path | None = _option(None, optional(path), "where pretrained networks live (default: "
                                      "$SEGNET_MODELS, else the installed default)", NETWORK, "DIR")
    no_download: bool = _option(False, boolean, "fail instead of downloading a missing pretrained network",
                                NETWORK, flag=True)
    # how it runs
    backend: str = _option("auto", choice(*BACKENDS), "auto, onnxruntime or tensorrt (default: auto: "
                           "TensorRT when it can run here, else onnxruntime)", BACKEND, "NAME")
    precision: str | None = _option(None, optional(choice(*PRECISIONS)), "fp16, fp32 or int8 (default: fp16 on "
                                    "TensorRT, fp32 on onnxruntime; int8: a copy calibrated on images)", BACKEND, "P")
    engine_cache: Path | None = _option(None, optional(path), "where TensorRT engines and FP16 and INT8 copies "
                                        "of models are kept (default: $SEGNET_CACHE, else the user cache; never "
                                        "beside the model)", BACKEND, "DIR")
    device: str = _option("auto", choice(*DEVICES), "where onnxruntime runs the network: cuda, cpu, or auto "
                          "(default: CUDA when onnxruntime-gpu sees a GPU, except for runs of fewer than 4 images, "
                          "which finish sooner on the CPU than CUDA starts; cpu also keeps auto off TensorRT)",
                          BACKEND, "WHERE")
    tensorrt_flavour: str = _option("auto", choice(*TENSORRT_FLAVOURS), "which TensorRT: tensorrt (10.x, 11.x) or "
                                    "tensorrt_rtx (TensorRT for RTX); default auto: TensorRT when installed, else "
                                    "TensorRT-RTX", BACKEND, "NAME")
    batch_size: int = _option(1, integer(1, 1024), "images per inference call (default: 1)", BACKEND, "N")
    threads: int = _option(0, integer(0, 1024), "onnxruntime threads per inference (default 0: one per core)",
                           BACKEND, "N")
    fuse: str = _option("auto", choice(*FUSE_MODES), "pre-processing and the class map inside the network's "
                        "graph, run by the backend with the network (the uint8 image goes in, the class map "
                        "comes out): on, off, or auto (default: on for onnxruntime's CUDA provider and TensorRT)",
                        BACKEND, "MODE")
    # what the model wants (also from segnet.json beside the model)
    input_layout: str | None = _option(None, optional(choice(*LAYOUTS, upper=True)), "NCHW or NHWC (default: "
                                       "the axis of size 3)", FORMAT, "LAYOUT")
    output_layout: str | None = _option(None, optional(choice(*LAYOUTS, upper=True)), "NCHW or NHWC "
                                        "(default: detected)", FORMAT, "LAYOUT")
    mean: tuple[float, float, float] | None = _option(None, optional(triple()), "subtracted from RGB scaled to "
                                                      "0..1 (default: ImageNet's 0.485,0.456,0.406)", FORMAT,
                                                      "R,G,B")
    std: tuple[float, float, float] | None = _option(None, optional(triple(divisor=True)), "divides after the "
                                                     "mean (default: 0.229,0.224,0.225)", FORMAT, "R,G,B")
    bgr: bool | None = _option(None, optional(boolean), "feed blue first", FORMAT, flag=True)
    resize: str | None = _option(None, optional(choice(*RESIZE_MODES)), "nearest (jetson's stretch, default), "
                                 "bilinear, or letterbox (keeps the aspect ratio; the padding is cut from the "
                                 "output)", FORMAT, "MODE")
    input_size: tuple[int, int] | None = _option(None, optional(size), "network size for models whose input "
                                                 "size is symbolic (default: the image's, rounded to 32)",
                                                 FORMAT, "WxH")
    scores: str | None = _option(None, optional(choice(*SCORES)), "logits (or softmax: the argmax decides), or "
                                 "sigmoid: independent per-class probabilities, no background class", FORMAT,
                                 "KIND")
    threshold: float | None = _option(None, optional(number(0.0, 1.0)), "sigmoid models: a pixel below this in "
                                      "every class is background (default 0.5)", FORMAT, "P")
    # how results are drawn
    visualize: tuple[str, ...] = _option(("overlay",), visualize, "overlay, mask, or both joined by ',' or '|' "
                                         "(overlay with a half-size mask beside it), or classes (each pixel's class "
                                         "index, a single-channel PNG); default: overlay", DRAW, "MODES")
    alpha: float = _option(120.0, number(0.0, 255.0), "overlay opacity 0-255 for classes without an explicit "
                           "alpha in colors.txt (default: 120)", DRAW, "A")
    filter_mode: str = _option("linear", choice(*FILTER_MODES), "point or linear: how the coarse class grid is "
                               "upsampled for display (default: linear)", DRAW, "MODE", ("--filter_mode",))
    ignore_class: str | None = _option("void", optional(class_name), "class left out of the argmax (default: "
                                       "void, a no-op for networks without it; none: no class)", DRAW, "NAME",
                                       ("--ignore_class",))
    stats: bool = _option(False, boolean, "print the class histogram of the grid", DRAW, flag=True)
    # how many images run
    workers: int = _option(min(4, cores()), integer(1, 1024), "threads that decode, draw and encode while the "
                           "network runs (default: min(4, cores))", RUN, "N")
    image_codec: str = _option("auto", choice(*CODEC_MODES), "where image files are decoded and encoded: gpu (JPEG "
                         "through nvImageCodec, segnet[gpu], the picture drawn inside the network's graph, video "
                         "frames' too; any other image goes through the CPU codecs), cpu (everything on the CPU), "
                         "or auto (default: gpu when the network runs on CUDA with the fused graph and "
                         "nvImageCodec is installed; frames drawn in the graph on CUDA)", RUN, "WHERE")
    processes: int | None = _option(None, optional(integer(0, 1024)), "worker processes that decode, "
                                    "pre-process, draw and encode image files while this process runs the "
                                    "network (default: cores - 1 on machines with more than 4 cores, else 0; "
                                    "0: the --workers threads do it); on a GPU with the device executor, up to "
                                    "3 of them run it too, each with its own network", RUN, "N")
    skip_existing: bool = _option(False, boolean, "leave inputs whose output file exists (resume an "
                                  "interrupted folder run)", RUN, flag=True)
    ray: str | None = _option(None, optional(anything), "run a folder job on a Ray cluster (ADDRESS as ray.init "
                              "takes it; empty: $RAY_ADDRESS or a local instance)", RUN, cli=False)
    ray_actors: int | None = _option(None, optional(integer(1, 100000)), "Ray actors (default: one per CPU, "
                                     "or per GPU with --ray-gpus)", RUN, "N")
    ray_gpus: float = _option(0.0, number(0.0, 64.0), "GPUs per Ray actor (default 0: CPU actors)", RUN, "G")
    # inputs and outputs: folders, videos, cameras and streams; statistics as data
    recursive: bool = _option(False, boolean, "go into the sub-folders of a folder input, their pictures written "
                              "in the same sub-folders of the output folder (a glob recurses with **)", IO,
                              flag=True, aliases=("-r",))
    input_loop: int = _option(0, integer(-1, 1_000_000), "play video file inputs N times in all, as jetson's "
                              "--input-loop counts (-1: forever; 0 or 1: once)", IO, "N", ("--loop",))
    input_codec: str | None = _option(None, optional(choice(*INPUT_CODECS)), "what an rtp:// input carries: "
                                      "mpegts (default: MPEG-TS, as segnet's rtp:// output sends), or h264, h265, "
                                      "vp8, vp9, mjpeg, mpeg4 as RTP payloads (jetson's rtp:// output sends h264)",
                                      IO, "CODEC")
    input_timeout: float = _option(10.0, number(0.1, 86400.0), "live inputs (cameras, network streams): seconds "
                                   "without a frame after which the source counts as ended (default: 10)", IO,
                                   "SECONDS")
    stats_json: bool = _option(False, boolean, "print the statistics as one JSON object per image or frame on "
                               "stdout, one per line (source, grid size, per-class counts and fractions; frame and "
                               "time for videos); implies --stats", IO, flag=True, aliases=("--json",))
    stats_file: Path | None = _option(None, optional(path), "also append those JSON lines to this file, one "
                                      "whole line per image or frame as it is done", IO, "PATH")
    output_codec: str | None = _option(None, optional(codec), "video and stream outputs: h264 (default; vp9 for "
                                       ".webm), h265, vp8, vp9, av1, mpeg4, mpeg2 or mjpeg, as this PyAV's FFmpeg "
                                       "offers them", IO, "CODEC")
    bitrate: int | None = _option(None, optional(integer(10_000, 1_000_000_000)), "video and stream outputs: bits "
                                  "per second (default: 4000000 for streams, as jetson; video files keep a "
                                  "constant quality instead)", IO, "BPS")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, f.metadata["check"](f.name, value))

    @classmethod
    def create(cls, base: Options | None = None, **given: Any) -> Options:
        """``base`` (default: all defaults) with the ``given`` options; a misspelt name is a UsageError that
        says which names exist."""
        check_names(given)
        return replace(base, **given) if base is not None else cls(**given)

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


OPTION_NAMES = tuple(f.name for f in fields(Options))


def check_names(given: Mapping[str, Any]) -> None:
    for name in given:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"unknown option '{name}': {hint}the options are {', '.join(OPTION_NAMES)}")


def option_fields(group: str | None = None):
    """The fields of ``Options`` in declaration order (of one group), for generating parsers."""
    return [f for f in fields(Options) if group is None or f.metadata["group"] == group]
