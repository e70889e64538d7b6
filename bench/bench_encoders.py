"""For reference: images/s of one process with Pillow (``pipeline.compress``), pyvips and simplejpeg,
on upscaled sample photos (JPEG q90) of 2 and 12 MP, shrunk to 1024 or kept at full size, quality 50.

Usage: python bench/bench_encoders.py [--seconds S] [--markdown]

libvips runs with one thread and no operation cache, so that every figure is one core's and no result
is served from a cache. simplejpeg has no resize: shrinking decodes with libjpeg-turbo's DCT scaling to
at least the target, then resizes with Pillow (Lanczos), as ``pipeline.compress`` does after ``draft``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from photos import ensure_photos  # noqa: E402

QUALITY = 50
INPUTS = ("astronaut-2mp.jpg", "astronaut-12mp.jpg")
TARGETS = (1024, None)
ROUNDS = 3


def pillow(data: bytes, max_dimension: int | None) -> bytes:
    from imaging import pipeline

    return pipeline.compress(data, quality=QUALITY, max_dimension=max_dimension).data


def vips(data: bytes, max_dimension: int | None) -> bytes:
    import pyvips

    if max_dimension is None:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential")
    else:
        image = pyvips.Image.thumbnail_buffer(data, max_dimension, height=max_dimension, size="down")
    return image.jpegsave_buffer(Q=QUALITY, keep="none")


def simplejpeg_codec(data: bytes, max_dimension: int | None) -> bytes:
    import simplejpeg
    from PIL import Image

    if max_dimension is None:
        return simplejpeg.encode_jpeg(
            simplejpeg.decode_jpeg(data, colorspace="RGB"), quality=QUALITY, colorsubsampling="420"
        )
    width, height = simplejpeg.decode_jpeg_header(data)[:2]
    scale = max_dimension / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=target[0], min_height=target[1])
    resized = Image.fromarray(pixels).resize(target, Image.Resampling.LANCZOS)
    return simplejpeg.encode_jpeg(numpy.asarray(resized), quality=QUALITY, colorsubsampling="420")


ENCODERS: dict[str, Callable[[bytes, int | None], bytes]] = {
    "Pillow (`pipeline.compress`)": pillow,
    "pyvips `thumbnail_buffer` (1 thread)": vips,
    "simplejpeg (+ Pillow resize)": simplejpeg_codec,
}


def measure(encode: Callable[[bytes, int | None], bytes], data: bytes, max_dimension: int | None, seconds: float):
    """(images/s, output bytes) over at least ``seconds`` and 2 runs, after one warm-up."""
    out = encode(data, max_dimension)
    runs, started = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - started < seconds:
        out = encode(data, max_dimension)
        runs += 1
    return runs / (time.perf_counter() - started), len(out)


def best_of(data: bytes, max_dimension: int | None, seconds: float, rounds: int = ROUNDS) -> list[tuple[float, int]]:
    """Each encoder's best rate over ``rounds`` rounds taken in turn, so that a busy moment of a shared
    machine weighs on one round of every encoder rather than on all the rounds of one."""
    best = [(0.0, 0)] * len(ENCODERS)
    for _ in range(rounds):
        for index, encode in enumerate(ENCODERS.values()):
            rate, size = measure(encode, data, max_dimension, seconds / rounds)
            best[index] = max(best[index], (rate, size))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per case")
    parser.add_argument("--markdown", action="store_true", help="print only the table and its notes")
    args = parser.parse_args()

    import pyvips

    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    photos = {photo.path.name: photo for photo in ensure_photos()}
    header = "| Input | Output | " + " | ".join(ENCODERS) + " |"
    lines = [header, "|---|---|" + "---|" * len(ENCODERS)]
    for name in INPUTS:
        photo = photos[name]
        data = photo.path.read_bytes()
        for target in TARGETS:
            cells = [
                f"{rate:.1f} images/s ({size / 1024:.0f} KiB)" for rate, size in best_of(data, target, args.seconds)
            ]
            label = f"{photo.width}x{photo.height} JPEG q90 ({photo.width * photo.height / 1e6:.0f} MP, "
            label += f"{len(data) / 1024:.0f} KiB)"
            lines.append(
                f"| {label} | {'full size' if target is None else f'longest side {target}'} | "
                + " | ".join(cells)
                + " |"
            )
    import PIL
    import simplejpeg

    notes = [
        "",
        f"One process, quality {QUALITY}, upscaled scikit-image sample photo (astronaut), the best of {ROUNDS} "
        f"rounds taken in turn. Pillow {PIL.__version__}, "
        f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips {pyvips.__version__}, one "
        f"thread, no cache), simplejpeg {simplejpeg.__version__} (told 4:2:0 chroma subsampling, like the others)."
        " All three encode with libjpeg-turbo; on a shared machine the figures still vary by 10% or more.",
    ]
    print("\n".join(lines + notes))
    if not args.markdown:
        print("\n" + __doc__.split("\n\n", 2)[2].strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
