"""perceptual_hash: the 64-bit DCT hash, its near-duplicate bands and its signed storage form."""

from __future__ import annotations

import io
import itertools
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from imaging import perceptual_hash
from imaging.perceptual_hash import BANDS, MAX_DISTANCE, bands, dct_hash, from_signed, hamming, to_signed


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like picture: smooth colour fields, a gradient, grain and a few discs."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    pixels = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    xx = np.mgrid[0:height, 0:width][1]
    pixels += (xx / width * 60 - 30)[..., None] * rng.choice([-1, 1], 3)
    pixels += rng.normal(0, 12, pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(20, 120))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def recompressed(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue()))


def reference_hash(image: Image.Image) -> int:
    """imagehash.phash written out from its definition: LANCZOS from full size, the DCT as explicit sums."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = np.arange(32)
    cosines = np.array([np.cos(np.pi * k * (2 * n + 1) / 64) for k in range(8)])
    low = np.array([[4 * np.sum(np.outer(cosines[u], cosines[v]) * pixels) for v in range(8)] for u in range(8)])
    bits = "".join("1" if c else "0" for c in (low > np.median(low)).flatten())
    return int(bits, 2)


SOURCE = photo(7)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda im: im.resize((320, 240), Image.Resampling.BILINEAR), id="half-size"),
        pytest.param(lambda im: im.resize((1000, 750), Image.Resampling.BICUBIC), id="enlarged"),
        pytest.param(lambda im: recompressed(im, 30), id="jpeg-30"),
        pytest.param(lambda im: ImageEnhance.Brightness(im).enhance(1.1), id="brightened"),
        pytest.param(lambda im: recompressed(im.resize((213, 160)), 30).point(lambda v: min(255, v + 8)), id="all"),
    ],
)
def test_the_same_picture_changed_a_little_is_a_near_duplicate(variant) -> None:
    assert hamming(dct_hash(SOURCE), dct_hash(variant(SOURCE))) <= MAX_DISTANCE


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_different_picture_is_far(seed: int) -> None:
    assert hamming(dct_hash(SOURCE), dct_hash(photo(seed))) > 10


def test_the_hash_is_imagehash_phash_up_to_the_cheaper_resize() -> None:
    distances = [hamming(dct_hash(photo(seed)), reference_hash(photo(seed))) for seed in range(12)]
    assert max(distances) <= 2
    assert sum(distances) <= 8


def test_the_dct_is_scipys_unnormalised_dct_ii_along_both_axes() -> None:
    pixels = np.random.default_rng(0).random((32, 32))
    product = perceptual_hash._DCT @ pixels @ perceptual_hash._DCT.T
    n = np.arange(32)
    for u, v in itertools.product(range(8), repeat=2):
        basis = np.outer(np.cos(np.pi * u * (2 * n + 1) / 64), np.cos(np.pi * v * (2 * n + 1) / 64))
        assert np.isclose(product[u, v], 4 * np.sum(basis * pixels))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"])
def test_any_mode_is_hashed(mode: str) -> None:
    assert 0 <= dct_hash(SOURCE.convert("RGBA").convert(mode)) < 2**64


def test_lab_is_hashed_by_its_lightness() -> None:
    grey = SOURCE.convert("L")
    assert dct_hash(Image.merge("LAB", (grey, Image.new("L", grey.size), Image.new("L", grey.size)))) == dct_hash(grey)


def test_a_palette_or_alpha_image_hashes_like_its_colours() -> None:
    assert hamming(dct_hash(SOURCE), dct_hash(SOURCE.convert("RGBA"))) <= 2
    assert hamming(dct_hash(SOURCE), dct_hash(SOURCE.quantize(256))) <= MAX_DISTANCE


def test_sixteen_bit_and_float_images_are_not_clipped() -> None:
    grey = np.asarray(SOURCE.convert("L"), dtype=np.float64)
    eight = dct_hash(SOURCE.convert("L"))
    for image in (Image.fromarray((grey * 257).astype(np.uint16)), Image.fromarray((grey / 255).astype(np.float32))):
        assert hamming(eight, dct_hash(image)) <= 2


@pytest.mark.parametrize("size", [(1, 1), (100_000, 1), (1, 3000), (6000, 4000)])
def test_extreme_sizes_are_hashed(size: tuple[int, int]) -> None:
    assert 0 <= dct_hash(Image.new("RGB", size, (90, 10, 200))) < 2**64


def test_a_large_image_hashes_like_a_small_one() -> None:
    assert hamming(dct_hash(SOURCE.resize((4000, 3000), Image.Resampling.BICUBIC)), dct_hash(SOURCE)) <= 2


def test_bands_are_contiguous_and_rebuild_the_hash() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        h = rng.getrandbits(64)
        parts = bands(h)
        assert len(parts) == BANDS
        rebuilt = 0
        for part, width in zip(parts, (13, 13, 13, 13, 12), strict=True):
            assert 0 <= part < 2**width
            rebuilt = rebuilt << width | part
        assert rebuilt == h


def _shares_a_band(a: int, b: int) -> bool:
    return any(x == y for x, y in zip(bands(a), bands(b), strict=True))


@pytest.mark.parametrize("distance", range(MAX_DISTANCE + 1))
def test_hashes_within_max_distance_agree_on_a_band(distance: int) -> None:
    rng = random.Random(distance)
    for _ in range(5000):
        a = rng.getrandbits(64)
        b = a
        for bit in rng.sample(range(64), distance):
            b ^= 1 << bit
        assert hamming(a, b) == distance
        assert _shares_a_band(a, b)


@pytest.mark.parametrize("distance", range(4))
def test_every_flip_of_up_to_three_bits_keeps_a_band(distance: int) -> None:
    a = random.Random(9).getrandbits(64)
    for bits in itertools.combinations(range(64), distance):
        assert _shares_a_band(a, a ^ sum(1 << bit for bit in bits))


def test_one_flip_per_band_shares_none() -> None:
    a = random.Random(3).getrandbits(64)
    assert not _shares_a_band(a, a ^ (1 << 63 | 1 << 50 | 1 << 37 | 1 << 24 | 1 << 0))


@pytest.mark.parametrize("value", [0, 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_the_signed_form_round_trips(value: int) -> None:
    signed = to_signed(value)
    assert -(2**63) <= signed < 2**63
    assert from_signed(signed) == value


def test_the_signed_form_keeps_the_bits() -> None:
    assert to_signed(2**63) == -(2**63)
    assert to_signed(2**64 - 1) == -1
    assert to_signed(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize("call", [lambda: to_signed(-1), lambda: to_signed(2**64), lambda: bands(2**64)])
def test_out_of_range_hashes_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("value", [-(2**63) - 1, 2**63])
def test_out_of_range_signed_values_are_refused(value: int) -> None:
    with pytest.raises(ValueError):
        from_signed(value)
