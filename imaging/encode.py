"""The per-format encoders: baseline JPEG, lossy WebP and AVIF, with no metadata but an RGB profile."""

from __future__ import annotations

import io
from collections.abc import Mapping

from PIL import Image

from imaging.work import Work

# Measured on the bench's photos up to 4 MP at quality 50 (bench/bench_quality_auto.py, bench/RESULTS.md):
# each is where one step slower costs over twice the CPU for under 10% fewer bytes. WebP method 2 -> 3:
# 2.5x the CPU, -8% (0 -> 2 cost 1.5x for -15%); AVIF speed 9 -> 8: 2.2x, -4% (6: 9x, -12%; 10 is 9).
WEBP_METHOD = 2
AVIF_SPEED = 9
#: The longest side each output format holds: libjpeg's and WebP's limits; libavif encodes up to 65536 px but
#: its decoder (Pillow's, and quality=auto's check of its own output) stops at 32768 by default. A longer
#: image is shrunk to fit (see resize.plan).
MAX_SIDE = {"jpeg": 65500, "webp": 16383, "avif": 32768}


def strip_metadata(work: Work) -> None:
    """Step, last: drop what the source's info still holds."""
    # The encoders fall back to the source's info for some metadata (AVIF: the profile; JPEG: the comment).
    work.image.info.clear()


def encode_image(
    im: Image.Image,
    quality: int,
    *,
    output_format: str,
    icc: bytes | None,
    metadata: Mapping[str, bytes] | None = None,
) -> bytes:
    """``im`` encoded as ``output_format`` at ``quality``, carrying ``icc`` and no other metadata than
    ``metadata``'s ``exif`` and ``xmp`` blocks (see metadata_policy.encoder_arguments)."""
    out = io.BytesIO()
    kept = {"exif": b"", "xmp": b""} | dict(metadata or {})
    if output_format == "jpeg":
        # Deliberately no optimize/progressive (+25-150% CPU).
        im.save(out, "JPEG", quality=quality, icc_profile=icc, comment=b"", **kept)
    elif output_format == "webp":
        im.save(out, "WEBP", quality=quality, method=WEBP_METHOD, icc_profile=icc or b"", **kept)
    else:
        # One thread: a worker process per core already keeps every core busy; threads only add overhead.
        im.save(out, "AVIF", quality=quality, speed=AVIF_SPEED, max_threads=1, icc_profile=icc or b"", **kept)
    return out.getvalue()
