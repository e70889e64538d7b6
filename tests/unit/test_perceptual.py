"""perceptual.choose_quality: the bounded search for the lowest JPEG quality that meets an SSIM-luma target."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaging import perceptual


def flat(size: int = 768) -> Image.Image:
    """A packshot: white background, a smooth shaded shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size, 3), 250.0, np.float32)
    body = ((xx - size / 2) / (size / 5)) ** 2 + ((yy - size / 2) / (size / 3)) ** 2 < 1
    shade = 0.7 + 0.3 * np.cos((xx - size / 2) / size * 4)
    for c, base in enumerate((40, 110, 200)):
        img[..., c] = np.where(body, base * shade + 30, img[..., c])
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def detailed(size: int = 768) -> Image.Image:
    """Fine texture and grain everywhere."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 128 + 40 * np.sin(xx * 1.3) * np.sin(yy * 1.1) + rng.normal(0, 18, (size, size))
    return Image.fromarray(np.stack([base, base * 0.9, base * 0.7 + 20], axis=2).clip(0, 255).astype(np.uint8))


class CountingEncoder:
    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, image: Image.Image, quality: int) -> bytes:
        self.sizes.append(image.size)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()


@pytest.mark.parametrize("sample", ["tiles", "full"])
def test_flat_image_gets_a_lower_quality_than_a_detailed_one(sample: str) -> None:
    target = 0.95
    q_flat = perceptual.choose_quality(flat(), target, sample=sample).quality
    q_detailed = perceptual.choose_quality(detailed(), target, sample=sample).quality
    assert q_flat < q_detailed


@pytest.mark.parametrize("target", [0.90, 0.95, 0.98])
def test_the_chosen_quality_meets_the_target_on_the_whole_output(target: float) -> None:
    image = detailed()
    choice = perceptual.choose_quality(image, target)
    assert perceptual.QUALITY_MIN <= choice.quality <= perceptual.QUALITY_MAX
    with Image.open(io.BytesIO(choice.data)) as out:
        assert out.format == "JPEG" and out.size == image.size
        whole = perceptual.ssim_luma(image, out.convert("RGB"))
    if choice.score >= target:
        assert whole >= target - 0.005  # the tile estimate vs the whole image
        if choice.quality > perceptual.QUALITY_MIN:  # and the step below misses: it is the lowest
            below = dict(choice.trials).get(choice.quality - perceptual.QUALITY_STEP)
            assert below is None or below < target
    else:
        assert choice.quality == perceptual.QUALITY_MAX


def test_full_sampling_returns_the_exact_score_of_its_output() -> None:
    image = flat()
    choice = perceptual.choose_quality(image, 0.97, sample="full")
    assert choice.score >= 0.97
    with Image.open(io.BytesIO(choice.data)) as out:
        # the search reads the decoded Y plane itself; this goes through RGB and back (rounding)
        assert perceptual.ssim_luma(image, out.convert("RGB")) == pytest.approx(choice.score, abs=1e-3)


@pytest.mark.parametrize("target", [0.0, 0.5, 0.93, 0.97, 0.999, 1.01])
def test_trial_encodes_are_bounded(target: float) -> None:
    image = detailed(1024)
    encoder = CountingEncoder()
    choice = perceptual.choose_quality(image, target, encode=encoder)
    assert len(choice.trials) <= 5
    # the trials encode the small mosaic; only the final encode is of the whole image
    assert encoder.sizes.count(image.size) == 1
    assert len(encoder.sizes) == len(choice.trials) + 1
    assert sum(w * h for w, h in encoder.sizes[:-1]) <= 0.5 * image.width * image.height
    if target <= 0.5:
        assert choice.quality == perceptual.QUALITY_MIN
    if target > 1:
        assert choice.quality == perceptual.QUALITY_MAX and choice.score < target


def test_tile_estimate_tracks_the_whole_image() -> None:
    image = detailed(1024)
    mosaic, count = perceptual.tile_mosaic(image)
    assert count >= 24 and mosaic.size == (perceptual.TILE, count * perceptual.TILE)
    reference = perceptual.SsimReference(perceptual.as_tiles(perceptual.luma(mosaic), count))
    whole = perceptual.SsimReference(perceptual.luma(image))
    for quality in (30, 60, 90):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        tiles_out = io.BytesIO()
        mosaic.save(tiles_out, "JPEG", quality=quality)
        estimate = reference.score(perceptual.as_tiles(perceptual.decoded_luma(tiles_out.getvalue()), count))
        exact = whole.score(perceptual.decoded_luma(out.getvalue()))
        assert estimate == pytest.approx(exact, abs=0.01)


def test_identical_images_score_one_and_rejects_bad_arguments() -> None:
    image = detailed(128)
    assert perceptual.ssim_luma(image, image) == pytest.approx(1.0, abs=1e-5)
    assert perceptual.ssim_luma(image, image, "gauss") == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        perceptual.choose_quality(image.convert("RGBA"), 0.9)
    with pytest.raises(ValueError):
        perceptual.choose_quality(image, 0.9, sample="downscale")
    with pytest.raises(ValueError):
        perceptual.choose_quality(image, 0.9, low=60, high=40)


def test_an_unloaded_jpeg_is_read_as_its_y_plane() -> None:
    image = detailed(256)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    with Image.open(io.BytesIO(out.getvalue())) as unloaded:
        y = perceptual.luma(unloaded)
        assert unloaded.mode == "L"
    with Image.open(io.BytesIO(out.getvalue())) as loaded:
        through_rgb = perceptual.luma(loaded.convert("RGB"))
    assert np.array_equal(y, perceptual.decoded_luma(out.getvalue()))
    assert np.abs(y - through_rgb).max() <= 3  # YCbCr -> RGB -> Y rounds; the mean barely moves
    assert abs(float(y.mean() - through_rgb.mean())) < 0.5


def test_block_means_of_a_plane_match_the_direct_definition() -> None:
    rng = np.random.default_rng(3)
    for h, w in [(12, 12), (100, 77), (517, 333)]:
        y = (rng.random((h, w), dtype=np.float32) * 255).astype(np.float32)
        rows, cols = (h - 4) // 8, (w - 4) // 8
        direct = y[4 : 4 + rows * 8, 4 : 4 + cols * 8].reshape(rows, 8, cols, 8).astype(np.float64).mean(axis=(1, 3))
        fast = perceptual.SsimReference(y).mu
        assert fast.shape == (rows, cols)
        assert np.abs(fast - direct).max() < 1e-3


def test_the_mosaic_respects_max_tiles_and_whole_scoring_is_reported() -> None:
    image = detailed(1024)
    mosaic, count = perceptual.tile_mosaic(image, fraction=0.4, max_tiles=30)
    assert count == 30 and mosaic.size == (perceptual.TILE, 30 * perceptual.TILE)
    assert not perceptual.choose_quality(image, 0.95).scored_whole
    assert perceptual.choose_quality(image, 0.95, sample="full").scored_whole
    small = perceptual.choose_quality(detailed(128), 0.95)  # too few tiles to sample: scored whole
    assert small.scored_whole


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_tile_estimate_is_close_for_webp_and_avif(fmt: str) -> None:
    image = detailed(1024)

    def encode(im: Image.Image, quality: int) -> bytes:
        out = io.BytesIO()
        im.save(out, fmt, quality=quality, **({"method": 2} if fmt == "WEBP" else {"speed": 9, "max_threads": 1}))
        return out.getvalue()

    choice = perceptual.choose_quality(image, 0.95, encode=encode)
    with Image.open(io.BytesIO(choice.data)) as out:
        assert out.format == fmt
        whole = perceptual.ssim_luma(image, out)
    assert whole == pytest.approx(choice.score, abs=0.015)


def test_uint8_and_float32_planes_score_exactly_alike() -> None:
    image = detailed(300)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=40)
    for window in ("block", "gauss"):
        as_float = perceptual.SsimReference(perceptual.luma(image), window).score(
            perceptual.decoded_luma(out.getvalue())
        )
        with Image.open(io.BytesIO(out.getvalue())) as decoded:
            as_uint8 = perceptual.SsimReference(perceptual.luma_uint8(image), window).score(
                perceptual.luma_uint8(decoded)
            )
        assert as_uint8 == as_float
        with Image.open(io.BytesIO(out.getvalue())) as decoded:
            assert perceptual.ssim_luma(image, decoded, window) == as_float
