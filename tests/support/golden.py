"""The pictures segnet-console writes, fingerprinted, so a refactoring can prove it changed none of them.

Each case runs the installed ``segnet-console`` entry point in-process on the bundled images (real default
network, real onnxruntime) and records the SHA-256 of every written picture's decoded pixels (decoded, so
that a different zlib cannot matter; JPEG pixels follow from the bytes). ``tests/data/golden.json`` holds
the fingerprints made before the package was reorganised; ``python -m tests.support.golden --record``
rewrites it (only ever do that for a deliberate change of output).
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "images"
CLIP = ROOT / "tests" / "data" / "camvid-clip.mp4"
GOLDEN = ROOT / "tests" / "data" / "golden.json"
PAN = ROOT / "data" / "models" / "pan-skin-clothes-hair" / "skin_clothes_hair_PAN_mnv3s_simplifier.onnx"

#: A few of the bundled images, of different sizes and aspects (odd ones too): the folder the cases other than
#: the first run on, to keep the test quick. The fingerprints were recorded on every bundled image.
SOME = ("camvid_0.jpg", "city_0.jpg", "humans_3.jpg", "object_0.jpg", "trail_0.jpg")

#: name -> (arguments before the paths, input, output name); the input SOME is a folder of those images
CASES = {
    "overlay-linear": ([], IMAGES, "out/"),
    "overlay-point": (["--filter-mode", "point"], SOME, "out/"),
    "mask-linear": (["--visualize", "mask"], SOME, "out/"),
    "mask-point": (["--visualize", "mask", "--filter-mode", "point"], SOME, "out/"),
    "composite-linear-alpha200": (["--visualize", "overlay,mask", "--alpha", "200"], SOME, "out/"),
    "overlay-linear-batch4": (["--batch-size", "4"], SOME, "out/"),
    "overlay-png": ([], IMAGES / "city_0.jpg", "city_0.png"),
    "pan-composite": (["--model", str(PAN), "--visualize", "overlay,mask"], IMAGES / "humans_3.jpg", "pan.png"),
    "video-frames": ([], CLIP, "frames/"),
}


def console(argv: list[str]) -> int:
    """``segnet-console`` as installed, called in this process."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "segnet-console"]
    main = script.load()
    saved = sys.argv
    sys.argv = ["segnet-console", *argv]
    try:
        main()
    except SystemExit as exit:
        return int(exit.code or 0)
    finally:
        sys.argv = saved
    return 0


def pixels_sha256(path: Path) -> str:
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


def fingerprint(case: str, scratch: Path, every_image: bool = False) -> dict[str, str]:
    """Run ``case`` in ``scratch`` (``every_image``: on all bundled images even where it names SOME); every
    written file (relative name) -> its pixels' SHA-256."""
    args, source, output = CASES[case]
    out = scratch / case / output
    out.parent.mkdir(parents=True, exist_ok=True)
    if source == SOME:
        source = scratch / f"{case}-in"
        source.mkdir()
        for path in sorted(IMAGES.glob("*.jpg")) if every_image else [IMAGES / name for name in SOME]:
            (source / path.name).symlink_to(path)
    code = console([*args, "-q", str(source), str(out)])
    if code != 0:
        raise AssertionError(f"{case}: segnet-console exited {code}")
    base = scratch / case
    return {str(p.relative_to(base)): pixels_sha256(p) for p in sorted(base.rglob("*")) if p.is_file()}


def record(scratch: Path) -> None:
    """Every case on every bundled image (the test compares the images it runs on)."""
    GOLDEN.write_text(json.dumps({case: fingerprint(case, scratch, every_image=True) for case in CASES},
                                 indent=1) + "\n")


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m tests.support.golden --record")
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
    print(f"wrote {GOLDEN}")
