"""canvas: ``layout`` plans an output's sizes from sizes alone (every expected size below is worked out by hand in
its comment), ``compose`` pads or crops the scaled content to the canvas, ``trimmed`` removes a uniform border."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imaging import attention, canvas
from imaging.canvas import Canvas, Layout, compose, layout, scaled, trimmed

BLUE = (0, 0, 255)
RED = (200, 30, 30)


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    """Full-bleed random RGB: no uniform border, every pixel different from its neighbours."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def solid(width: int, height: int, colour: tuple[int, int, int] = RED) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


# ---------------------------------------------------------------------------------------------------------------
# layout: contain (the default: fit inside, never padded beyond a margin)
# ---------------------------------------------------------------------------------------------------------------

CONTAIN_CASES = [
    # No box: the content's own size.
    pytest.param((1200, 800), Canvas(), None, Layout((1200, 800), (1200, 800), (0, 0)), id="no-box"),
    # max_dimension 600 is a 600x600 box: scale min(600/1200, 600/800) = 0.5.
    pytest.param((1200, 800), Canvas(), 600, Layout((600, 400), (600, 400), (0, 0)), id="max-dimension"),
    # A max_dimension past the source never enlarges it.
    pytest.param((1200, 800), Canvas(), 2000, Layout((1200, 800), (1200, 800), (0, 0)), id="max-past-source"),
    # A portrait source: the longest side (height) is the one bounded: 900 * 300/900 = 300, 600 * 1/3 = 200.
    pytest.param((600, 900), Canvas(), 300, Layout((200, 300), (200, 300), (0, 0)), id="max-dimension-portrait"),
    # Width only: box (600, inf); scale 600/1200 = 0.5.
    pytest.param((1200, 800), Canvas(width=600), None, Layout((600, 400), (600, 400), (0, 0)), id="width-only"),
    # Height only: box (inf, 400); scale 400/800 = 0.5.
    pytest.param((1200, 800), Canvas(height=400), None, Layout((600, 400), (600, 400), (0, 0)), id="height-only"),
    # Width only and max_dimension 300: box (600, inf) bounded to (300, 300); scale min(300/1200, 300/800) = 0.25.
    pytest.param((1200, 800), Canvas(width=600), 300, Layout((300, 200), (300, 200), (0, 0)), id="width-only-and-max"),
    # A contain box is never padded: 600x600 box, scale 0.5, canvas = content 600x400.
    pytest.param(
        (1200, 800), Canvas(width=600, height=600), None, Layout((600, 400), (600, 400), (0, 0)), id="box-not-padded"
    ),
    # min_dimension 600 without upscale: the box grows to 800x600 but the content is never enlarged, and a contain
    # canvas is only the content (and its margin): 400x300 as it came.
    pytest.param(
        (400, 300), Canvas(min_dimension=600), None, Layout((400, 300), (400, 300), (0, 0)), id="min-no-upscale"
    ),
    # min_dimension 600 with upscale: the shortest side 300 -> 600, factor 2: 800x600.
    pytest.param(
        (400, 300),
        Canvas(min_dimension=600, upscale=True),
        None,
        Layout((800, 600), (800, 600), (0, 0)),
        id="min-upscale",
    ),
    # min_dimension already met: nothing changes.
    pytest.param(
        (1200, 800),
        Canvas(min_dimension=500, upscale=True),
        None,
        Layout((1200, 800), (1200, 800), (0, 0)),
        id="min-already-met",
    ),
    # max_dimension wins over min_dimension: (1000, 100) grows x5 to (5000, 500), then shrinks x(2048/5000) to
    # (2048, 204.8); content = round(1000 * 2.048), round(100 * 2.048) = (2048, 205), the canvas round(204.8) = 205.
    pytest.param(
        (1000, 100),
        Canvas(min_dimension=500, upscale=True),
        2048,
        Layout((2048, 205), (2048, 205), (0, 0)),
        id="max-wins-over-min",
    ),
    # margin 0.1 keeps 0.8 of the box: content 800x400 in the 1000x500 canvas, offset (100, 50).
    pytest.param((1000, 500), Canvas(margin=0.1), None, Layout((1000, 500), (800, 400), (100, 50)), id="margin"),
    # margin and max_dimension 500: box (500, 250), inner (400, 200), offset (50, 25).
    pytest.param((1000, 500), Canvas(margin=0.1), 500, Layout((500, 250), (400, 200), (50, 25)), id="margin-max"),
    # margin in a contain box: box 600x600, inner 480x480, scale 0.4: content 480x320; the canvas shrinks to the
    # content and its margin: (480/0.8, 320/0.8) = 600x400, offset (60, 40).
    pytest.param(
        (1200, 800),
        Canvas(width=600, height=600, margin=0.1),
        None,
        Layout((600, 400), (480, 320), (60, 40)),
        id="margin-in-box",
    ),
]


