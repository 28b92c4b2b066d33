"""PNG result grids: a text header on top, then rows of image tiles, each with a label and an optional frame.

The canvas size depends only on the layout and the number of tiles (never on the text), so callers and
tests know the size of every picture in advance. Text is drawn in DejaVu Sans, the TrueType font matplotlib
ships: it has accented and other non-ASCII Latin letters (Pillow's bundled font draws boxes for them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import matplotlib
from PIL import Image, ImageDraw, ImageFont, ImageOps

Color = tuple[int, int, int]
BACKGROUND: Color = (255, 255, 255)
TEXT_COLOR: Color = (0, 0, 0)
ELLIPSIS = "…"
# matplotlib (a project requirement) bundles this font in its data folder: no system font, no download
FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a grid. A cell is the image area, surrounded by its frame, with label lines below."""

    tile_size: tuple[int, int] = (192, 96)  # (H, W) box each image is fitted into: pedestrian crops are ~2:1
    columns: int = 10                       # tiles per row (the top-10 of a query on one row)
    margin: int = 8                         # space around and between cells
    frame: int = 4                          # frame thickness; drawn in the tile's colour, else background
    font_size: int = 13                     # pixel size of the text
    line_spacing: int = 4                   # pixels between two text lines
    header_lines: int = 3                   # text lines reserved on top; longer text is cut with an ellipsis
    label_lines: int = 1                    # text lines under each tile

    @property
    def line_height(self) -> int:
        return self.font_size + self.line_spacing

    @property
    def header_height(self) -> int:
        return self.margin + self.header_lines * self.line_height

    @property
    def cell_size(self) -> tuple[int, int]:
        """(width, height) of one cell: framed image plus its label lines."""
        height, width = self.tile_size
        return width + 2 * self.frame, height + 2 * self.frame + self.label_lines * self.line_height

    def canvas_size(self, num_tiles: int) -> tuple[int, int]:
        """(width, height) in pixels of a grid of ``num_tiles`` tiles (at least one row is laid out)."""
        columns = max(1, min(self.columns, num_tiles))
        rows = max(1, -(-num_tiles // self.columns))
        cell_w, cell_h = self.cell_size
        return (self.margin + columns * (cell_w + self.margin),
                self.header_height + self.margin + rows * (cell_h + self.margin))

    def cell_origin(self, index: int) -> tuple[int, int]:
        """(x, y) of the top-left corner of cell ``index`` (its frame's outer corner)."""
        cell_w, cell_h = self.cell_size
        row, col = divmod(index, self.columns)
        return (self.margin + col * (cell_w + self.margin),
                self.header_height + self.margin + row * (cell_h + self.margin))


@dataclass(frozen=True)
class Tile:
    """One image of the grid, the text under it and an optional frame colour."""

    image: Image.Image
    label: str
    frame_color: Color | None = None


def load_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` pixels."""
    return ImageFont.truetype(str(FONT_FILE), size=size)


def wrap_words(text: str, font, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels, newlines kept; every word is kept whole (one wider than the width
    gets a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}".strip()
            if current and font.getlength(candidate) > max_width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def wrap_text(text: str, font, max_width: int, max_lines: int) -> list[str]:
    """wrap_words; text beyond ``max_lines`` lines is cut with an ellipsis."""
    lines = wrap_words(text, font, max_width)
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and font.getlength(last + ELLIPSIS) > max_width:
        last = last[:-1]
    kept[-1] = last.rstrip() + ELLIPSIS
    return kept


def _paste_tile(canvas: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, origin: tuple[int, int],
                layout: GridLayout, font) -> None:
    """Frame (if any), the image fitted and centred in its tile, and the label lines below."""
    x, y = origin
    height, width = layout.tile_size
    if tile.frame_color is not None:
        outer = (x, y, x + width + 2 * layout.frame - 1, y + height + 2 * layout.frame - 1)
        draw.rectangle(outer, fill=tile.frame_color)
        draw.rectangle((x + layout.frame, y + layout.frame, x + layout.frame + width - 1,
                        y + layout.frame + height - 1), fill=BACKGROUND)
    fitted = ImageOps.contain(tile.image, (width, height))
    canvas.paste(fitted, (x + layout.frame + (width - fitted.width) // 2,
                          y + layout.frame + (height - fitted.height) // 2))
    label_y = y + height + 2 * layout.frame
    cell_w = layout.cell_size[0]
    for i, line in enumerate(wrap_text(tile.label, font, cell_w, layout.label_lines)):
        draw.text((x, label_y + i * layout.line_height), line, fill=TEXT_COLOR, font=font)


def draw_grid(header: str, tiles: Sequence[Tile], layout: GridLayout) -> Image.Image:
    """The grid picture: ``header`` (wrapped, newlines kept) on top, then ``tiles`` row by row."""
    canvas = Image.new("RGB", layout.canvas_size(len(tiles)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = load_font(layout.font_size)
    text_width = canvas.width - 2 * layout.margin
    for i, line in enumerate(wrap_text(header, font, text_width, layout.header_lines)):
        draw.text((layout.margin, layout.margin + i * layout.line_height), line, fill=TEXT_COLOR, font=font)
    for index, tile in enumerate(tiles):
        _paste_tile(canvas, draw, tile, layout.cell_origin(index), layout, font)
    return canvas


def fitted_layout(layout: GridLayout, header: str, labels: Sequence[str]) -> GridLayout:
    """``layout`` with as many header and label lines as the longest text needs: draw_grid then cuts nothing."""
    font = load_font(layout.font_size)
    header_width = layout.canvas_size(len(labels))[0] - 2 * layout.margin
    label_width = layout.cell_size[0]
    return replace(layout, header_lines=len(wrap_words(header, font, header_width)),
                   label_lines=max((len(wrap_words(label, font, label_width)) for label in labels), default=1))


def panel_origins(sizes: Sequence[tuple[int, int]], max_width: int, top: int,
                  margin: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(x, y) of each panel of ``sizes`` (width, height), laid in rows of as many equal columns as ``max_width``
    holds (at least one), each row as high as its highest panel, starting ``top`` pixels down; and the canvas
    (width, height) they need."""
    column_width = max(width for width, _ in sizes)
    columns = max(1, min(len(sizes), (max_width - margin) // (column_width + margin)))
    origins, y = [], top + margin
    for start in range(0, len(sizes), columns):
        row = sizes[start:start + columns]
        origins += [(margin + i * (column_width + margin), y) for i in range(len(row))]
        y += max(height for _, height in row) + margin
    return origins, (margin + columns * (column_width + margin), y)


def draw_panels(title: str, panels: Sequence[Image.Image], max_width: int, layout: GridLayout) -> Image.Image:
    """``panels`` (pictures of draw_grid) in rows of columns within ``max_width`` pixels, under ``title``
    (wrapped whole to the picture's width)."""
    sizes = [panel.size for panel in panels]
    font = load_font(layout.font_size)
    width = panel_origins(sizes, max_width, 0, layout.margin)[1][0]
    lines = wrap_words(title, font, width - 2 * layout.margin)
    origins, size = panel_origins(sizes, max_width, layout.margin + len(lines) * layout.line_height, layout.margin)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((layout.margin, layout.margin + i * layout.line_height), line, fill=TEXT_COLOR, font=font)
    for panel, origin in zip(panels, origins):
        canvas.paste(panel, origin)
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path
