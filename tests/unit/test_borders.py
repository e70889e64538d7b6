"""borders.uniform_border_box and borders.frame: the content inside a uniform border, and added frames."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from imaging import borders

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def photo(width: int = 400, height: int = 300, seed: int = 1) -> Image.Image:
    """Full-bleed photo-like content: gradients across and down, with grain; no channel near black or white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 40 + 170 * xx / width
    green = 40 + 170 * yy / height
    blue = 128 + 60 * np.sin(xx / 17) * np.cos(yy / 23)
    pixels = np.stack([red, green, blue], axis=2) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(pixels.clip(30, 225).astype(np.uint8))


def packshot(
    size: tuple[int, int] = (600, 500), product: tuple[int, int, int, int] = (150, 100, 450, 420)
) -> Image.Image:
    """A product on plain white: a shaded ellipse inside the ``product`` box, background reaching every edge."""
    image = Image.new("RGB", size, WHITE)
    shape = Image.new("L", size, 0)
    ImageDraw.Draw(shape).ellipse((product[0], product[1], product[2] - 1, product[3] - 1), fill=255)
    image.paste(photo(*size, seed=2), mask=shape)
    return image


def test_a_drawn_border_gives_the_box_of_the_photo_inside_it():
    bordered = ImageOps.expand(photo(), border=20, fill=WHITE)

    assert borders.uniform_border_box(bordered, 10) == (20, 20, 420, 320)


def test_a_photo_without_border_has_no_box():
    assert borders.uniform_border_box(photo(), 10) is None


def test_an_image_of_nothing_but_border_colour_has_no_box():
    assert borders.uniform_border_box(Image.new("RGB", (50, 40), (200, 10, 10)), 0) is None


def test_a_border_on_some_sides_only_trims_those():
    image = Image.new("RGB", (300, 200), BLACK)
    image.paste(photo(270, 180), (30, 0))  # black on the left and at the bottom; one corner is photo

    assert borders.uniform_border_box(image, 10) == (30, 0, 300, 180)
    assert borders.frame(image, 10) is None


def test_a_band_along_one_side_only_is_no_border():
    # Two corners of one colour are a band of the picture's own (a dark floor, a sky), not a border round it.
    image = Image.new("RGB", (300, 200), BLACK)
    image.paste(photo(270, 200), (30, 0))

    assert borders.uniform_border_box(image, 10) is None


def test_the_colour_most_corners_share_is_the_border():
    image = packshot()
    image.paste(photo(100, 80), (500, 420))  # content reaching the bottom-right corner

    assert borders.uniform_border_box(image, 10) == (150, 100, 600, 500)


def test_four_corners_that_all_disagree_mean_no_border():
    image = ImageOps.expand(photo(), border=10, fill=WHITE)
    for index, corner in enumerate(((0, 0), (419, 0), (0, 319), (419, 319))):
        image.putpixel(corner, (index * 60, 0, 0))

    assert borders.uniform_border_box(image, 10) is None


def test_a_pixel_exactly_at_the_tolerance_is_border_and_one_past_it_is_content():
    image = Image.new("RGB", (100, 80), (240, 240, 240))
    image.paste(photo(40, 30), (30, 25))
    image.putpixel((5, 4), (240, 245, 240))  # a speck in the border, 5 from its colour in one channel

    assert borders.uniform_border_box(image, 5) == (30, 25, 70, 55)
    assert borders.uniform_border_box(image, 4) == (5, 4, 70, 55)


def test_tolerance_zero_takes_only_the_exact_colour():
    image = ImageOps.expand(photo(), border=8, fill=(250, 250, 250))
    image.putpixel((0, 100), (251, 250, 250))  # further from the picture than an encoder's ringing reaches

    assert borders.uniform_border_box(image, 0) == (0, 8, 408, 308)
    assert borders.uniform_border_box(image, 1) == (8, 8, 408, 308)


def test_tolerance_255_makes_everything_border():
    assert borders.uniform_border_box(ImageOps.expand(photo(), border=8, fill=WHITE), 255) is None


@pytest.mark.parametrize("tolerance", [-1, 256])
def test_a_tolerance_outside_0_to_255_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        borders.uniform_border_box(photo(), tolerance)


def test_modes_other_than_rgb_and_l_are_refused():
    with pytest.raises(ValueError, match="RGBA"):
        borders.frame(photo().convert("RGBA"), 10)


def test_l_mode_images_are_read_too():
    bordered = ImageOps.expand(photo().convert("L"), border=(12, 9, 15, 10), fill=0)

    assert borders.uniform_border_box(bordered, 10) == (12, 9, 412, 309)
    assert borders.frame(bordered, 10) == borders.Frame(colour=BLACK, widths=(12, 9, 15, 10))


@pytest.mark.parametrize("colour", [WHITE, BLACK])
def test_a_20px_border_round_a_photo_is_a_frame(colour):
    found = borders.frame(ImageOps.expand(photo(), border=20, fill=colour), 10)

    assert found == borders.Frame(colour=colour, widths=(20, 20, 20, 20))


