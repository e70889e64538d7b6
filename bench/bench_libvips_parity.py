"""The service's libvips outputs against Pillow's, on the catalog photos: SSIM between the two, their sizes, and
the CPU each takes; a script, not a test (`make bench-libvips`).

For each JPEG photo of the catalog mix, shrunk (``max_dimension`` 1024 and 512), ``pipeline.compress`` at
quality 50 as the service runs it (libvips, see imaging/libvips_jpeg.py) and with libvips turned off (Pillow's
path). SSIM over RGB (scikit-image, 7x7 windows), both decoded by Pillow. At full size both make the same bytes.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from photos import CATALOG_SPECS, ensure_photos  # noqa: E402

from imaging import libvips_jpeg, pipeline  # noqa: E402

CASES = (1024, 512)
ROUNDS = 3


def compressed(data: bytes, max_dimension: int | None, libvips: bool) -> tuple[bytes, float]:
    """The output and the best of ROUNDS times, in ms."""
    applies = libvips_jpeg.applies
    if not libvips:
        libvips_jpeg.applies = lambda *_args: False
    try:
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            out = pipeline.compress(data, quality=50, max_dimension=max_dimension).data
            best = min(best, time.perf_counter() - started)
    finally:
        libvips_jpeg.applies = applies
    return out, best * 1000


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def main() -> int:
    if not libvips_jpeg.available():
        print("libvips is not installed")
        return 1
    photos = [photo for photo in ensure_photos(specs=CATALOG_SPECS) if photo.spec.format == "JPEG"]
    print(
        "| Case | Photos | SSIM libvips vs Pillow (min, median) | Bytes out, Pillow → libvips | CPU, Pillow → libvips |"
    )
    print("|---|---|---|---|---|")
    below: list[str] = []
    for max_dimension in CASES:
        scores, pillow_bytes, vips_bytes, pillow_ms, vips_ms = [], 0, 0, 0.0, 0.0
        for photo in photos:
            data = photo.path.read_bytes()
            pillow, pillow_time = compressed(data, max_dimension, libvips=False)
            vips, vips_time = compressed(data, max_dimension, libvips=True)
            a, b = pixels(pillow), pixels(vips)
            if a.shape != b.shape:
                print(f"{photo.path.name}: sizes differ, {a.shape} vs {b.shape}")
                return 1
            scores.append(structural_similarity(a, b, channel_axis=2, data_range=255))
            pillow_bytes += len(pillow)
            vips_bytes += len(vips)
            pillow_ms += pillow_time
            vips_ms += vips_time
            if scores[-1] < 0.99:
                below.append(f"{photo.path.name} at {max_dimension}: SSIM {scores[-1]:.4f}")
        case = f"`max_dimension={max_dimension}`"
        print(
            f"| {case} | {len(photos)} JPEG | {min(scores):.4f}, {statistics.median(scores):.4f} | "
            f"{pillow_bytes / 1e6:.2f} MB → {vips_bytes / 1e6:.2f} MB ({vips_bytes / pillow_bytes - 1:+.1%}) | "
            f"{pillow_ms / len(photos):.1f} → {vips_ms / len(photos):.1f} ms a photo |"
        )
    print()
    print("Below 0.99: " + ("; ".join(below) if below else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
