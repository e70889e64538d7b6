"""A 64-bit DCT perceptual hash (pHash), and what it takes to find near-duplicates by it in a database.

The algorithm is the ``imagehash`` library's ``phash``: greyscale, a 32x32 LANCZOS resize, a 2-D DCT-II, the
top-left 8x8 (lowest) frequencies, and one bit per coefficient: set when it is above their median. The first
coefficient (row 0, column 0) is the most significant bit, as in ``imagehash``'s hex form (``f"{h:016x}"``).
Three differences, to bound the cost and the error, move a hash 0.2 bits from ``imagehash``'s on average:
the resize first shrinks the image by whole factors with a box filter (LANCZOS over a 512 px side costs 1 ms
alone, this 0.1 ms); an image without alpha or palette is resized before it is made grey (a 24 MP photo: 17 ms,
not 75 ms); and 16-bit and float images are hashed at full depth instead of being clipped to 0..255.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The side of the square the image is resized to: 4 times the 8 frequencies kept, as in ``imagehash``.
_SIDE = 32
_KEPT = 8
#: Box-reduce until the LANCZOS resize that follows shrinks by at most this factor; from 3.0 on, Pillow's
#: documentation calls the result indistinguishable from a LANCZOS resize of the whole image in most cases.
_REDUCING_GAP = 3.0
#: Modes resized before their conversion to luminance: those that Pillow resizes, without alpha (which it
#: premultiplies, where ``imagehash`` drops it) and without a palette (which it resizes as NEAREST).
_RESIZED_FIRST = frozenset({"L", "RGB", "RGBX", "CMYK", "YCbCr", "I", "F"})
_BITS = 64
_MASK = (1 << _BITS) - 1

#: The Hamming distance up to which two images are near-duplicates: the same picture resized, recompressed
#: (JPEG quality 30) or slightly brightened almost always stays within it; different pictures are about 32 apart.
MAX_DISTANCE = 4
#: How many bands ``bands`` cuts a hash into: one more than ``MAX_DISTANCE``.
BANDS = MAX_DISTANCE + 1
_BAND_WIDTHS = (13, 13, 13, 13, 12)


def _dct_rows(n: int, kept: int) -> np.ndarray:
    """The first ``kept`` rows of the unnormalised DCT-II matrix for ``n`` samples (``scipy.fftpack.dct``'s)."""
    k = np.arange(kept)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_rows(_SIDE, _KEPT)


def dct_hash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of ``image`` (any mode, any size), an unsigned int in 0..2**64-1."""
    pixels = np.asarray(_small_grey(image), dtype=np.float64)
    # Only the 8 lowest frequencies of each axis are kept, so only those 8 rows of the DCT matrix are computed.
    low = _DCT @ pixels @ _DCT.T
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _small_grey(image: Image.Image) -> Image.Image:
    """``image`` resized to 32x32 and reduced to one band of luminance: "L", or "F" when deeper than 8 bits."""
    if image.mode in _RESIZED_FIRST:
        # Converting a 32x32 image rather than the whole: a quarter of the cost on a 24 MP photo.
        return _luma(_resize(image))
    return _resize(_luma(image))


def _resize(image: Image.Image) -> Image.Image:
    return image.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)


def _luma(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Pillow clips these to 0..255 on the way to "L"; "F" keeps them, and scaling them does not change a bit.
        return image.convert("F")
    if image.mode == "LAB":
        return image.getchannel("L")  # Pillow converts LAB to nothing else
    if image.mode in ("La", "RGBa"):
        image = image.convert(image.mode.upper())  # premultiplied alpha converts only to its straight form
    return image.convert("L")


def hamming(a: int, b: int) -> int:
    """The number of bits in which hashes ``a`` and ``b`` differ."""
    return (a ^ b).bit_count()


def bands(hash: int) -> list[int]:
    """``hash`` cut into ``BANDS`` contiguous bit bands, most significant first: 13, 13, 13, 13 and 12 bits wide.

    Two hashes within ``MAX_DISTANCE`` of each other differ in at most 4 bits, which can fall in at most 4 of the
    5 bands; by the pigeonhole principle they agree exactly on at least one band. A lookup by (band position,
    band value) therefore finds every near-duplicate candidate, to be confirmed with ``hamming``. The values of
    different positions overlap, so the position must be part of the key.

    Raises:
        ValueError: ``hash`` is not in 0..2**64-1.
    """
    _check_unsigned(hash)
    out = []
    shift = _BITS
    for width in _BAND_WIDTHS:
        shift -= width
        out.append((hash >> shift) & ((1 << width) - 1))
    return out


def to_signed(hash: int) -> int:
    """``hash`` (0..2**64-1) as the signed 64-bit integer of the same bits, for a BIGINT column.

    Raises:
        ValueError: ``hash`` is not in 0..2**64-1.
    """
    _check_unsigned(hash)
    return hash - (1 << _BITS) if hash >> (_BITS - 1) else hash


def from_signed(value: int) -> int:
    """The unsigned hash stored as the signed 64-bit integer ``value``; the inverse of ``to_signed``.

    Raises:
        ValueError: ``value`` is not in -2**63..2**63-1.
    """
    if not -(1 << (_BITS - 1)) <= value < 1 << (_BITS - 1):
        raise ValueError(f"{value} is not a signed 64-bit integer")
    return value & _MASK


def _check_unsigned(hash: int) -> None:
    if not 0 <= hash <= _MASK:
        raise ValueError(f"{hash} is not an unsigned 64-bit hash")