def test_a_frame_reports_each_side_s_width():
    bordered = ImageOps.expand(photo(), border=(11, 7, 14, 12), fill=(90, 30, 160))

    assert borders.frame(bordered, 10) == borders.Frame(colour=(90, 30, 160), widths=(11, 7, 14, 12))


def test_bands_much_uneven_are_margins_not_a_frame():
    # A frame drawn round a picture is even (within 3% of the shorter side); margins round a product seldom are.
    assert borders.frame(ImageOps.expand(photo(), border=(11, 7, 25, 30), fill=(90, 30, 160)), 10) is None


def test_a_full_bleed_photo_is_no_frame():
    assert borders.frame(photo(), 10) is None


def test_a_white_packshot_is_no_frame_though_its_background_is_a_uniform_border():
    image = packshot()

    assert borders.uniform_border_box(image, 10) == (150, 100, 450, 420)
    assert borders.frame(image, 10) is None


def test_a_rectangular_product_on_white_with_uneven_margins_is_no_frame():
    """An upright rectangular product (a box shot face-on) fills the ring inside the white band all round: from
    that ring alone it is the same as a photo with a white border drawn round it. Its margins, uneven, tell it
    apart; centred with even margins, it would read as one."""
    image = Image.new("RGB", (600, 500), WHITE)
    image.paste(photo(300, 320), (150, 100))

    assert borders.frame(image, 10) is None
    even = Image.new("RGB", (500, 420), WHITE)
    even.paste(photo(300, 220), (100, 100))
    assert borders.frame(even, 10) == borders.Frame(colour=WHITE, widths=(100, 100, 100, 100))


def test_a_band_thinner_than_half_a_percent_of_its_dimension_is_no_frame():
    content = photo(990, 590)  # framed 5 px all round: 1000 x 600, so 5 px across and 3 px down are needed
    assert borders.frame(ImageOps.expand(content, border=5, fill=WHITE), 10) is not None
    assert borders.frame(ImageOps.expand(content, border=(4, 5, 5, 5), fill=WHITE), 10) is None
    assert borders.frame(ImageOps.expand(content, border=(5, 5, 5, 4), fill=WHITE), 10) is not None
    assert borders.frame(ImageOps.expand(content, border=(5, 5, 5, 2), fill=WHITE), 10) is None


def test_a_band_of_one_pixel_is_no_frame_even_on_a_small_image():
    content = photo(96, 96)
    assert borders.frame(ImageOps.expand(content, border=2, fill=WHITE), 10) is not None
    assert borders.frame(ImageOps.expand(content, border=(2, 1, 2, 2), fill=WHITE), 10) is None


@pytest.mark.parametrize(("white_in_ring", "is_frame"), [(126, True), (127, False)])
def test_a_frame_needs_60_percent_content_in_the_ring_inside_its_band(white_in_ring, is_frame):
    # Content box (10, 10, 90, 90): its one-pixel ring holds 4 * 80 - 4 = 316 pixels, 60% of which is 189.6.
    pixels = np.full((100, 100, 3), 255, np.uint8)
    pixels[10:90, 10:90] = 0
    ring_pixels_between_corners = [(10, x) for x in range(11, 89)] + [(89, x) for x in range(11, 89)]
    for y, x in ring_pixels_between_corners[:white_in_ring]:
        # White 9 px deep: past what is taken for an encoder's ringing (ARTEFACT_INSET_PX), so the ring stays.
        deeper = range(y, y + 9) if y == 10 else range(y - 8, y + 1)
        pixels[list(deeper), x] = 255

    found = borders.frame(Image.fromarray(pixels), 10)

    assert (found is not None) is is_frame


def test_a_24_megapixel_image_is_read_quickly():
    content = np.random.default_rng(3).integers(30, 220, (3920, 5920, 3), dtype=np.uint8)
    image = ImageOps.expand(Image.fromarray(content), border=40, fill=WHITE)
    assert image.size == (6000, 4000)

    started = time.perf_counter()
    box = borders.uniform_border_box(image, 12)
    boxed = time.perf_counter()
    found = borders.frame(image, 12)
    framed = time.perf_counter()

    print(f"6000x4000 RGB: uniform_border_box {boxed - started:.3f}s, frame {framed - boxed:.3f}s")
    assert box == (40, 40, 5960, 3960)
    assert found == borders.Frame(colour=WHITE, widths=(40, 40, 40, 40))


@pytest.mark.parametrize("quality", [75, 90])
@pytest.mark.parametrize("band", [16, 20, 32])
def test_a_frame_round_a_jpeg_photo_is_found_past_the_encoders_ringing(quality, band):
    # JPEG's ringing leaves a few pixels of the band, next to the picture, far from its colour: the box round
    # what differs reaches a pixel or two into the band, and its edge line is mostly band.
    framed = ImageOps.expand(photo(600, 500), border=band, fill=BLACK)
    out = io.BytesIO()
    framed.save(out, "JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(out.getvalue())).convert("RGB")

    assert borders.uniform_border_box(decoded, 12) == (band, band, band + 600, band + 500)
    assert borders.frame(decoded, 12) == borders.Frame(colour=BLACK, widths=(band, band, band, band))
