"""Pick the lowest quality whose perceptual score against the source meets a target.

The score is SSIM on luma (Wang et al. 2004: K1 0.01, K2 0.03) between the image and its decoded trial encode,
1.0 meaning identical, over 8x8 windows offset by 4 px from JPEG's blocks (or the classic Gaussian window,
sigma 1.5). ``bench/bench_quality_metric.py`` calibrates a target against SSIMULACRA2 and ``bench/QUALITY.md``
gives the figures.

Cost: the search scores trial encodes of a *mosaic of tiles* cut from the image on the 16 px JPEG MCU grid
(a twentieth of its 64 px tiles, at least 24, at full resolution, so that their luma blocks quantise exactly as
in the full encode), then encodes the whole image once at the chosen quality. The image is converted to luma
once. Any encoder Pillow decodes can be searched; for WebP and AVIF, whose blocks predict from their
neighbours, the mosaic is an estimate (within 0.01 on the bench's photos but one, bench/QUALITY.md), which
pipeline.compress checks on the whole output. Needs numpy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: The qualities searched: 30, 35, ..., 90. A bisection over these 13 takes at most 4 trials, plus one final
#: full-size encode at the chosen quality.
QUALITY_MIN = 30
QUALITY_MAX = 90
QUALITY_STEP = 5

_MCU = 16  # 4:2:0 JPEG's minimum coded unit
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_SIGMA = 1.5
_RADIUS = 3  # 7 taps; a wider window changes the score by < 0.001 on the bench's photos
_TAPS = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
_TAPS = (_TAPS / _TAPS.sum()).astype(np.float32)
_SIXTY_FOURTHS = np.full(8, 1 / 64, np.float32)
_MIN_SIDE = 12  # the smallest side that holds an 8x8 window offset by 4 px


@dataclass(frozen=True)
class Choice:
    """The chosen quality, its score (as measured by the search) and the full-size encode."""

    quality: int
    score: float
    data: bytes
    #: Every (quality, score) the search measured, in order; the final full-size encode is not a trial.
    trials: tuple[tuple[int, float], ...] = field(default=())
    #: Whether the search scored the whole image, so that ``score`` is exactly that of ``data``; otherwise it
    #: is the tile mosaic's estimate.
    scored_whole: bool = False


def luma(image: Image.Image) -> np.ndarray:
    """BT.601 luma as float32 (what JPEG's Y channel is), from any mode Pillow can convert to RGB (see luma_uint8)."""
    return luma_uint8(image).astype(np.float32)


def luma_uint8(image: Image.Image) -> np.ndarray:
    """BT.601 luma as uint8, from any mode Pillow can convert to RGB; SsimReference scores it as luma's float32.

    A colour JPEG that is not loaded yet is decoded as grayscale: libjpeg hands over its Y plane and skips the
    chroma upsampling and the colour conversion (``image`` then stays grayscale).
    """
    if image.format in ("JPEG", "MPO") and image.mode == "RGB" and getattr(image, "tile", None):
        image.draft("L", image.size)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L") if image.mode == "RGB" else image)


def _blur(a: np.ndarray) -> np.ndarray:
    """Separable 7-tap Gaussian over the last two axes, 'valid' region only (each tile on its own)."""
    r = _RADIUS
    h, w = a.shape[-2:]
    rows = _TAPS[0] * a[..., : w - 2 * r]
    for i in range(1, 2 * r + 1):
        rows += _TAPS[i] * a[..., i : w - 2 * r + i]
    out = _TAPS[0] * rows[..., : h - 2 * r, :]
    for i in range(1, 2 * r + 1):
        out += _TAPS[i] * rows[..., i : h - 2 * r + i, :]
    return out


def _plane_means(a: np.ndarray) -> np.ndarray:
    """The mean of each plane (or tile) taken as one window, shape (..., 1, 1), in float64."""
    return a.mean(axis=(-2, -1), dtype=np.float64, keepdims=True)


def _window_matrix(n: int) -> np.ndarray:
    """(n, n') float32: column j sums the 8 px of window j, windows offset by 4 px."""
    count = (n - 4) // 8
    m = np.zeros((n, count), np.float32)
    for j in range(count):
        m[4 + 8 * j : 12 + 8 * j, j] = 1 / 8
    return m


def _block_means(a: np.ndarray) -> np.ndarray:
    """Means over 8x8 windows offset by 4 px (each straddles a corner of JPEG's 8x8 blocks), per tile.

    A stack of tiles: columns are summed with one matrix product (BLAS), rows with a reshape of the 8x smaller
    result. One big plane: rows first (8 vectorised adds along whole rows), then columns with a matrix-vector
    product; 9x faster than a 4-d reshape's mean, whose inner loops are 8 long.
    """
    h, w = a.shape[-2:]
    if a.ndim == 2:
        rows, cols = (h - 4) // 8, (w - 4) // 8
        crop = a[4 : 4 + rows * 8, 4 : 4 + cols * 8].reshape(rows, 8, cols * 8)
        # uint8 samples sum exactly in uint16; float32 ones are integers below 2**24 here, so they sum exactly
        # too, and both kinds of input give the very same means.
        eight_rows = crop.sum(axis=1) if a.dtype == np.float32 else crop.sum(axis=1, dtype=np.uint16).astype(np.float32)
        return (eight_rows.reshape(-1, 8) @ _SIXTY_FOURTHS).reshape(rows, cols)
    cols = a.reshape(-1, w) @ _window_matrix(w)  # (..., h, w')
    cols = cols.reshape(*a.shape[:-1], -1)[..., 4 : 4 + (h - 4) // 8 * 8, :]
    lead = cols.shape[:-2]
    return cols.reshape(*lead, cols.shape[-2] // 8, 8, cols.shape[-1]).sum(axis=-2) * np.float32(1 / 8)


def _block_product_means(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """_block_means(a * b) of one plane, without the full-size product: one einsum sums 8 rows' products.

    uint8 planes multiply and sum in uint32, float32 ones (integers here) in float32: both exactly.
    """
    h, w = a.shape
    rows, cols = (h - 4) // 8, (w - 4) // 8
    strips_a = a[4 : 4 + rows * 8, 4 : 4 + cols * 8].reshape(rows, 8, cols * 8)
    strips_b = b[4 : 4 + rows * 8, 4 : 4 + cols * 8].reshape(rows, 8, cols * 8)
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        eight_rows = np.einsum("rij,rij->rj", strips_a, strips_b, dtype=np.uint32, casting="safe")
    else:
        eight_rows = np.einsum("rij,rij->rj", strips_a, strips_b, dtype=np.float32)
    return (eight_rows.astype(np.float32, copy=False).reshape(-1, 8) @ _SIXTY_FOURTHS).reshape(rows, cols)


class SsimReference:
    """A source's luma with its local means and variances, computed once for many comparisons.

    ``window`` "block": SSIM over non-overlapping 8x8 windows offset by 4 px (cheap: one pass per map, and
    each window sees block edges, where JPEG's blocking shows); "gauss": the classic overlapping Gaussian
    window (sigma 1.5, 7 taps), ~10x the CPU. A uint8 plane (luma_uint8) is scored in integers, exactly as
    its float32 copy (luma) and with a quarter of the memory traffic.

    A plane with a side under 12 px (1x1, 11x11, 1x40) holds no such window: whichever ``window``, it is
    scored as one window the size of the plane (SSIM over its global statistics, in float64; ``whole``).
    """

    def __init__(self, y: np.ndarray, window: str = "block") -> None:
        if window not in ("block", "gauss"):
            raise ValueError(f"window must be 'block' or 'gauss', got {window!r}")
        if y.ndim not in (2, 3) or 0 in y.shape[-2:]:
            raise ValueError(f"need a luma plane (or a stack of tiles) with pixels, got {y.shape}")
        self.window = window
        self.whole = min(y.shape[-2:]) < _MIN_SIDE
        if self.whole:
            y = y.astype(np.float64)
            self._local = _plane_means
        else:
            if window == "gauss" or y.ndim == 3 or y.dtype != np.uint8:
                y = y.astype(np.float32, copy=False)
            self._local = _block_means if window == "block" else _blur
        self.y = y
        self.mu = self._local(y)
        self.mu_sq = self.mu * self.mu
        self.var = self._local_product(y, y) - self.mu_sq

    def score(self, other: np.ndarray) -> float:
        """Mean SSIM of ``other`` (same shape) against the reference."""
        if other.shape != self.y.shape:
            raise ValueError(f"shape {other.shape} != reference {self.y.shape}")
        if self.whole:
            other = other.astype(np.float64)
        elif self.y.dtype != np.uint8 or other.dtype != np.uint8:
            other = other.astype(np.float32, copy=False)
        mu2 = self._local(other)
        mu12 = self.mu * mu2
        mu2_sq = mu2 * mu2
        var2 = self._local_product(other, other) - mu2_sq
        cov = self._local_product(self.y, other) - mu12
        num = (2 * mu12 + _C1) * (2 * cov + _C2)
        den = (self.mu_sq + mu2_sq + _C1) * (self.var + var2 + _C2)
        return float(np.mean(num / den, dtype=np.float64))

    def _local_product(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.window == "block" and a.ndim == 2 and not self.whole:
            return _block_product_means(a, b)
        return self._local(a * b)


def ssim_luma(reference: Image.Image, distorted: Image.Image, window: str = "block") -> float:
    """Mean SSIM on luma of two images of the same size."""
    return SsimReference(luma_uint8(reference), window).score(luma_uint8(distorted))


def decoded_luma(data: bytes) -> np.ndarray:
    """The luma of an encoded image; a JPEG's Y plane as it is stored (see luma)."""
    with Image.open(io.BytesIO(data)) as im:
        return luma(im)


TILE = 64
MAX_TILES = 1000


def tile_mosaic(
    image: Image.Image, fraction: float = 0.05, min_tiles: int = 24, max_tiles: int = MAX_TILES
) -> tuple[Image.Image, int]:
    """A mosaic of TILE-px tiles cut on the MCU grid, spread evenly over ``image``: ``fraction`` of its tiles,
    at least ``min_tiles``, at most ``max_tiles``.

    Returns the mosaic (one column of tiles, so that its luma reshapes to a stack without a copy) and how
    many tiles it holds (at most 1000 by default: JPEG's 65535 px height; WebP's is 16383). A JPEG of
    the mosaic quantises each tile's luma blocks exactly as a JPEG of the whole image does: the tiles start on
    16 px boundaries and luma blocks are coded independently. (a copy of image, 0) when tiling would save little.
    """
    width, height = image.size
    cols, rows = width // TILE, height // TILE
    total = cols * rows
    wanted = max(min_tiles, round(total * fraction))
    if total < 16 or wanted * 2 > total:
        return image.copy(), 0
    wanted = min(wanted, max_tiles)
    stride = total / wanted  # an even pick over the tile grid, offset so that neither edge is favoured
    mosaic = Image.new(image.mode, (TILE, wanted * TILE))
    for n in range(wanted):
        index = int(stride * (n + 0.5))
        x, y = (index % cols) * TILE, (index // cols) * TILE
        mosaic.paste(image.crop((x, y, x + TILE, y + TILE)), (0, n * TILE))
    return mosaic, wanted


def as_tiles(y: np.ndarray, count: int) -> np.ndarray:
    """A mosaic's luma as a (count, TILE, TILE) stack (a view); ``y`` itself if count is 0."""
    return y.reshape(count, TILE, TILE) if count else y


def _encode(image: Image.Image, quality: int, **save_kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, **save_kwargs)
    return out.getvalue()


def choose_quality(
    image: Image.Image,
    target: float,
    *,
    low: int = QUALITY_MIN,
    high: int = QUALITY_MAX,
    step: int = QUALITY_STEP,
    sample: str = "tiles",
    fraction: float = 0.05,
    min_tiles: int = 24,
    max_tiles: int = MAX_TILES,
    window: str = "block",
    encode: Callable[[Image.Image, int], bytes] | None = None,
) -> Choice:
    """The lowest quality in ``low..high`` (by ``step``) whose SSIM-luma score meets ``target``.

    Bisection, assuming the score rises with quality: at most ceil(log2(n)) trial encodes of the scoring
    image for n candidate qualities (4 for the default 13), then one encode of ``image`` at the chosen
    quality. ``sample`` is "tiles" (score a mosaic of full-resolution tiles, ``fraction`` of the image, see
    tile_mosaic; ``max_tiles`` bounds its height, e.g. for WebP's 16383 px) or "full" (score the whole image);
    ``window`` is SsimReference's. ``image`` must be RGB or L (what pipeline.compress encodes); ``encode``
    makes the encoded bytes, in any format Pillow decodes (default: a baseline JPEG, no extra metadata). When
    even ``high`` misses the target the result is ``high`` with its score below ``target``.
    """
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"image must be RGB or L, got {image.mode}")
    if not 1 <= low <= high <= 95 or step < 1:
        raise ValueError(f"bad quality range {low}..{high} step {step}")
    if sample not in ("tiles", "full"):
        raise ValueError(f"sample must be 'tiles' or 'full', got {sample!r}")
    encoder = encode or _encode
    scored, count = tile_mosaic(image, fraction, min_tiles, max_tiles) if sample == "tiles" else (image, 0)
    reference = SsimReference(as_tiles(luma(scored), count), window)
    candidates = list(range(low, high + 1, step))
    if candidates[-1] != high:
        candidates.append(high)

    trials: list[tuple[int, float]] = []
    data_of: dict[int, bytes] = {}

    def measure(quality: int) -> float:
        data = encoder(scored, quality)
        if not count:  # the whole image was scored: its trial is the output
            data_of[quality] = data
        value = reference.score(as_tiles(decoded_luma(data), count))
        trials.append((quality, value))
        return value

    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if measure(candidates[mid]) >= target:
            hi = mid
        else:
            lo = mid + 1
    quality = candidates[lo]
    score = dict(trials).get(quality)
    if score is None:  # the top candidate, reached only by failing every probe below it
        score = measure(quality)
    data = data_of.get(quality) or encoder(image, quality)
    return Choice(quality, score, data, tuple(trials), scored_whole=not count)
