"""compliance.measure: the facts about one image, read from a copy at most 512 px long."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from compliance import measure as measuring
from compliance.measure import ImageFacts, measure
from imaging import borders

WHITE = (255, 255, 255)


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """Full-bleed photo-like content: gradients and grain, no channel near white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([40 + 170 * xx / width, 40 + 170 * yy / height, 120 + 0 * xx], axis=2)
    pixels += rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(pixels.clip(30, 225).astype(np.uint8))


def packshot() -> Image.Image:
    """A round product in the middle of a white background."""
    image = Image.new("RGB", (1000, 800), WHITE)
    shape = Image.new("L", image.size, 0)
    ImageDraw.Draw(shape).ellipse((300, 200, 699, 599), fill=255)
    image.paste(photo(1000, 800), mask=shape)
    return image


def facts_of(image: Image.Image, **overrides) -> ImageFacts:
    return measure(image, byte_count=overrides.pop("byte_count", 1000), format="JPEG", has_alpha=False, **overrides)


def test_a_white_packshot_has_a_white_ring_and_fills_its_product_s_box():
    facts = facts_of(packshot())

    assert facts.white_ring == 1.0
    assert facts.fill == pytest.approx(max(400 / 1000, 400 / 800), abs=0.01)
    assert facts.frame is False


def test_a_photo_on_grey_has_no_white_ring():
    image = Image.new("RGB", (900, 600), (128, 128, 128))
    image.paste(photo(300, 300), (300, 150))

    facts = facts_of(image)

    assert facts.white_ring == pytest.approx(0.0, abs=0.001)
    assert facts.fill == 1.0


def test_a_photo_with_a_border_drawn_round_it_has_a_frame():
    facts = facts_of(ImageOps.expand(photo(800, 600), border=20, fill=WHITE))

    assert facts.frame is True
    assert facts.white_ring == 1.0  # the ring is 2% of 840 x 640: inside the 20 px border
    assert facts.fill == pytest.approx(max(800 / 840, 600 / 640), abs=0.005)


def test_a_full_bleed_photo_has_no_frame_and_fills_everything():
    facts = facts_of(photo(1200, 900))

    assert facts.frame is False
    assert facts.fill == 1.0
    assert facts.white_ring == 0.0


def test_an_all_white_image_fills_nothing():
    facts = facts_of(Image.new("RGB", (700, 700), (250, 250, 250)))

    assert facts.fill == 0.0
    assert facts.white_ring == 1.0
    assert facts.frame is False


def test_near_white_means_every_channel_within_the_white_tolerance():
    image = Image.new("RGB", (100, 100), WHITE)
    image.paste((247, 255, 247), (10, 10, 20, 20))  # 255 - WHITE_TOLERANCE: still white
    image.paste((255, 246, 255), (60, 70, 80, 75))  # one channel past it: not white

    assert facts_of(image).fill == pytest.approx(0.2)


def test_the_ring_is_2_percent_of_each_side():
    image = photo(500, 250)
    image.paste(WHITE, (10, 5, 490, 245))  # 10 px across and 5 px down: exactly the ring, the photo's
    assert facts_of(image).white_ring == 0.0

    image.paste(WHITE, (0, 0, 500, 1))  # the top row turns white: 500 of the ring's 9800 pixels
    assert facts_of(image).white_ring == pytest.approx(500 / (500 * 250 - 480 * 240))


def test_white_padding_is_no_white_background_and_round_a_photo_is_a_border():
    photo_on_grey = facts_of(photo(800, 600))
    padded_photo = facts_of(ImageOps.expand(photo(800, 600), border=(60, 200, 60, 200), fill=WHITE))
    as_delivered = measuring.padded(padded_photo, photo_on_grey, WHITE)
    assert (padded_photo.white_ring, padded_photo.frame) == (1.0, False)  # uneven bands: margins, from pixels
    assert (as_delivered.white_ring, as_delivered.frame) == (0.0, True)

    packshot_source = facts_of(packshot())
    padded_packshot = facts_of(ImageOps.expand(packshot(), border=(40, 120, 40, 120), fill=WHITE))
    assert measuring.padded(padded_packshot, packshot_source, WHITE) == padded_packshot
    assert measuring.padded(padded_photo, photo_on_grey, (0, 0, 0)) == padded_photo


def test_l_mode_images_are_measured():
    image = ImageOps.expand(photo(600, 400).convert("L"), border=(30, 20, 30, 20), fill=255)

    facts = facts_of(image)

    assert facts.frame is True
    assert facts.white_ring == 1.0
    assert facts.fill == pytest.approx(max(600 / 660, 400 / 440), abs=0.005)


def test_a_large_image_is_measured_from_a_reduced_copy_to_within_a_hundredth():
    image = Image.new("RGB", (5000, 3000), WHITE)
    box = (1237, 811, 3761, 2190)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(180, 60, 20))
    exact = max((box[2] - box[0]) / 5000, (box[3] - box[1]) / 3000)
    before = image.tobytes()

    facts = measure(image, byte_count=123_456, format="PNG", has_alpha=True)

    assert facts.fill == pytest.approx(exact, abs=0.01)
    assert (facts.width, facts.height, facts.byte_count, facts.format, facts.has_alpha) == (
        5000,
        3000,
        123_456,
        "PNG",
        True,
    )
    assert image.size == (5000, 3000) and image.mode == "RGB" and image.tobytes() == before


def test_the_copy_measured_is_at_most_512_px_long_in_proportion(monkeypatch):
    seen: list[tuple[int, int]] = []

    def spy(image: Image.Image, tolerance: int) -> borders.Frame | None:
        seen.append(image.size)
        return None

    monkeypatch.setattr(measuring.borders, "frame", spy)
    facts_of(Image.new("RGB", (6000, 4000), WHITE))
    facts_of(Image.new("RGB", (300, 200), WHITE))

    assert seen == [(500, 334), (300, 200)]


def test_the_real_size_is_reported_when_a_reduced_copy_is_measured():
    image = Image.new("RGB", (400, 300), WHITE)
    image.paste((0, 0, 0), (100, 75, 300, 225))

    facts = facts_of(image, width=4000, height=3000)

    assert (facts.width, facts.height) == (4000, 3000)
    assert facts.fill == 0.5


def test_modes_other_than_rgb_and_l_are_refused():
    with pytest.raises(ValueError, match="RGBA"):
        facts_of(Image.new("RGBA", (10, 10)))


def test_a_24_megapixel_image_is_measured_quickly():
    content = np.random.default_rng(3).integers(30, 220, (3920, 5920, 3), dtype=np.uint8)
    image = ImageOps.expand(Image.fromarray(content), border=40, fill=WHITE)

    started = time.perf_counter()
    facts = facts_of(image)
    elapsed = time.perf_counter() - started

    print(f"6000x4000 RGB: measure {elapsed:.3f}s")
    assert facts.frame is True
    assert facts.fill == pytest.approx(5920 / 6000, abs=0.01)