@pytest.mark.parametrize(("source", "shape", "max_dimension", "expected"), CONTAIN_CASES)
def test_contain_layout(source, shape, max_dimension, expected):
    assert layout(source, shape, max_dimension) == expected


# ---------------------------------------------------------------------------------------------------------------
# layout: pad (fit inside, fill the rest of the box with the background)
# ---------------------------------------------------------------------------------------------------------------

PAD_CASES = [
    # Pad to a square without enlarging: the 400x300 content stays, centred: ((800-400)//2, (800-300)//2).
    pytest.param(
        (400, 300),
        Canvas(fit="pad", width=800, height=800),
        None,
        Layout((800, 800), (400, 300), (200, 250)),
        id="box-bigger-no-upscale",
    ),
    # The same with upscale: scale min(800/400, 800/300) = 2: 800x600, offset (0, 100).
    pytest.param(
        (400, 300),
        Canvas(fit="pad", width=800, height=800, upscale=True),
        None,
        Layout((800, 800), (800, 600), (0, 100)),
        id="box-bigger-upscale",
    ),
    # A box smaller than the content: scale min(800/1600, 800/1200) = 0.5: 800x600, offset (0, 100).
    pytest.param(
        (1600, 1200),
        Canvas(fit="pad", width=800, height=800),
        None,
        Layout((800, 800), (800, 600), (0, 100)),
        id="box-smaller",
    ),
    # upscale changes nothing when the content already is too big.
    pytest.param(
        (1600, 1200),
        Canvas(fit="pad", width=800, height=800, upscale=True),
        None,
        Layout((800, 800), (800, 600), (0, 100)),
        id="box-smaller-upscale",
    ),
    # A box neither side of which fits: 1000x500 into 400x300: scale min(0.4, 0.6) = 0.4: 400x200, offset (0, 50).
    pytest.param(
        (1000, 500),
        Canvas(fit="pad", width=400, height=300),
        None,
        Layout((400, 300), (400, 200), (0, 50)),
        id="box-wide-content",
    ),
    # An odd space to share: (800-401)//2 = 199 on the left, 200 on the right.
    pytest.param(
        (401, 300),
        Canvas(fit="pad", width=800, height=800),
        None,
        Layout((800, 800), (401, 300), (199, 250)),
        id="odd-offset",
    ),
    # Aspect 1:1 on landscape content: the box is (1200, 1200/1): content 1200x800, offset (0, 200).
    pytest.param(
        (1200, 800),
        Canvas(fit="pad", aspect=(1, 1)),
        None,
        Layout((1200, 1200), (1200, 800), (0, 200)),
        id="aspect-1:1-landscape",
    ),
    # Aspect 1:1 on portrait content: the box is (1200*1, 1200): offset (200, 0).
    pytest.param(
        (800, 1200),
        Canvas(fit="pad", aspect=(1, 1)),
        None,
        Layout((1200, 1200), (800, 1200), (200, 0)),
        id="aspect-1:1-portrait",
    ),
    # Aspect 1:1.44 on landscape content: wider than 1/1.44, so the width stays: (1200, 1200*1.44) = (1200, 1728);
    # offset (0, (1728-800)//2) = (0, 464).
    pytest.param(
        (1200, 800),
        Canvas(fit="pad", aspect=(1, 1.44)),
        None,
        Layout((1200, 1728), (1200, 800), (0, 464)),
        id="aspect-1:1.44-landscape",
    ),
    # Aspect 1:1.44 on portrait content still wider than the ratio (1000/1200 = 0.83 > 0.694): (1000, 1440),
    # offset (0, 120).
    pytest.param(
        (1000, 1200),
        Canvas(fit="pad", aspect=(1, 1.44)),
        None,
        Layout((1000, 1440), (1000, 1200), (0, 120)),
        id="aspect-1:1.44-portrait",
    ),
    # Aspect 1:1.44 on content taller than the ratio (1000/2000 = 0.5 < 0.694): the height stays:
    # (2000/1.44, 2000) = (1388.9, 2000) -> 1389; offset ((1389-1000)//2, 0) = (194, 0).
    pytest.param(
        (1000, 2000),
        Canvas(fit="pad", aspect=(1, 1.44)),
        None,
        Layout((1389, 2000), (1000, 2000), (194, 0)),
        id="aspect-1:1.44-tall-portrait",
    ),
    # Aspect and max_dimension: box (1200, 1200) bounded to (600, 600); scale min(0.5, 0.75): 600x400, (0, 100).
    pytest.param(
        (1200, 800),
        Canvas(fit="pad", aspect=(1, 1)),
        600,
        Layout((600, 600), (600, 400), (0, 100)),
        id="aspect-and-max",
    ),
    # max_dimension bounds a box too: 2048x2048 to 1000x1000; scale min(1000/1200, 1000/800): 1000x667, (0, 166).
    pytest.param(
        (1200, 800),
        Canvas(fit="pad", width=2048, height=2048),
        1000,
        Layout((1000, 1000), (1000, 667), (0, 166)),
        id="box-and-max",
    ),
    # A margin shrinks the content: box 1000x1000, inner 800x800, scale min(0.8, 1.6) = 0.8: 800x400, (100, 300).
    pytest.param(
        (1000, 500),
        Canvas(fit="pad", width=1000, height=1000, margin=0.1),
        None,
        Layout((1000, 1000), (800, 400), (100, 300)),
        id="margin",
    ),
    # The same with an aspect: box (1000, 1000), the same sizes.
    pytest.param(
        (1000, 500),
        Canvas(fit="pad", aspect=(1, 1), margin=0.1),
        None,
        Layout((1000, 1000), (800, 400), (100, 300)),
        id="margin-aspect",
    ),
    # A margin in percent of a box with room: 400x300 in 1000x1000 at 5%: inner 900, no upscale: the content
    # keeps its size.
    pytest.param(
        (400, 300),
        Canvas(fit="pad", width=1000, height=1000, margin=0.05),
        None,
        Layout((1000, 1000), (400, 300), (300, 350)),
        id="margin-with-room",
    ),
    # min_dimension grows a pad canvas (not the content without upscale): box (400, 400) -> (600, 600).
    pytest.param(
        (400, 300),
        Canvas(fit="pad", aspect=(1, 1), min_dimension=600),
        None,
        Layout((600, 600), (400, 300), (100, 150)),
        id="min-no-upscale",
    ),
    # ... and the content too with upscale: scale min(600/400, 600/300) = 1.5: 600x450, offset (0, 75).
    pytest.param(
        (400, 300),
        Canvas(fit="pad", aspect=(1, 1), min_dimension=600, upscale=True),
        None,
        Layout((600, 600), (600, 450), (0, 75)),
        id="min-upscale",
    ),
]


