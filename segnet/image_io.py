"""Reading and writing image files with Pillow: one-line errors for bad files, atomic writes."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import SegnetError, UsageError
from .options import limit
from .util import atomic_write, describe_os_error

READ_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tga", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                   ".webp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB, upright as its EXIF orientation says (see ``decode_image``)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SegnetError(f"{path}: the file is empty")
    except FileNotFoundError:
        raise SegnetError(f"{path}: no such file") from None
    except OSError as exc:
        raise SegnetError(f"{path}: cannot read it ({describe_os_error(exc)})") from None
    return decode_image(path, str(path))


def max_image_pixels() -> int | None:
    """The most pixels an image or label may have: ``SEGNET_MAX_IMAGE_PIXELS``, else Pillow's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; None: no limit)."""
    from PIL import Image

    value = limit("SEGNET_MAX_IMAGE_PIXELS")
    return int(value) if value is not None else Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def open_image(source, name: str, what: str = "image") -> Iterator:
    """A Pillow image of ``source`` (a path or a binary file object), its size checked against
    ``max_image_pixels`` before any pixel is decoded, with one-line errors that start with ``name``: a file
    that cannot be read (no permission, a directory, an I/O error) is said to be so, and only what Pillow
    finds wrong in the data is called truncated or corrupt."""
    from PIL import Image, UnidentifiedImageError

    most = max_image_pixels()
    side = int(limit("SEGNET_MAX_IMAGE_SIDE") or 0)
    if Image.MAX_IMAGE_PIXELS is not None and (most is None or most > Image.MAX_IMAGE_PIXELS):
        Image.MAX_IMAGE_PIXELS = most  # the user raised the limit: Pillow's own check must not refuse first
    bomb = SegnetError(f"{name}: {what} is larger than {most or 0:,} pixels; refusing a possible decompression "
                       "bomb (raise the limit with SEGNET_MAX_IMAGE_PIXELS)")
    try:
        with warnings.catch_warnings():  # segnet checks the size itself, below, at its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(_without_bulk_metadata(source))
        with image:
            width, height = image.size
            if most is not None and width * height > most:
                raise bomb
            if max(width, height) > side:  # a strip within the pixel limit still costs per row or column
                longer = "wider" if width > side else "taller"
                raise SegnetError(f"{name}: {what} is {width:,}x{height:,} pixels, {longer} than segnet reads "
                                  f"({side:,} a side; raise the limit with SEGNET_MAX_IMAGE_SIDE)")
            image.load()
            yield image
    except UnidentifiedImageError:
        raise SegnetError(f"{name}: not {'an image' if what == 'image' else 'a ' + what} Pillow can read (is the "
                          "extension right?)") from None
    except IsADirectoryError:
        raise SegnetError(f"{name}: is a directory, not {'an image' if what == 'image' else 'a ' + what}") from None
    except OSError as exc:
        if exc.errno is not None:  # the system could not read the file: its data may well be fine
            raise SegnetError(f"{name}: cannot read it ({describe_os_error(exc)})") from None
        raise SegnetError(f"{name}: truncated or corrupt {what} ({exc})") from None
    except Image.DecompressionBombError:
        raise bomb from None
    except (SyntaxError, ValueError, EOFError) as exc:  # Pillow's decoders
        raise SegnetError(f"{name}: truncated or corrupt {what} ({exc})") from None


#: Bytes of APPn and comment segments of a JPEG that reach Pillow; the rest is skipped unread.
JPEG_METADATA_BYTES = 16 << 20


def _without_bulk_metadata(source):
    """``source``, or when it is a JPEG with more than one Exif segment or more than ``JPEG_METADATA_BYTES`` of
    metadata, a copy in memory without the excess. Pillow appends each further Exif segment to the bytes of
    the ones before (quadratic: 130 MB of them took 56 s to open) and keeps every segment; the first Exif
    segment, the one with the orientation (Exif fits one segment), is kept. Anything unusual: ``source``, for
    Pillow to judge."""
    try:
        if hasattr(source, "read"):
            return _trim_jpeg(source) or source
        with open(source, "rb") as f:
            return _trim_jpeg(f) or source
    except (OSError, ValueError):  # unreadable or not seekable: Pillow says what is wrong
        return source


