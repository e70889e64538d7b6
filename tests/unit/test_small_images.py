"""Images smaller than the SSIM window (a side under 12 px): every accepted format, under every option.

quality=auto scores them with one window the size of the plane (perceptual.SsimReference); before, they
failed as corrupt_image.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.images import noise_bytes

from imaging import perceptual, pipeline

SIZES = [(1, 1), (7, 7), (11, 11), (1, 40), (40, 1)]
SOURCE_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"]
PILLOW_NAME = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
MAX_DIMENSION = 8


def shrunk(size: tuple[int, int], max_dimension: int | None) -> tuple[int, int]:
    width, height = size
    if max_dimension is None or max(size) <= max_dimension:
        return size
    if width >= height:
        return max_dimension, max(1, round(height * max_dimension / width))
    return max(1, round(width * max_dimension / height)), max_dimension


@pytest.mark.parametrize("never_bigger", [False, True], ids=["", "never_bigger"])
@pytest.mark.parametrize("max_dimension", [None, MAX_DIMENSION], ids=["", f"max{MAX_DIMENSION}"])
@pytest.mark.parametrize("quality", [50, None], ids=["q50", "auto"])
@pytest.mark.parametrize("output_format", pipeline.OUTPUT_FORMATS)
@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_a_small_image_is_encoded_under_every_option(
    size: tuple[int, int],
    fmt: str,
    output_format: str,
    quality: int | None,
    max_dimension: int | None,
    never_bigger: bool,
) -> None:
    data = noise_bytes(size, fmt)
    target = None if quality else pipeline.DEFAULT_TARGET_SCORE
    result = pipeline.compress(
        data,
        quality=quality,
        target_score=target,
        output_format=output_format,
        max_dimension=max_dimension,
        never_bigger=never_bigger,
    )

    expected = shrunk(size, max_dimension)
    assert (result.width, result.height) == expected
    assert (result.source_format, result.format) == (fmt, output_format)
    with Image.open(io.BytesIO(result.data)) as out:
        assert out.format == PILLOW_NAME[output_format] and out.size == expected
        out.load()
    if quality is None and not result.kept_source:
        # The score reported is the whole output's, as a fresh decode of it scores (a JPEG by its Y plane).
        prepared = pipeline.prepare(data, max_dimension=max_dimension)
        assert result.score == perceptual.ssim_luma(prepared, Image.open(io.BytesIO(result.data)))
    if quality is None:
        assert result.score is not None and 0 < result.score <= 1
        assert result.kept_source or result.quality is not None
    else:
        assert result.score is None
        assert result.quality == (None if result.kept_source else 50)
    assert not result.kept_source or (never_bigger and fmt == "JPEG" and output_format == "jpeg")


@pytest.mark.parametrize("window", ["block", "gauss"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 7), (11, 11), (1, 40), (40, 1), (11, 500)])
def test_a_plane_under_the_window_is_scored_as_one_window(shape: tuple[int, int], window: str) -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 256, shape, np.uint8)
    other = np.clip(y.astype(np.int16) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    reference = perceptual.SsimReference(y, window)

    assert reference.score(y) == 1.0
    x, z = y.astype(np.float64), other.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cov = (x * z).mean() - x.mean() * z.mean()
    var_x, var_z = (x * x).mean() - x.mean() ** 2, (z * z).mean() - z.mean() ** 2
    direct = ((2 * x.mean() * z.mean() + c1) * (2 * cov + c2)) / (
        (x.mean() ** 2 + z.mean() ** 2 + c1) * (var_x + var_z + c2)
    )
    assert reference.score(other) == pytest.approx(direct, abs=1e-12)
    assert perceptual.SsimReference(y.astype(np.float32), window).score(other.astype(np.float32)) == reference.score(
        other
    )


def test_one_pixel_is_scored_by_its_luminance_alone() -> None:
    c1 = (0.01 * 255) ** 2
    score = perceptual.SsimReference(np.array([[100]], np.uint8)).score(np.array([[110]], np.uint8))
    assert score == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)


def test_a_plane_with_no_pixels_is_refused() -> None:
    with pytest.raises(ValueError):
        perceptual.SsimReference(np.zeros((0, 5), np.uint8))
