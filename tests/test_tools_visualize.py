"""utils/visualize.py: grid geometry known in advance, frames where and in the colour asked, text cut to fit,
accented letters drawn."""
from __future__ import annotations

from PIL import Image

from utils.visualize import (
    ELLIPSIS,
    GridLayout,
    Tile,
    draw_grid,
    draw_panels,
    fitted_layout,
    load_font,
    panel_origins,
    save_png,
    wrap_text,
    wrap_words,
)

GREEN, RED, BLUE = (0, 170, 0), (210, 0, 0), (20, 40, 220)


def test_canvas_size_and_cell_positions_by_hand():
    layout = GridLayout(tile_size=(40, 20), columns=3, margin=5, frame=2, font_size=10, line_spacing=2,
                        header_lines=2, label_lines=1)
    # cell: 20 + 2*2 = 24 wide; 40 + 2*2 + 1 line of 12 = 56 high; header: 5 + 2*12 = 29
    assert layout.canvas_size(7) == (5 + 3 * (24 + 5), 29 + 5 + 3 * (56 + 5))
    assert layout.canvas_size(2) == (5 + 2 * (24 + 5), 29 + 5 + 56 + 5)  # a short row is narrower
    assert layout.cell_origin(0) == (5, 34)
    assert layout.cell_origin(4) == (5 + 24 + 5, 34 + 56 + 5)


def test_frames_and_images_are_drawn_in_their_cells(tmp_path):
    layout = GridLayout(tile_size=(40, 20), columns=2, margin=6, frame=3, font_size=10)
    tiles = [Tile(Image.new("RGB", (20, 40), BLUE), "#1", GREEN), Tile(Image.new("RGB", (20, 40), BLUE), "#2", RED),
             Tile(Image.new("RGB", (20, 40), BLUE), "#3")]
    picture = draw_grid("a query", tiles, layout)
    assert picture.size == layout.canvas_size(3)
    header = layout.margin + layout.header_lines * layout.line_height + layout.margin
    cell_w, cell_h = 20 + 6, 40 + 6 + layout.line_height
    for i, frame in enumerate([GREEN, RED, (255, 255, 255)]):
        x, y = 6 + (i % 2) * (cell_w + 6), header + (i // 2) * (cell_h + 6)
        assert picture.getpixel((x, y)) == frame  # outer corner of the frame
        assert picture.getpixel((x + 2, y + 20)) == frame  # inside the 3-pixel border
        assert picture.getpixel((x + 3 + 10, y + 3 + 20)) == BLUE  # the image fills the tile
    path = save_png(picture, tmp_path / "sub" / "grid.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == picture.size


def test_images_keep_their_aspect_ratio():
    layout = GridLayout(tile_size=(40, 40), columns=1, margin=4, frame=0)
    wide = Image.new("RGB", (80, 20), BLUE)  # fits as 40 x 10, centred vertically
    picture = draw_grid("", [Tile(wide, "")], layout)
    x, y = layout.cell_origin(0)
    assert picture.getpixel((x + 20, y + 20)) == BLUE
    assert picture.getpixel((x + 20, y + 5)) == (255, 255, 255)


def test_wrap_text_fits_the_width_and_cuts_with_an_ellipsis():
    font = load_font(12)
    text = "a man with short black hair wears a red jacket, blue jeans and white sneakers " * 3
    lines = wrap_text(text, font, 150, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith(ELLIPSIS)
    assert all(font.getlength(line) <= 150 for line in lines)
    assert " ".join(lines).startswith("a man with short black hair")
    assert wrap_text("first\nsecond", font, 500, max_lines=3) == ["first", "second"]


def test_wrap_words_keeps_every_word_whole_and_fits_the_width():
    font = load_font(13)
    text = '"long dark blue denim jeans with a belt" (lower)\nextraordinarilylongword and more'
    lines = wrap_words(text, font, 100)
    assert " ".join(lines).split() == text.split() and not any(ELLIPSIS in line for line in lines)
    assert all(font.getlength(line) <= 100 or " " not in line for line in lines)  # only a lone word may overflow
    assert "extraordinarilylongword" in lines  # on a line of its own, not cut
    assert lines[0].startswith('"long') and lines.index("extraordinarilylongword") > 1  # the newline is kept


def test_fitted_layout_reserves_the_lines_the_longest_texts_need():
    layout = GridLayout(columns=2)
    labels = ['"short black hair"\n(hair)', "layer 2", '"a pair of very long white and red striped sneakers"']
    header = "The man has short black hair, is dressed in a red coat and is wearing blue jeans. " * 3
    fitted = fitted_layout(layout, header, labels)
    font = load_font(layout.font_size)
    width = fitted.cell_size[0]
    assert fitted.label_lines == max(len(wrap_words(label, font, width)) for label in labels) >= 4
    for label in labels:  # what draw_grid draws under a tile: the whole label, nothing cut
        assert wrap_text(label, font, width, fitted.label_lines) == wrap_words(label, font, width)
    header_width = fitted.canvas_size(len(labels))[0] - 2 * fitted.margin
    assert wrap_text(header, font, header_width, fitted.header_lines) == wrap_words(header, font, header_width)
    picture = draw_grid(header, [Tile(Image.new("RGB", (20, 40), BLUE), label) for label in labels], fitted)
    assert picture.size == fitted.canvas_size(3)


def test_panels_fill_rows_of_columns_within_the_width_by_hand():
    sizes = [(100, 50), (100, 80), (90, 30), (100, 40), (100, 60)]
    origins, size = panel_origins(sizes, max_width=350, top=20, margin=10)
    # columns of 100 + 10: (350 - 10) // 110 = 3 per row; row heights 80 and 60
    assert origins == [(10, 30), (120, 30), (230, 30), (10, 120), (120, 120)]
    assert size == (10 + 3 * 110, 30 + 80 + 10 + 60 + 10) and size[0] <= 350
    assert panel_origins([(500, 50)], max_width=350, top=0, margin=10)[0] == [(10, 10)]  # one too wide: alone
    panels = [Image.new("RGB", s, BLUE) for s in sizes]
    picture = draw_panels("a title", panels, 350, GridLayout(margin=10))
    top = 10 + GridLayout().line_height
    assert picture.size == panel_origins(sizes, 350, top, 10)[1]
    assert picture.getpixel((120 + 99, top + 10 + 79)) == BLUE  # the second panel's far corner


def _glyph(font, text: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(text)
    return mask.size, bytes(mask)


def test_accented_letters_are_drawn_not_boxed():
    font = load_font(13)
    missing = _glyph(font, "\U0010fffd")  # a private-use code point no font draws: the missing-glyph box
    for plain, accented in [("e", "ë"), ("e", "é"), ("n", "ñ"), ("O", "Ø"), ("a", "å")]:
        assert _glyph(font, accented) != missing, accented
        assert _glyph(font, accented) != _glyph(font, plain), accented
