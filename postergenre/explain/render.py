"""Drawing: heatmaps over posters, captioned panels and tile grids, with PIL alone.

matplotlib is not used here: importing it costs about half a second, which ``postergenre explain``
cannot afford inside its 3 s budget, and nothing drawn here needs axes.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Key points of Google's Turbo colormap (Mikhailov 2019), low to high: a rainbow map whose
# lightness rises and falls smoothly, so no false edges appear in the heatmap.
_TURBO = np.array(
    [
        (0.00, (48, 18, 59)),
        (0.13, (70, 107, 227)),
        (0.25, (41, 170, 240)),
        (0.38, (25, 227, 186)),
        (0.50, (114, 254, 94)),
        (0.63, (196, 241, 52)),
        (0.75, (252, 185, 56)),
        (0.88, (236, 94, 20)),
        (1.00, (122, 4, 3)),
    ],
    dtype=object,
)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
PANEL_HEIGHT = 420
GAP = 8
# Magenta is no colour of the Turbo map, so text boxes stand out over any heat; the dark halo keeps
# them visible over a magenta or pale poster.
BOX_COLOUR = (255, 0, 200)
BOX_HALO = (30, 0, 25)
NO_TEXT = "no text read on the poster (OCR found none at the model's confidence floor)"


@lru_cache(maxsize=1)
def _lookup_table() -> np.ndarray:
    stops = np.array([s for s, _ in _TURBO], dtype=np.float64)
    colours = np.array([c for _, c in _TURBO], dtype=np.float64)
    levels = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(levels, stops, colours[:, k]) for k in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) to uint8 RGB through the colormap, shape (..., 3)."""
    levels = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.intp)
    return _lookup_table()[levels]


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: tuple[float, float] = (0.15, 0.6)) -> Image.Image:
    """The heatmap (H, W, in [0, 1], the poster's size) over the poster.

    Opacity rises with the heat from ``alpha[0]`` to ``alpha[1]``, so the poster stays readable
    where the model did not look.
    """
    if heatmap.shape != (image.height, image.width):
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the poster's (H, W) {image.height, image.width}")
    poster = np.asarray(image.convert("RGB"), dtype=np.float32)
    opacity = (alpha[0] + (alpha[1] - alpha[0]) * heatmap)[..., None]
    blended = poster * (1 - opacity) + colorize(heatmap).astype(np.float32) * opacity
    return Image.fromarray(np.round(blended).astype(np.uint8))


@lru_cache(maxsize=8)
def font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_block(lines: list[tuple[str, tuple[int, int, int]]], width: int, *, size: int = 14) -> Image.Image:
    """Lines of text (each with its colour) on a white strip ``width`` wide, wrapped to fit."""
    wrapped = [(part, colour) for text, colour in lines for part in _wrap(text, width - 8, size)]
    line_height = size + 5
    block = Image.new("RGB", (width, line_height * len(wrapped) + 6), BACKGROUND)
    draw = ImageDraw.Draw(block)
    for k, (text, colour) in enumerate(wrapped):
        draw.text((4, 3 + k * line_height), text, fill=colour, font=font(size))
    return block


def _wrap(text: str, width: int, size: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if line and font(size).getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines or [""]


def stack(images: list[Image.Image], *, vertical: bool = True, gap: int = 0) -> Image.Image:
    """Images one below (or beside) the other on white, aligned to the start."""
    if vertical:
        size = (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1))
    else:
        size = (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images))
    canvas = Image.new("RGB", size, BACKGROUND)
    offset = 0
    for image in images:
        canvas.paste(image, (0, offset) if vertical else (offset, 0))
        offset += (image.height if vertical else image.width) + gap
    return canvas


def colour_bar(width: int, height: int = 10) -> Image.Image:
    """The colormap from low (left) to high (right), labelled at both ends."""
    bar = Image.fromarray(np.repeat(colorize(np.linspace(0, 1, width))[None], height, axis=0))
    labels = Image.new("RGB", (width, 18), BACKGROUND)
    draw = ImageDraw.Draw(labels)
    draw.text((0, 2), "low evidence", fill=MUTED, font=font(12))
    draw.text((width, 2), "high", fill=MUTED, font=font(12), anchor="ra")
    return stack([bar, labels])