@pytest.mark.parametrize(("source", "shape", "max_dimension", "expected"), PAD_CASES)
def test_pad_layout(source, shape, max_dimension, expected):
    assert layout(source, shape, max_dimension) == expected


# ---------------------------------------------------------------------------------------------------------------
# layout: cover (fill the box, crop what is outside)
# ---------------------------------------------------------------------------------------------------------------

COVER_CASES = [
    # 1200x800 into 400x400: scale max(400/1200, 400/800) = 0.5: content 600x400, offset (-100, 0).
    pytest.param(
        (1200, 800),
        Canvas(fit="cover", width=400, height=400),
        None,
        Layout((400, 400), (600, 400), (-100, 0)),
        id="box",
    ),
    # Aspect 1:1 on landscape: box (800*1, 800); scale 1: the content stays, 200 cropped off each side.
    pytest.param(
        (1200, 800),
        Canvas(fit="cover", aspect=(1, 1)),
        None,
        Layout((800, 800), (1200, 800), (-200, 0)),
        id="aspect-1:1-landscape",
    ),
    # Aspect 1:1 on portrait: box (800, 800/1): 200 cropped off top and bottom.
    pytest.param(
        (800, 1200),
        Canvas(fit="cover", aspect=(1, 1)),
        None,
        Layout((800, 800), (800, 1200), (0, -200)),
        id="aspect-1:1-portrait",
    ),
    # Aspect 1:1.44 on landscape: box (800/1.44, 800) = (555.6, 800) -> 556; offset (556-1200)//2 = -322.
    pytest.param(
        (1200, 800),
        Canvas(fit="cover", aspect=(1, 1.44)),
        None,
        Layout((556, 800), (1200, 800), (-322, 0)),
        id="aspect-1:1.44-landscape",
    ),
    # Small content, no upscale: scale max(800/300, 400/200) = 8/3 > 1, so the canvas shrinks by it to keep the
    # 2:1 aspect: (800, 400) * 3/8 = (300, 150); content 300x200, offset (0, (150-200)//2) = (0, -25).
    pytest.param(
        (300, 200),
        Canvas(fit="cover", width=800, height=400),
        None,
        Layout((300, 150), (300, 200), (0, -25)),
        id="small-no-upscale",
    ),
    # The same with upscale: content (300, 200) * 8/3 = (800, 533.3) -> (800, 533); offset (400-533)//2 = -67.
    pytest.param(
        (300, 200),
        Canvas(fit="cover", width=800, height=400, upscale=True),
        None,
        Layout((800, 400), (800, 533), (0, -66)),
        id="small-upscale",
    ),
    # Cover has no room for a margin: the same as without.
    pytest.param(
        (1200, 800),
        Canvas(fit="cover", width=400, height=400, margin=0.2),
        None,
        Layout((400, 400), (600, 400), (-100, 0)),
        id="margin-ignored",
    ),
    # max_dimension bounds the box: 400x400 -> 300x300, scale max(300/1200, 300/800) = 0.375: 450x300.
    pytest.param(
        (1200, 800),
        Canvas(fit="cover", width=400, height=400),
        300,
        Layout((300, 300), (450, 300), (-75, 0)),
        id="box-and-max",
    ),
]


