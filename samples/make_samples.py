"""Regenerate the sample product photos and products.csv in this folder.

The images are procedural (gradients, soft shapes, grain) so they compress like photos;
they are deterministic for a given Pillow version. Run: python samples/make_samples.py
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
BASE_URL = "http://127.0.0.1:5000/samples"
Color = tuple[int, int, int]


def gradient(size: tuple[int, int], start: Color, end: Color, angle: float = 0.0) -> Image.Image:
    """Two-colour linear gradient, start at the top for angle 0, rotated by ``angle`` degrees."""
    mask = Image.linear_gradient("L").rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    mask = mask.crop((16, 16, 240, 240)).resize(size, Image.Resampling.BICUBIC)
    return Image.composite(Image.new("RGB", size, end), Image.new("RGB", size, start), mask)


def radial(size: tuple[int, int], inner: Color, outer: Color) -> Image.Image:
    """Radial gradient from ``inner`` at the centre to ``outer`` at the edges."""
    mask = Image.radial_gradient("L").resize(size, Image.Resampling.BICUBIC)
    return Image.composite(Image.new("RGB", size, outer), Image.new("RGB", size, inner), mask)


def soft_shape(
    canvas: Image.Image,
    draw_mask: Callable[[ImageDraw.ImageDraw], None],
    fill: Image.Image | Color,
    blur: float = 2.0,
) -> None:
    """Paste ``fill`` through a blurred mask drawn by ``draw_mask`` (anti-aliased edges)."""
    mask = Image.new("L", canvas.size, 0)
    draw_mask(ImageDraw.Draw(mask))
    mask = mask.filter(ImageFilter.GaussianBlur(blur))
    source = fill if isinstance(fill, Image.Image) else Image.new("RGB", canvas.size, fill)
    canvas.paste(source, (0, 0), mask)


def grain(im: Image.Image, seed: int, amplitude: int = 9) -> Image.Image:
    """Add seeded, slightly soft luminance noise like a camera sensor's."""
    rng = random.Random(seed)
    noise = Image.frombytes("L", im.size, rng.randbytes(im.width * im.height))
    noise = noise.point([128 + (v - 128) * amplitude // 128 for v in range(256)])
    noise = noise.filter(ImageFilter.GaussianBlur(0.7))
    return ImageChops.add(im, Image.merge("RGB", (noise, noise, noise)), scale=1.0, offset=-128)


def landscape(size: tuple[int, int], seed: int) -> Image.Image:
    """Sky, sun and layered hills."""
    w, h = size
    im = gradient(size, (64, 120, 200), (250, 200, 150))
    soft_shape(im, lambda d: d.ellipse((w * 0.68, h * 0.12, w * 0.8, h * 0.12 + w * 0.12), 255), (255, 236, 180), 6)
    rng = random.Random(seed)
    for layer, colour in enumerate([(90, 110, 90), (60, 95, 60), (40, 70, 45), (30, 50, 35)]):
        base = h * (0.5 + 0.12 * layer)
        points = [(0, h)]
        for x in range(0, w + 80, 80):
            points.append((x, base + rng.uniform(-1, 1) * h * 0.06))
        points.append((w, h))
        shade = gradient(size, colour, tuple(max(0, c - 35) for c in colour))
        soft_shape(im, lambda d, p=points: d.polygon(p, fill=255), shade, 3)
    return grain(im, seed)


def product_shot(size: tuple[int, int], seed: int, body: Color, accent: Color) -> Image.Image:
    """A bottle-like product on a studio backdrop with a soft shadow."""
    w, h = size
    im = gradient(size, (235, 233, 228), (170, 168, 165))
    cx, bottom = w // 2, int(h * 0.85)
    bw, bh = int(w * 0.2), int(h * 0.6)
    shadow = Image.new("RGB", size, (90, 88, 85))
    soft_shape(im, lambda d: d.ellipse((cx - bw, bottom - 25, cx + bw * 1.3, bottom + 35), 255), shadow, 25)
    shaded = gradient(size, tuple(min(255, c + 70) for c in body), body, angle=90)
    soft_shape(im, lambda d: d.rounded_rectangle((cx - bw // 2, bottom - bh, cx + bw // 2, bottom), 60, 255), shaded)
    neck = (cx - bw // 6, bottom - bh - h // 8, cx + bw // 6, bottom - bh + 20)
    soft_shape(im, lambda d: d.rounded_rectangle(neck, 20, 255), shaded)
    label = (cx - bw // 2, bottom - bh * 2 // 3, cx + bw // 2, bottom - bh // 3)
    soft_shape(im, lambda d: d.rectangle(label, 255), accent, 1.5)
    soft_shape(
        im, lambda d: d.rectangle((cx - bw // 3, bottom - bh + 30, cx - bw // 4, bottom - 40), 255), (255, 255, 255), 8
    )
    return grain(im, seed)


def still_life(size: tuple[int, int], seed: int) -> Image.Image:
    """Overlapping spheres of fruit-like colours on a table."""
    w, h = size
    im = gradient(size, (60, 45, 40), (140, 105, 80))
    rng = random.Random(seed)
    for colour in [(200, 40, 30), (230, 170, 30), (90, 150, 40), (150, 30, 90), (240, 120, 40), (60, 90, 180)]:
        r = int(rng.uniform(0.08, 0.16) * w)
        x, y = int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.45, 0.8) * h)
        ball = radial(size, tuple(min(255, c + 90) for c in colour), tuple(c // 3 for c in colour))
        ball = ball.transform(
            size,
            Image.Transform.AFFINE,
            (1, 0, w / 2 - x - r * 0.3, 0, 1, h / 2 - y - r * 0.3),
            Image.Resampling.BILINEAR,
        )
        soft_shape(im, lambda d, b=(x - r, y - r, x + r, y + r): d.ellipse(b, 255), ball, 2.5)
    return grain(im, seed, amplitude=11)


def cutout(size: tuple[int, int]) -> Image.Image:
    """A product on a transparent background with a half-transparent shadow."""
    w, h = size
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse((w * 0.2, h * 0.78, w * 0.85, h * 0.92), 110)
    im.paste((0, 0, 0, 255), (0, 0), shadow.filter(ImageFilter.GaussianBlur(30)))
    body = gradient(size, (250, 120, 80), (150, 40, 20), angle=90).convert("RGBA")
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((w * 0.3, h * 0.2, w * 0.7, h * 0.85), radius=int(w * 0.08), fill=255)
    im.paste(body, (0, 0), mask.filter(ImageFilter.GaussianBlur(1.5)))
    return im


def camera_exif(orientation: int | None = None) -> bytes:
    """EXIF like a camera's, so the pipeline has metadata to strip."""
    exif = Image.Exif()
    exif[0x010F] = "SampleCam"  # Make
    exif[0x0110] = "Procedural 1"  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def main() -> None:
    """Write the sample images and products.csv next to this script."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    srgb = srgb[:24] + bytes(12) + srgb[36:]  # blank the creation time so reruns are byte-identical
    camera = camera_exif()
    portrait = camera_exif(orientation=6)  # stored sideways: viewers rotate it 90 degrees clockwise

    jpegs = {
        "sku1_landscape.jpg": (landscape((2400, 1600), 1), {"exif": camera, "icc_profile": srgb}),
        "sku1_bottle.jpg": (product_shot((1600, 1200), 2, (40, 90, 160), (240, 200, 60)), {}),
        "sku2_fruit.jpg": (still_life((3000, 2000), 3), {"exif": camera}),
        # Drawn upright as a portrait, then rotated so only the EXIF tag makes it upright again.
        "sku2_bottle_rotated_exif6.jpg": (
            product_shot((1500, 2000), 4, (150, 40, 60), (250, 250, 240)).transpose(Image.Transpose.ROTATE_90),
            {"exif": portrait},
        ),
    }
    for name, (im, params) in jpegs.items():
        im.save(HERE / name, "JPEG", quality=90, **params)
    png = "sku2_cutout.png"
    cutout((1200, 1200)).save(HERE / png, "PNG")

    names = list(jpegs)
    rows = [
        ("1", "SKU1", ",".join(f"{BASE_URL}/{n}" for n in names[:2])),
        ("2", "SKU2", ",".join(f"{BASE_URL}/{n}" for n in [*names[2:], png])),
    ]
    with open(HERE / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("S. No.", "Product Name", "Input Image Urls"))
        writer.writerows(rows)

    for name in [*names, png, "products.csv"]:
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