def _trim_jpeg(f) -> io.BytesIO | None:
    start = f.tell()
    if f.read(2) != b"\xff\xd8":
        f.seek(start)
        return None
    kept, dropped, metadata, exif_seen = [b"\xff\xd8"], False, 0, False
    while True:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF or head[1] in (0xDA, 0xD9, 0xFF, 0x01) or 0xD0 <= head[1] <= 0xD8:
            f.seek(-len(head), 1)  # the image data (SOS), or something only Pillow should judge
            break
        length = int.from_bytes(head[2:4], "big")
        if length < 2:
            f.seek(-4, 1)
            break
        if 0xE0 <= head[1] <= 0xEF or head[1] == 0xFE:  # APPn, COM
            peek = f.read(min(6, length - 2)) if head[1] == 0xE1 else b""
            f.seek(-len(peek), 1)
            is_exif = peek == b"Exif\0\0"
            if (is_exif and exif_seen) or metadata + length > JPEG_METADATA_BYTES:
                f.seek(length - 2, 1)
                dropped = True
                continue
            exif_seen, metadata = exif_seen or is_exif, metadata + length
        kept.append(head + f.read(length - 2))
    if not dropped:
        f.seek(start)
        return None
    return io.BytesIO(b"".join(kept) + f.read())


def decode_image(source, name: str) -> np.ndarray:
    """An image file (a path or a binary file object) -> uint8 ``[H, W, 3]`` RGB, with one-line errors that
    start with ``name``.

    Deeper pixels are scaled to 8 bits, never clipped: 16-bit images by their top 8 bits (as jetson's
    stb_image loader does), 32-bit integers likewise by their full range, floating point as 0..1. The EXIF
    orientation is applied, so the picture is upright as every viewer shows it (jetson ignores it; for the
    images without that tag, which is all of jetson's, the result is the same)."""
    from PIL import ImageOps

    with open_image(source, name) as image:
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # a damaged EXIF block: keep the pixels as stored
            upright = image
        return _to_rgb8(upright, image)


def _to_rgb8(image, original) -> np.ndarray:
    """Any Pillow mode -> contiguous uint8 RGB; ``original`` tells a TIFF's bit depth and sample format."""
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode == "F":
        floats = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
        grey = (np.clip(floats, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif image.mode.startswith("I;16"):
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
    elif image.mode == "I":
        ints = np.asarray(image, np.int32)
        tags = getattr(original, "tag_v2", {})
        if tags.get(258) in (32, (32,)):  # a 32-bit TIFF: signed when its SampleFormat says 2
            signed = tags.get(339) in (2, (2,))
            grey = (np.maximum(ints, 0) >> 23 if signed else ints.view(np.uint32) >> 24).astype(np.uint8)
        else:  # Pillow's "I" from 16-bit files (PGM, older PNG readers) holds 0..65535
            grey = (np.clip(ints, 0, 65535) >> 8).astype(np.uint8)
    else:
        return np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


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


#: The widest and tallest picture a format's encoder takes (libjpeg's JPEG_MAX_DIMENSION, libwebp's
#: WEBP_MAX_DIMENSION, 16-bit size fields); formats not named take what fits in memory.
MAX_SIDE = {"JPEG": 65500, "MPO": 65500, "WEBP": 16383, "TGA": 65535, "GIF": 65535, "PCX": 65535, "SGI": 65535,
            "MSP": 65535, "QOI": 2**31 - 1}


def check_picture_size(path: str | Path, width: int, height: int) -> str:
    """The format that writes ``path`` (see ``image_format``), once a ``width`` x ``height`` picture is known to
    fit it; one that does not is a one-line SegnetError for that picture, before anything is encoded."""
    fmt = image_format(path)
    most = MAX_SIDE.get(fmt)
    if most is not None and max(width, height) > most:
        raise SegnetError(f"cannot write {path}: a {width}x{height} picture is too large for {fmt} (at most "
                          f"{most} pixels a side); write it as .png")
    return fmt


def write_image(array: np.ndarray, path: str | Path) -> None:
    """Save uint8 ``[H, W, 3]`` to ``path`` in the format of its extension, atomically (``util.atomic_write``:
    the whole picture or nothing, even on a full disk). A picture its format cannot hold is a one-line error."""
    from PIL import Image

    path = Path(path)
    fmt = check_picture_size(path, array.shape[1], array.shape[0])
    encoded = io.BytesIO()  # encoded in memory first: every byte then goes through the checked writer
    try:
        Image.fromarray(array).save(encoded, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    except (OSError, ValueError, OverflowError) as exc:  # an encoder's own limit (in memory: no disk involved)
        raise SegnetError(f"cannot write {path}: the {fmt} encoder refused a {array.shape[1]}x{array.shape[0]} "
                          f"picture ({exc}); write it as .png") from None
    atomic_write(path, encoded.getbuffer())
