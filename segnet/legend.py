"""The colour legend (``--legend``): every class's colour and name in one picture, as jetson's segNet offers,
with the alpha rules shown: each row has the mask colour, the colour over a checkerboard at the alpha the
overlay uses, the name, and where that alpha comes from (the network's own colours, or the ``alpha``
option)."""

from __future__ import annotations

import numpy as np

ROW, PAD, SWATCH = 28, 8, 44


def draw_legend(names: list[str], colors: np.ndarray, explicit: list[bool], title: str = "") -> np.ndarray:
    """uint8 ``[H, W, 3]``: one row per class. ``colors`` are the RGBA colours after the alpha rules
    (``labels.class_colors``); ``explicit[c]`` says whether class ``c``'s alpha came from its colour file."""
    from PIL import Image, ImageDraw, ImageFont

    font = _font(ImageFont, 15)
    from .errors import option

    rows = [(f"{c:>3}  {name}", f"alpha {int(colors[c, 3])}, " + ("the network's own" if explicit[c]
                                                                   else f"from {option('alpha')}"))
            for c, name in enumerate(names)]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(measure.textlength(a, font=font) for a, _ in rows)
    note_width = max(measure.textlength(b, font=font) for _, b in rows)
    width = int(max(PAD * 5 + 2 * SWATCH + text_width + note_width, PAD * 2 + measure.textlength(title, font=font)))
    top = ROW if title else 0
    height = top + ROW * len(names) + PAD
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((PAD, PAD // 2), title, fill=(0, 0, 0), font=font)
    checker = _checkerboard(SWATCH, ROW - 6)
    for c, (label, note) in enumerate(rows):
        y = top + c * ROW + 3
        r, g, b, a = (float(v) for v in colors[c])
        draw.rectangle([PAD, y, PAD + SWATCH - 1, y + ROW - 7], fill=(int(r), int(g), int(b)))
        blend = checker * (1 - a / 255) + np.array([r, g, b], np.float32) * (a / 255)  # the overlay's arithmetic
        picture.paste(Image.fromarray(blend.astype(np.uint8)), (PAD * 2 + SWATCH, y))
        x = PAD * 3 + 2 * SWATCH
        draw.text((x, y + 2), label, fill=(0, 0, 0), font=font)
        draw.text((x + text_width + PAD, y + 2), note, fill=(90, 90, 90), font=font)
    return np.asarray(picture)


def _checkerboard(width: int, height: int, cell: int = 6) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    board = np.where(light[..., None], 230.0, 150.0).astype(np.float32)
    return np.repeat(board, 3, axis=2)


def _font(ImageFont, size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType (10.1 and newer)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
