"""libvips's shrink-on-load path: the same output as Pillow's path, to the pixel size and within SSIM 0.99,
and only where it applies."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageOps

from imaging import libvips_jpeg, perceptual, pipeline
from imaging.errors import ImageProcessingError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

pytestmark = pytest.mark.skipif(not libvips_jpeg.available(), reason="libvips is not installed")


def pillow_only(monkeypatch) -> None:
    monkeypatch.setattr(libvips_jpeg, "applies", lambda *_args: False)


def jpeg(size=(1600, 1200), mode="RGB", **save) -> bytes:
    with Image.open(SAMPLES / "sku1_landscape.jpg") as sample:
        im = sample.convert("RGB").resize(size, Image.Resampling.BICUBIC).convert(mode)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def both(monkeypatch, data: bytes, **options) -> tuple[pipeline.CompressedImage, pipeline.CompressedImage]:
    calls = []
    real = libvips_jpeg.compress
    monkeypatch.setattr(libvips_jpeg, "compress", lambda *args: calls.append(1) or real(*args))
    by_libvips = pipeline.compress(data, **options)
    assert calls, "libvips did not make the output"
    with monkeypatch.context() as patched:
        pillow_only(patched)
        by_pillow = pipeline.compress(data, **options)
    return by_libvips, by_pillow


def ssim(a: bytes | Image.Image, b: bytes) -> float:
    first = a if isinstance(a, Image.Image) else Image.open(io.BytesIO(a))
    with first, Image.open(io.BytesIO(b)) as second:
        return perceptual.ssim_luma(first.convert("RGB"), second.convert("RGB"))


def upright_reference(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The source decoded whole, turned upright and resampled to ``size``: what both paths approximate."""
    with Image.open(io.BytesIO(data)) as source:
        return ImageOps.exif_transpose(source).convert("RGB").resize(size, Image.Resampling.LANCZOS)


@pytest.mark.parametrize(
    ("name", "max_dimension"),
    # Shrunk by less than half: a scaled decode cannot do it, so libvips does (see libvips_jpeg.applies).
    [("sku1_landscape.jpg", 1500), ("sku1_bottle.jpg", 1000), ("sku2_bottle_rotated_exif6.jpg", 1200)],
)
def test_a_shrunk_jpeg_looks_like_pillows_at_the_same_size_and_upright(monkeypatch, name, max_dimension):
    data = (SAMPLES / name).read_bytes()
    by_libvips, by_pillow = both(monkeypatch, data, max_dimension=max_dimension)
    assert (by_libvips.width, by_libvips.height) == (by_pillow.width, by_pillow.height)
    with Image.open(io.BytesIO(by_libvips.data)) as out, Image.open(io.BytesIO(by_pillow.data)) as pillows:
        assert out.format == "JPEG" and out.mode == "RGB" and out.size == (by_pillow.width, by_pillow.height)
        assert not out.getexif() and "comment" not in out.info and "exif" not in out.info
        assert out.info.get("icc_profile") == pillows.info.get("icc_profile")
    # Two encodes at quality 50 of thumbnails differ in their artefacts: each is as close to the source.
    assert ssim(by_libvips.data, by_pillow.data) >= 0.985
    reference = upright_reference(data, (by_pillow.width, by_pillow.height))
    assert ssim(reference, by_libvips.data) >= ssim(reference.copy(), by_pillow.data) - 0.002
    assert abs(len(by_libvips.data) - len(by_pillow.data)) <= 0.03 * len(by_pillow.data)
    assert (by_libvips.quality, by_libvips.kept_source, by_libvips.source_format) == (50, False, "JPEG")


def test_a_large_photo_shrunk_to_1024(monkeypatch):
    by_libvips, by_pillow = both(monkeypatch, jpeg((1600, 1200)), max_dimension=1024)
    assert (by_libvips.width, by_libvips.height) == (1024, 768) == (by_pillow.width, by_pillow.height)
    assert ssim(by_libvips.data, by_pillow.data) >= 0.99


def test_gray_becomes_rgb_and_an_rgb_profile_is_kept(monkeypatch):
    by_libvips, _ = both(monkeypatch, jpeg((800, 600), mode="L"), max_dimension=500)
    with Image.open(io.BytesIO(by_libvips.data)) as out:
        assert out.mode == "RGB" and out.size == (500, 375)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    by_libvips, _ = both(monkeypatch, jpeg((800, 600), icc_profile=srgb), max_dimension=500)
    with Image.open(io.BytesIO(by_libvips.data)) as out:
        assert out.info.get("icc_profile") == srgb


def test_pillow_keeps_what_libvips_does_not_cover(monkeypatch):
    calls = []
    monkeypatch.setattr(libvips_jpeg, "compress", lambda *args: calls.append(args))
    data = jpeg((800, 600))
    pipeline.compress(data)  # no resize
    pipeline.compress(data, max_dimension=300)  # a scaled decode does most of it
    pipeline.compress(data, max_dimension=400, quality=None, target_score=0.95)  # quality=auto
    pipeline.compress(data, max_dimension=400, output_format="webp")
    pipeline.compress(jpeg((800, 600), mode="CMYK"), max_dimension=400)
    png = io.BytesIO()
    Image.new("RGB", (800, 600), (10, 200, 30)).save(png, "PNG")
    pipeline.compress(png.getvalue(), max_dimension=400)
    assert calls == []


def test_an_exif_block_pillow_cannot_parse_turns_nothing_in_libvips_either(monkeypatch):
    """libvips reads EXIF on its own; the orientation that counts is the one Pillow read, as in Pillow's path."""
    calls = []
    real = libvips_jpeg.compress
    monkeypatch.setattr(libvips_jpeg, "compress", lambda *args: calls.append(args) or real(*args))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    out = io.BytesIO()
    Image.new("RGB", (800, 400), (30, 90, 200)).save(out, "JPEG", exif=exif.tobytes())
    turned = pipeline.compress(out.getvalue(), max_dimension=600)
    assert calls and (turned.width, turned.height) == (300, 600)

    monkeypatch.setattr(pipeline.orientation, "exif_orientation", lambda *_args: 1)
    as_stored = pipeline.compress(out.getvalue(), max_dimension=600)
    assert (as_stored.width, as_stored.height) == (600, 300)


def test_a_truncated_jpeg_is_corrupt_for_libvips_too():
    data = jpeg((1600, 1200))
    with pytest.raises(ImageProcessingError) as refused:
        pipeline.compress(data[: len(data) // 2], max_dimension=400)
    assert refused.value.code == "corrupt_image"


def test_mangled_jpegs_either_shrink_or_are_refused_in_the_error_shape():
    """Bytes overwritten, cut or repeated all over a JPEG: libvips either makes an output or the image is
    refused with one of the pipeline's codes; nothing else escapes, nothing crashes."""
    import random

    original = jpeg((640, 480))
    chosen = random.Random(19)
    outcomes = {"made": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        at = chosen.randrange(2, len(data))
        kind = chosen.choice(("overwrite", "cut", "repeat"))
        if kind == "overwrite":
            data[at : at + 4] = bytes(chosen.randrange(256) for _ in range(4))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = data[at : at + 64]
        try:
            made = pipeline.compress(bytes(data), max_dimension=320)
        except ImageProcessingError as error:
            assert error.code in {"corrupt_image", "not_an_image", "too_many_pixels", "image_too_large"}
            outcomes["refused"] += 1
        else:
            with Image.open(io.BytesIO(made.data)) as out:
                out.load()
            outcomes["made"] += 1
    assert outcomes["made"] and outcomes["refused"], outcomes