@pytest.mark.parametrize(("source", "shape", "max_dimension", "expected"), COVER_CASES)
def test_cover_layout(source, shape, max_dimension, expected):
    assert layout(source, shape, max_dimension) == expected


@pytest.mark.parametrize(("source", "shape", "max_dimension", "expected"), [*CONTAIN_CASES, *PAD_CASES, *COVER_CASES])
def test_every_layout_centres_the_content_and_keeps_its_aspect(source, shape, max_dimension, expected):
    plan = layout(source, shape, max_dimension)
    overflow = (plan.content[0] - plan.canvas[0], plan.content[1] - plan.canvas[1])
    if shape.fit == "cover":  # where compose crops the centred overflow from
        assert plan.offset == (-(overflow[0] // 2), -(overflow[1] // 2))
    else:
        assert plan.offset == ((-overflow[0]) // 2, (-overflow[1]) // 2)
    if shape.fit == "cover":
        assert plan.content[0] >= plan.canvas[0] and plan.content[1] >= plan.canvas[1]
    else:
        assert plan.content[0] <= plan.canvas[0] and plan.content[1] <= plan.canvas[1]
    # The content is the source scaled by one factor (to a pixel's rounding).
    factor = plan.content[0] / source[0]
    assert abs(plan.content[1] - source[1] * factor) <= 1


def test_the_default_canvas_is_plain_and_any_change_is_not():
    assert Canvas().is_plain
    assert not Canvas(fit="pad", aspect=(1, 1)).is_plain
    assert not Canvas(background=(0, 0, 0)).is_plain
    assert not Canvas(trim=12).is_plain
    assert not Canvas(margin=0.05).is_plain


# ---------------------------------------------------------------------------------------------------------------
# compose and scaled
# ---------------------------------------------------------------------------------------------------------------


def test_compose_pads_with_the_background_colour():
    shape = Canvas(fit="pad", width=800, height=800, background=BLUE)
    plan = layout((400, 300), shape, None)
    assert plan == Layout((800, 800), (400, 300), (200, 250))
    drawn = compose(solid(400, 300), plan, shape)
    assert drawn.size == (800, 800)
    assert drawn.mode == "RGB"
    for corner in ((0, 0), (799, 0), (0, 799), (799, 799)):
        assert drawn.getpixel(corner) == BLUE
    # The content exactly where the offset puts it: its first and last pixels, and the background just outside.
    assert drawn.getpixel((200, 250)) == RED
    assert drawn.getpixel((599, 549)) == RED
    assert drawn.getpixel((199, 250)) == BLUE
    assert drawn.getpixel((600, 549)) == BLUE
    assert drawn.getpixel((200, 249)) == BLUE
    assert drawn.getpixel((200, 550)) == BLUE


def test_compose_pads_a_contain_margin_with_the_background():
    shape = Canvas(margin=0.1, background=(0, 0, 0))
    plan = layout((1000, 500), shape, None)
    drawn = compose(scaled(solid(1000, 500), plan.content), plan, shape)
    assert drawn.size == (1000, 500)
    assert drawn.getpixel((0, 0)) == (0, 0, 0)
    assert drawn.getpixel((99, 49)) == (0, 0, 0)
    assert drawn.getpixel((100, 50)) == RED
    assert drawn.getpixel((899, 449)) == RED
    assert drawn.getpixel((900, 450)) == (0, 0, 0)


def test_compose_crops_cover_to_exactly_the_canvas_centred():
    shape = Canvas(fit="cover", width=400, height=400)
    plan = layout((1200, 800), shape, None)
    content = noise(*plan.content)
    drawn = compose(content, plan, shape)
    assert drawn.size == (400, 400)
    # Centred: (600 - 400) // 2 = 100 cut off the left, as much off the right.
    assert np.array_equal(np.asarray(drawn), np.asarray(content)[:, 100:500])


def test_compose_crops_a_portrait_cover_top_and_bottom():
    shape = Canvas(fit="cover", aspect=(1, 1))
    plan = layout((300, 500), shape, None)
    assert plan == Layout((300, 300), (300, 500), (0, -100))
    content = noise(300, 500, seed=2)
    drawn = compose(content, plan, shape)
    assert np.array_equal(np.asarray(drawn), np.asarray(content)[100:400, :])


def test_compose_hands_back_content_that_already_is_the_canvas():
    shape = Canvas(fit="pad", width=600, height=400)
    plan = layout((1200, 800), shape, None)
    assert plan.canvas == plan.content == (600, 400)
    content = noise(600, 400)
    assert compose(content, plan, shape) is content


def test_attention_gravity_makes_a_canvas_of_the_right_size_around_the_interesting_part():
    # A flat grey strip with a patch of detail near its right end: attention crops there, not in the centre.
    pixels = np.full((200, 600, 3), 128, np.uint8)
    pixels[50:150, 480:580] = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    content = Image.fromarray(pixels)
    shape = Canvas(fit="cover", width=200, height=200, gravity="attention")
    plan = layout(content.size, shape, None)
    assert plan == Layout((200, 200), (600, 200), (-200, 0))
    origin = attention.crop_origin(content, plan.canvas)
    assert origin is not None, "pyvips is installed, so attention has an answer"
    left, top = origin
    assert top == 0
    assert 200 < left <= 400
    drawn = compose(content, plan, shape)
    assert drawn.size == (200, 200)
    assert np.array_equal(np.asarray(drawn), pixels[:, left : left + 200])
    # The centre crop would have missed the detail.
    centred = compose(content, plan, Canvas(fit="cover", width=200, height=200))
    assert np.asarray(centred).std() == 0


def test_attention_falls_back_to_the_centre_without_libvips(monkeypatch):
    monkeypatch.setattr(attention.libvips_jpeg, "library", lambda: None)
    content = noise(600, 200)
    shape = Canvas(fit="cover", width=200, height=200, gravity="attention")
    drawn = compose(content, layout(content.size, shape, None), shape)
    assert np.array_equal(np.asarray(drawn), np.asarray(content)[:, 200:400])


def test_scaled_resamples_to_the_size_and_hands_back_an_image_already_that_size():
    content = noise(300, 200)
    assert scaled(content, (300, 200)) is content
    smaller = scaled(content, (150, 100))
    assert smaller.size == (150, 100)
    assert smaller.mode == "RGB"
    assert canvas.scaled(content, (600, 400)).size == (600, 400)


# ---------------------------------------------------------------------------------------------------------------
# trimmed
# ---------------------------------------------------------------------------------------------------------------


def bordered(seed: int = 3) -> Image.Image:
    """200x100: a near-white border (250-255, within a tolerance of 12 of its corners) round 120x60 of noise
    at (40, 20)."""
    rng = np.random.default_rng(seed)
    pixels = (250 + rng.integers(0, 6, (100, 200, 1))).repeat(3, axis=2).astype(np.uint8)
    pixels[20:80, 40:160] = rng.integers(0, 256, (60, 120, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_trimmed_removes_a_drawn_uniform_border_within_the_tolerance():
    image = bordered()
    cut = trimmed(image, 12)
    assert cut.size == (120, 60)
    assert np.array_equal(np.asarray(cut), np.asarray(image)[20:80, 40:160])


def test_trimmed_with_a_tolerance_too_tight_for_the_border_leaves_it():
    # At tolerance 0 the border's own grain (250-255) reads as content reaching every edge.
    image = bordered()
    assert trimmed(image, 0) is image


def test_trimmed_leaves_a_full_bleed_image_alone():
    image = noise(300, 200)
    assert trimmed(image, 12) is image
    assert trimmed(image, 255 // 4) is image


def test_trimmed_without_a_tolerance_is_off():
    image = bordered()
    assert trimmed(image, None) is image


def test_trimmed_leaves_an_image_that_is_all_border_alone():
    image = solid(100, 100, (255, 255, 255))
    assert trimmed(image, 12) is image
