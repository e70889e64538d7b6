"""quality=auto: the lowest quality whose SSIM-luma score against the prepared image meets a target."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from imaging import perceptual
from imaging.encode import MAX_SIDE

#: quality=auto's default target: SSIM on luma 0.965 matches SSIMULACRA2 70 on the bench's photos
#: (bench/QUALITY.md). A target may be chosen from TARGET_SCORE_MIN to TARGET_SCORE_MAX.
DEFAULT_TARGET_SCORE = 0.965
TARGET_SCORE_MIN = 0.5
TARGET_SCORE_MAX = 0.999
#: Full-size encodes quality=None may add after the search when the whole image misses the target.
AUTO_EXTRA_ENCODES = 2
_QUALITY_CAP = 95


def encode_auto(
    im: Image.Image, target: float, encode: Callable[[Image.Image, int], bytes], output_format: str
) -> tuple[int, float, bytes]:
    """(quality, score, data): the lowest quality whose full-image SSIM-luma meets ``target``, as far as
    perceptual.choose_quality's tile estimate and up to AUTO_EXTRA_ENCODES steps of its correction reach.

    The search scores a mosaic of tiles (exact per tile for JPEG, an estimate for WebP and AVIF, whose blocks
    predict from their neighbours); the chosen encode is then scored whole, and while it misses the target the
    quality goes up by QUALITY_STEP, at most AUTO_EXTRA_ENCODES times and never past 95. The score returned
    is always that of ``data`` against all of ``im``: when it misses the target, the top quality tried did.
    """
    max_tiles = perceptual.MAX_TILES if output_format != "webp" else MAX_SIDE["webp"] // perceptual.TILE
    choice = perceptual.choose_quality(im, target, encode=encode, max_tiles=max_tiles)
    quality, score, data = choice.quality, choice.score, choice.data
    reference = None
    if not choice.scored_whole:
        reference = perceptual.SsimReference(perceptual.luma_uint8(im))
        score = reference.score(_decoded_luma(data))
    for _ in range(AUTO_EXTRA_ENCODES):
        if score >= target or quality >= _QUALITY_CAP:
            break
        if reference is None:
            reference = perceptual.SsimReference(perceptual.luma_uint8(im))
        quality = min(quality + perceptual.QUALITY_STEP, _QUALITY_CAP)
        data = encode(im, quality)
        score = reference.score(_decoded_luma(data))
    return quality, score, data


def _decoded_luma(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return perceptual.luma_uint8(im)
