"""Reading and writing image files with Pillow: one-line errors for bad files, atomic writes."""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import SegnetError, UsageError
from .util import atomic_write

READ_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tga", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                   ".webp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB. EXIF orientation is not applied (jetson's loader ignores it too)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SegnetError(f"{path}: the file is empty")
    except FileNotFoundError:
        raise SegnetError(f"{path}: no such file") from None
    except OSError as exc:
        raise SegnetError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return decode_image(path, str(path))


def decode_image(source, name: str) -> np.ndarray:
    """An image file (a path or a binary file object) -> uint8 ``[H, W, 3]`` RGB, with one-line errors that
    start with ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; refuse there too rather than decode it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SegnetError(f"{name}: image is larger than {Image.MAX_IMAGE_PIXELS} pixels; refusing a possible "
                          "decompression bomb") from None
    except UnidentifiedImageError:
        raise SegnetError(f"{name}: not an image Pillow can read (is the extension right?)") from None
    except IsADirectoryError:
        raise SegnetError(f"{name}: is a directory") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow raises these for truncated/corrupt data
        raise SegnetError(f"{name}: truncated or corrupt image ({exc})") from None


def is_image_name(path: str | os.PathLike) -> bool:
    """Whether ``path``'s extension is one Pillow writes (it may still refuse to write that format)."""
    from PIL import Image

    return Path(path).suffix.lower() in Image.registered_extensions()


@functools.cache
def _writable(ext: str) -> str | None:
    """The Pillow format that really writes an RGB picture with extension ``ext``, or None: some formats are
    registered but cannot save (WMF, HDF5 stubs) or not RGB (XBM, BLP), which only a trial encode shows."""
    from PIL import Image

    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        return None
    try:
        Image.new("RGB", (2, 2)).save(io.BytesIO(), format=fmt)
    except Exception:  # each plugin refuses in its own way
        return None
    return fmt


def image_format(path: str | Path) -> str:
    """The Pillow format that writes ``path``'s extension; a UsageError names the usual ones."""
    ext = Path(path).suffix.lower()
    fmt = _writable(ext)
    if fmt is None:
        raise UsageError(f"cannot write '{ext or Path(path).name}' pictures: give the output a .jpg, .png, "
                         ".tga or .bmp extension")
    return fmt


def write_image(array: np.ndarray, path: str | Path) -> None:
    """Save uint8 ``[H, W, 3]`` to ``path`` in the format of its extension, atomically (``util.atomic_write``:
    the whole picture or nothing, even on a full disk)."""
    from PIL import Image

    path = Path(path)
    fmt = image_format(path)
    encoded = io.BytesIO()  # encoded in memory first: every byte then goes through the checked writer
    Image.fromarray(array).save(encoded, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write(path, encoded.getbuffer())