def fit_height(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


# ---- poster text --------------------------------------------------------------------------------


def draw_text_boxes(picture: Image.Image, lines, poster_size: tuple[int, int] | None = None) -> Image.Image:
    """A copy of ``picture`` with each OCR line's box outlined and numbered (1, 2, ... in the order given).

    ``lines`` are :class:`~postergenre.text.ocr.TextLine`, their boxes in the poster's pixels;
    ``poster_size`` (W, H) is the poster's size when ``picture`` is the poster resized (default:
    the picture's own). Boxes are drawn on the resized picture, not before resizing, so that a
    large poster shown small keeps outlines two pixels wide.
    """
    out = picture.convert("RGB")  # a copy, even of an RGB picture
    width, height = poster_size or picture.size
    scale_x, scale_y = picture.width / width, picture.height / height
    draw = ImageDraw.Draw(out)
    for number, line in enumerate(lines, start=1):
        corners = [(x * scale_x, y * scale_y) for x, y in line.box]
        draw.polygon(corners, outline=BOX_HALO, width=4)
        draw.polygon(corners, outline=BOX_COLOUR, width=2)
        _box_number(draw, number, corners)
    return out


def _box_number(draw: ImageDraw.ImageDraw, number: int, corners: list[tuple[float, float]]) -> None:
    """The line's number on a magenta tag at the box's top-left corner, above it where there is room."""
    label = str(number)
    left, top = min(x for x, _ in corners), min(y for _, y in corners)
    tag_w, tag_h = font(11).getlength(label) + 4, 13
    y = top - tag_h if top >= tag_h else top
    draw.rectangle((left, y, left + tag_w, y + tag_h), fill=BOX_COLOUR)
    draw.text((left + 2, y + 1), label, fill=(255, 255, 255), font=font(11))


def text_caption(lines) -> str:
    """The numbered lines a text model reads on the poster, for a caption; says so when there are none."""
    if not lines:
        return NO_TEXT
    return "text read (OCR): " + "  ".join(
        f'{k} "{line.text}" ({line.confidence:.2f})' for k, line in enumerate(lines, 1)
    )


# ---- Grad-CAM figures ------------------------------------------------------------------------


def cam_panel(image: Image.Image, cam, *, height: int = PANEL_HEIGHT, text_lines=None) -> Image.Image:
    """One genre's heatmap over the poster, its probability and threshold written below.

    ``text_lines`` (OCR lines of the poster, for a model that reads its text) are outlined on it.
    """
    picture = fit_height(overlay(image, cam.heatmap), height)
    if text_lines is not None:
        picture = draw_text_boxes(picture, text_lines, image.size)
    decision = "predicted" if cam.predicted else "not predicted"
    lines = [
        (cam.genre, TEXT),
        (f"probability {cam.probability:.2f}, threshold {cam.threshold:.2f}: {decision}", TEXT),
    ]
    return stack([picture, text_block(lines, max(picture.width, 220), size=15)])


def explanation_figure(
    image: Image.Image, explanation, *, title: str = "", height: int = PANEL_HEIGHT, text_lines=None
) -> Image.Image:
    """One panel per explained genre side by side, under a caption naming the model and the layer.

    With ``text_lines`` (the OCR lines a text model reads; [] for none) every panel outlines them
    and the caption lists them, numbered as on the panels.
    """
    panels = [cam_panel(image, cam, height=height, text_lines=text_lines) for cam in explanation.cams]
    panels = stack(panels, vertical=False, gap=GAP)
    lines = [(title, TEXT)] if title else []
    lines += [(explanation.caption, MUTED)] + [(note, MUTED) for note in explanation.notes]
    if text_lines is not None:
        lines.append((text_caption(text_lines), TEXT))
    caption = text_block(lines, panels.width, size=15)
    figure = stack([caption, panels, colour_bar(min(panels.width, 260))], gap=4)
    return _margin(figure, GAP)


def _margin(image: Image.Image, margin: int) -> Image.Image:
    canvas = Image.new("RGB", (image.width + 2 * margin, image.height + 2 * margin), BACKGROUND)
    canvas.paste(image, (margin, margin))
    return canvas


# ---- tiles and grids -------------------------------------------------------------------------


def filter_tile(weights: np.ndarray, size: int) -> Image.Image:
    """One convolution filter (C_in, k, k), min-max scaled on its own: RGB over 3 channels, else grey."""
    values = weights if weights.shape[0] == 3 else weights.mean(axis=0, keepdims=True)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    pixels = np.round(np.moveaxis(scaled, 0, -1) * 255).astype(np.uint8)
    tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    # Nearest neighbour: a 3x3 filter is nine numbers, and smoothing would invent the rest.
    return tile.resize((size, size), Image.Resampling.NEAREST)


def map_tile(values: np.ndarray, size: int) -> Image.Image:
    """One feature map (h, w), min-max scaled on its own, coloured, ``size`` high."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    tile = Image.fromarray(colorize(scaled))
    return tile.resize((max(1, round(size * values.shape[1] / values.shape[0])), size), Image.Resampling.NEAREST)


def grid(tiles: list[Image.Image], *, columns: int | None = None, labels: list[str] | None = None) -> Image.Image:
    """Tiles in rows of ``columns`` (default: about square), each cell the largest tile's size."""
    columns = columns or max(1, int(np.ceil(np.sqrt(len(tiles)))))
    if labels is not None:
        tiles = [
            stack([t, text_block([(label, MUTED)], t.width, size=11)]) for t, label in zip(tiles, labels, strict=True)
        ]
    cells = tiles
    cell_w, cell_h = max(c.width for c in cells), max(c.height for c in cells)
    rows = int(np.ceil(len(cells) / columns))
    canvas = Image.new("RGB", (columns * (cell_w + GAP) + GAP, rows * (cell_h + GAP) + GAP), BACKGROUND)
    for k, cell in enumerate(cells):
        canvas.paste(cell, (GAP + (k % columns) * (cell_w + GAP), GAP + (k // columns) * (cell_h + GAP)))
    return canvas


def _labelled(tile: Image.Image, label: str) -> Image.Image:
    return stack([tile, text_block([(label, MUTED)], tile.width, size=11)])


def save(image: Image.Image, path) -> None:
    """Write a picture; PNGs with light compression: 3x faster to write than the default, about 15% larger."""
    options = {"compress_level": 1} if str(path).lower().endswith(".png") else {"quality": 90}
    image.save(path, **options)


def to_data_uri(image: Image.Image, fmt: str = "JPEG", *, quality: int = 85) -> str:
    """An image as a data URI (JPEG or PNG), for self-contained HTML."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
