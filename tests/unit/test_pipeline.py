"""Tests for pipeline.compress; every input image is generated here with Pillow."""

from __future__ import annotations

import io
import random
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin, PngImagePlugin

from imaging import jpeg_metadata, perceptual, pipeline
from imaging.pipeline import CompressedImage, ImageProcessingError, compress

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

# ITU-T T.81 Annex K, tables K.1 and K.2, in natural (row-major) order.
STD_LUMINANCE = [
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
STD_CHROMINANCE = [
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32  # fmt: skip


# --- helpers -------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode(result: CompressedImage) -> Image.Image:
    """Open the output, checking it is a JPEG whose header agrees with the result."""
    im = Image.open(io.BytesIO(result.data))
    assert im.format == "JPEG"
    assert im.size == (result.width, result.height)
    im.load()
    return im


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> None:
    assert len(actual) == len(expected), (actual, expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


def png_header_only(width: int, height: int, color_type: int = 2) -> bytes:
    """A PNG whose IHDR (with a correct CRC) claims width x height over a few junk bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x78\x9c\x03\x00") + chunk(b"IEND", b"")


def corner_image(size: tuple[int, int], block: int) -> Image.Image:
    """Blue image with a red ``block`` x ``block`` square in the top-left corner."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, block, block))
    return im


def exif_bytes(orientation: int, **extra: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    for tag, value in extra.items():
        exif[int(tag.removeprefix("tag_"), 16)] = value
    return exif.tobytes()


def s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def cmyk_profile_cyan_is_red() -> bytes:
    """A minimal ICC v2 CMYK input profile (lut8 A2B0) that renders pure cyan as red.

    Pillow cannot create CMYK profiles and the machine has none, so build one: white
    paper is white, any K=100% is black, C-only is sRGB red, anything else is mid gray.
    Red for cyan proves the ICC path ran, since a naive conversion gives cyan.
    """
    clut = b""
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    if k:
                        lab = (0, 128, 128)
                    elif (c, m, y) == (0, 0, 0):
                        lab = (255, 128, 128)
                    elif (c, m, y) == (1, 0, 0):
                        lab = (138, 208, 195)  # L*54 a*80 b*67, sRGB red
                    else:
                        lab = (128, 128, 128)
                    clut += bytes(lab)
    identity = b"".join(s15fixed16(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity
    a2b0 += bytes(range(256)) * 4 + clut + bytes(range(256)) * 3
    d50 = s15fixed16(0.9642) + s15fixed16(1.0) + s15fixed16(0.8249)
    tags = [(b"A2B0", a2b0), (b"wtpt", b"XYZ " + bytes(4) + d50)]
    table_len = 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, tag in tags:
        table += signature + struct.pack(">II", 128 + table_len + len(body), len(tag))
        body += tag + bytes(-len(tag) % 4)
    header = (
        struct.pack(">I", 128 + table_len + len(body))
        + bytes(4)
        + bytes([2, 0x10, 0, 0])
        + b"prtr"
        + b"CMYK"
        + b"Lab "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + d50
    )
    return header.ljust(128, b"\0") + table + body


def srgb_profile_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gray_profile_bytes() -> bytes:
    """An sRGB profile relabelled as GRAY in its header; only the header is ever checked."""
    icc = srgb_profile_bytes()
    return icc[:16] + b"GRAY" + icc[20:]


# --- basics --------------------------------------------------------------------------


def test_rgb_jpeg_roundtrip() -> None:
    src = corner_image((320, 240), 64)
    result = compress(encode(src, "JPEG", quality=95))
    assert isinstance(result, CompressedImage)
    assert result.source_format == "JPEG"
    assert (result.width, result.height) == (320, 240)
    out = decode(result)
    assert out.mode == "RGB"
    assert "progressive" not in out.info and "progression" not in out.info
    assert_close(out.getpixel((32, 32)), RED)
    assert_close(out.getpixel((200, 200)), BLUE)


def test_rgb_jpeg_is_not_copied_through_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = Image.Image.convert

    def spy(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        calls.append(self.mode)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    compress(encode(corner_image((400, 300), 16), "JPEG"), max_dimension=200)
    assert calls == []


def test_result_is_frozen() -> None:
    result = compress(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    with pytest.raises(AttributeError):
        result.width = 1  # type: ignore[misc]


# --- quality -------------------------------------------------------------------------


def quantization(quality: int) -> dict[int, list[int]]:
    rng = random.Random(1)
    noise = Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3))
    out = decode(compress(encode(noise, "PNG"), quality=quality))
    return {index: list(table) for index, table in out.quantization.items()}


def test_quality_50_writes_the_standard_tables() -> None:
    tables = quantization(50)
    # Pillow returns the tables in natural order (it undoes the file's zigzag order).
    assert tables[0][0] == 16
    assert tables[0] == STD_LUMINANCE
    assert tables[1] == STD_CHROMINANCE


def test_higher_quality_means_smaller_quantisers() -> None:
    q10, q50, q90 = quantization(10)[0], quantization(50)[0], quantization(90)[0]
    assert all(a <= b for a, b in zip(q90, q50, strict=True)) and sum(q90) < sum(q50)
    assert all(a >= b for a, b in zip(q10, q50, strict=True)) and sum(q10) > sum(q50)


def test_default_quality_is_50() -> None:
    out = decode(compress(encode(Image.new("RGB", (16, 16), RED), "PNG")))
    assert list(out.quantization[0]) == STD_LUMINANCE


@pytest.mark.parametrize("quality", [0, 96, -5, True, 50.0])
def test_quality_out_of_range_is_refused(quality: object) -> None:
    with pytest.raises(ValueError):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"), quality=quality)  # type: ignore[arg-type]


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(TypeError):
        compress("<html>")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted() -> None:
    data = encode(Image.new("RGB", (8, 8), RED), "PNG")
    assert compress(bytearray(data)).width == 8
    assert compress(memoryview(data)).width == 8


@pytest.mark.parametrize("kwargs", [{"max_dimension": 0}, {"max_dimension": -1}, {"max_pixels": 0}])
def test_bad_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"), **kwargs)


# --- orientation ---------------------------------------------------------------------

TL, TR, BL, BR = "top-left", "top-right", "bottom-left", "bottom-right"


def corner_point(corner: str, size: tuple[int, int], inset: int) -> tuple[int, int]:
    width, height = size
    x = inset if corner in (TL, BL) else width - 1 - inset
    y = inset if corner in (TL, TR) else height - 1 - inset
    return x, y


OPPOSITE = {TL: BR, BR: TL, TR: BL, BL: TR}


@pytest.mark.parametrize(
    ("orientation", "swapped", "red_corner"),
    [
        (1, False, TL),
        (2, False, TR),
        (3, False, BR),
        (4, False, BL),
        (5, True, TL),
        (6, True, TR),
        (7, True, BR),
        (8, True, BL),
    ],
)
def test_exif_orientation_is_applied(orientation: int, swapped: bool, red_corner: str) -> None:
    src = corner_image((64, 32), 16)
    result = compress(encode(src, "JPEG", quality=95, exif=exif_bytes(orientation)))
    expected_size = (32, 64) if swapped else (64, 32)
    assert (result.width, result.height) == expected_size
    out = decode(result)
    assert "exif" not in out.info
    assert_close(out.getpixel(corner_point(red_corner, expected_size, 8)), RED, 30)
    assert_close(out.getpixel(corner_point(OPPOSITE[red_corner], expected_size, 8)), BLUE, 30)


def test_orientation_together_with_max_dimension() -> None:
    src = corner_image((640, 320), 160)
    result = compress(encode(src, "JPEG", quality=95, exif=exif_bytes(6)), max_dimension=160)
    assert (result.width, result.height) == (80, 160)
    out = decode(result)
    assert_close(out.getpixel(corner_point(TR, out.size, 15)), RED, 30)
    assert_close(out.getpixel(corner_point(BL, out.size, 15)), BLUE, 30)


def test_orientation_in_png_exif_chunk() -> None:
    src = corner_image((64, 32), 16)
    result = compress(encode(src, "PNG", exif=exif_bytes(8)))
    assert (result.width, result.height) == (32, 64)
    assert_close(decode(result).getpixel(corner_point(BL, (32, 64), 8)), RED, 30)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_garbage_exif_is_ignored_not_fatal() -> None:
    src = corner_image((64, 32), 16)
    result = compress(encode(src, "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff junk"))
    assert (result.width, result.height) == (64, 32)


def test_exif_that_fails_to_parse_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Image.Image) -> Image.Exif:
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    result = compress(encode(corner_image((64, 32), 16), "JPEG", exif=exif_bytes(6)))
    assert (result.width, result.height) == (64, 32)


# --- colour modes and transparency ---------------------------------------------------


def test_rgba_png_is_flattened_onto_white() -> None:
    src = Image.new("RGBA", (64, 32), (0, 0, 0, 0))
    src.paste((255, 0, 0, 255), (0, 0, 32, 32))
    out = decode(compress(encode(src, "PNG")))
    assert out.mode == "RGB"
    assert_close(out.getpixel((8, 16)), RED)
    assert_close(out.getpixel((56, 16)), WHITE, 4)


def test_half_transparent_pixels_blend_with_white() -> None:
    src = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    out = decode(compress(encode(src, "PNG")))
    assert_close(out.getpixel((16, 16)), (127, 127, 127), 4)


def test_rgba_shrunk_keeps_white_background() -> None:
    src = Image.new("RGBA", (800, 400), (0, 0, 0, 0))
    src.paste((255, 0, 0, 255), (0, 0, 400, 400))
    result = compress(encode(src, "PNG"), max_dimension=200)
    out = decode(result)
    assert out.size == (200, 100)
    assert_close(out.getpixel((50, 50)), RED)
    assert_close(out.getpixel((150, 50)), WHITE, 4)


def test_la_png_is_flattened_onto_white() -> None:
    src = Image.new("LA", (64, 32), (0, 0))
    src.paste((0, 255), (0, 0, 32, 32))
    out = decode(compress(encode(src, "PNG")))
    assert out.mode == "RGB"
    assert_close(out.getpixel((8, 16)), BLACK)
    assert_close(out.getpixel((56, 16)), WHITE, 4)


def test_palette_png_with_transparency_is_flattened() -> None:
    src = Image.new("P", (64, 32), 0)
    src.putpalette(list(GREEN) + list(RED) + [0, 0, 0] * 254)
    src.paste(1, (0, 0, 32, 32))
    out = decode(compress(encode(src, "PNG", transparency=0)))
    assert_close(out.getpixel((8, 16)), RED)
    assert_close(out.getpixel((56, 16)), WHITE, 4)


def test_rgb_png_with_transparent_colour_is_flattened() -> None:
    src = Image.new("RGB", (64, 32), GREEN)
    src.paste(RED, (0, 0, 32, 32))
    out = decode(compress(encode(src, "PNG", transparency=GREEN)))
    assert_close(out.getpixel((8, 16)), RED)
    assert_close(out.getpixel((56, 16)), WHITE, 4)


def associated_alpha_tiff(im: Image.Image) -> bytes:
    """A TIFF whose ExtraSamples says associated (premultiplied) alpha; Pillow writes unassociated."""
    data = encode(im, "TIFF")
    unassociated = struct.pack("<HHIHH", 338, 3, 1, 2, 0)
    assert data.count(unassociated) == 1
    return data.replace(unassociated, struct.pack("<HHIHH", 338, 3, 1, 1, 0))


@pytest.mark.parametrize(
    ("src", "opened_as", "expected"),
    [
        (Image.new("RGBA", (32, 32), (128, 0, 0, 128)), "RGBA", (255, 127, 127)),
        (Image.new("LA", (32, 32), (64, 128)), "La", (191, 191, 191)),
    ],
)
def test_premultiplied_alpha_is_flattened(src: Image.Image, opened_as: str, expected: tuple[int, int, int]) -> None:
    data = associated_alpha_tiff(src)
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == opened_as
    assert_close(decode(compress(data)).getpixel((16, 16)), expected, 3)


def palette_alpha_image() -> Image.Image:
    im = Image.new("PA", (64, 32), (1, 0))
    im.putpalette(list(GREEN) + list(RED) + [0, 0, 0] * 254)
    im.paste((1, 255), (0, 0, 32, 32))
    return im


@pytest.mark.parametrize(
    ("src", "left", "right"),
    [
        (palette_alpha_image(), RED, WHITE),
        (Image.new("RGB", (64, 32), RED).convert("YCbCr"), RED, RED),
        (Image.new("CMYK", (64, 32), (0, 255, 255, 0)), RED, RED),
        (Image.new("I;16B", (64, 32), 32896), (128, 128, 128), (128, 128, 128)),
        (Image.new("LAB", (64, 32), (100, 128, 128)), (99, 99, 99), (99, 99, 99)),
    ],
    ids=["PA", "YCbCr", "CMYK", "I;16B", "LAB"],
)
def test_tiff_modes(src: Image.Image, left: tuple[int, int, int], right: tuple[int, int, int]) -> None:
    data = encode(src, "TIFF")
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == src.mode
    out = decode(compress(data))
    assert out.mode == "RGB"
    assert_close(out.getpixel((8, 16)), left, 16)
    assert_close(out.getpixel((56, 16)), right, 16)


def test_palette_png_without_transparency() -> None:
    src = Image.new("P", (64, 32), 0)
    src.putpalette(list(BLUE) + list(RED) + [0, 0, 0] * 254)
    src.paste(1, (0, 0, 32, 32))
    result = compress(encode(src, "PNG"), max_dimension=32)
    out = decode(result)
    assert out.size == (32, 16)
    assert_close(out.getpixel((4, 8)), RED)
    assert_close(out.getpixel((28, 8)), BLUE)


def test_one_bit_image() -> None:
    src = Image.new("1", (64, 32), 0)
    src.paste(1, (0, 0, 32, 32))
    out = decode(compress(encode(src, "PNG")))
    assert out.mode == "RGB"
    assert_close(out.getpixel((8, 16)), WHITE)
    assert_close(out.getpixel((56, 16)), BLACK)


def test_grayscale_l_becomes_rgb() -> None:
    src = Image.new("L", (32, 32), 100)
    out = decode(compress(encode(src, "JPEG")))
    assert out.mode == "RGB"
    assert_close(out.getpixel((16, 16)), (100, 100, 100), 3)


def test_sixteen_bit_png_mid_gray_stays_mid_gray() -> None:
    src = Image.new("I;16", (32, 32), 32896)  # 128 * 257
    data = encode(src, "PNG")
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode.startswith("I")
    out = decode(compress(data))
    assert_close(out.getpixel((16, 16)), (128, 128, 128), 2)


@pytest.mark.parametrize(("mode", "value", "expected"), [("I", 65535, 255), ("I", 25700, 100), ("F", 200.0, 200)])
def test_wide_tiff_modes(mode: str, value: float, expected: int) -> None:
    src = Image.new(mode, (32, 32), value)
    data = encode(src, "TIFF")
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == mode
    out = decode(compress(data))
    assert_close(out.getpixel((16, 16)), (expected,) * 3, 2)


def test_cmyk_jpeg_without_profile_is_converted_naively() -> None:
    src = Image.new("CMYK", (64, 32), (0, 0, 0, 0))
    src.paste((0, 255, 255, 0), (0, 0, 32, 32))
    data = encode(src, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == "CMYK"
    out = decode(compress(data))
    assert out.mode == "RGB"
    assert "icc_profile" not in out.info
    assert_close(out.getpixel((8, 16)), RED, 20)
    assert_close(out.getpixel((56, 16)), WHITE, 4)


def test_cmyk_jpeg_with_profile_goes_through_icc() -> None:
    icc = cmyk_profile_cyan_is_red()
    src = Image.new("CMYK", (64, 32), (0, 0, 0, 0))
    src.paste((255, 0, 0, 0), (0, 0, 32, 32))
    data = encode(src, "JPEG", quality=95, icc_profile=icc)
    result = compress(data, max_dimension=32)
    out = decode(result)
    assert out.size == (32, 16)
    assert out.info.get("icc_profile") in (None, b"")
    assert_close(out.getpixel((4, 8)), RED, 30)  # a naive conversion would give cyan
    assert_close(out.getpixel((28, 8)), WHITE, 6)


def test_cmyk_jpeg_with_broken_profile_falls_back() -> None:
    src = Image.new("CMYK", (64, 32), (0, 0, 0, 0))
    src.paste((0, 255, 255, 0), (0, 0, 32, 32))
    data = encode(src, "JPEG", quality=95, icc_profile=b"not a profile" * 20)
    out = decode(compress(data))
    assert "icc_profile" not in out.info
    assert_close(out.getpixel((8, 16)), RED, 20)


def test_cmyk_jpeg_with_rgb_profile_falls_back_and_drops_it() -> None:
    src = Image.new("CMYK", (32, 32), (0, 0, 0, 0))
    data = encode(src, "JPEG", icc_profile=srgb_profile_bytes())
    out = decode(compress(data))
    assert "icc_profile" not in out.info
    assert_close(out.getpixel((16, 16)), WHITE, 4)


# --- formats and frames --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_allowed_formats_are_accepted(fmt: str) -> None:
    src = Image.new("RGB", (48, 32), RED)
    result = compress(encode(src, fmt))
    assert result.source_format == fmt
    assert (result.width, result.height) == (48, 32)
    assert_close(decode(result).getpixel((24, 16)), RED)


def test_mpo_is_reported_as_jpeg() -> None:
    first, second = Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.format == "MPO"
    result = compress(data, max_dimension=16)
    assert result.source_format == "JPEG"
    assert_close(decode(result).getpixel((8, 8)), RED)


@pytest.mark.parametrize(("fmt", "params"), [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animation_uses_first_frame(fmt: str, params: dict[str, object]) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)
    with Image.open(io.BytesIO(data)) as reopened:
        assert getattr(reopened, "n_frames", 1) == 3
    result = compress(data)
    assert result.source_format == fmt
    assert_close(decode(result).getpixel((16, 16)), RED)


# The palette PNG case again as a GIF: Pillow reads GIF transparency on a path of its own.
def test_gif_transparency_becomes_white() -> None:
    src = Image.new("P", (32, 32), 0)
    src.putpalette(list(GREEN) + list(RED) + [0, 0, 0] * 254)
    src.paste(1, (0, 0, 16, 32))
    out = decode(compress(encode(src, "GIF", transparency=0)))
    assert_close(out.getpixel((4, 16)), RED)
    assert_close(out.getpixel((28, 16)), WHITE, 4)


# --- resizing ------------------------------------------------------------------------


def test_jpeg_shrink_uses_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts: list[tuple[object, ...]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(
        self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None
    ) -> tuple[str, tuple[int, int, float, float]] | None:
        result = original(self, mode, size)
        drafts.append((mode, size, result))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    src = corner_image((4000, 3000), 1000)
    result = compress(encode(src, "JPEG"), max_dimension=800)
    assert (result.width, result.height) == (800, 600)
    assert drafts, "draft() was not called"
    mode, size, drafted = drafts[0]
    assert (mode, size) == ("RGB", (800, 600))
    # 4000 // 800 = 5, so libjpeg decodes at 1/4 scale: 1000x750, still above the target.
    assert drafted == ("RGB", (0, 0, 1000, 750))
    out = decode(result)
    assert_close(out.getpixel((100, 100)), RED)
    assert_close(out.getpixel((700, 500)), BLUE)


@pytest.mark.parametrize(
    ("size", "max_dimension", "expected"),
    [
        ((3000, 1000), 800, (800, 267)),
        ((1000, 3000), 800, (267, 800)),
        ((1000, 1000), 800, (800, 800)),
        ((801, 600), 800, (800, 599)),
        ((300, 200), 800, (300, 200)),
        ((800, 600), 800, (800, 600)),
        ((5000, 10), 100, (100, 1)),
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_resize_bounds_longest_side_and_never_enlarges(
    fmt: str, size: tuple[int, int], max_dimension: int, expected: tuple[int, int]
) -> None:
    result = compress(encode(Image.new("RGB", size, GREEN), fmt), max_dimension=max_dimension)
    assert (result.width, result.height) == expected
    assert decode(result).size == expected


def test_no_max_dimension_keeps_size() -> None:
    result = compress(encode(Image.new("RGB", (1234, 567), GREEN), "JPEG"))
    assert (result.width, result.height) == (1234, 567)


# --- metadata ------------------------------------------------------------------------


def test_rgb_srgb_profile_is_kept() -> None:
    icc = srgb_profile_bytes()
    for fmt in ("JPEG", "PNG"):
        out = decode(compress(encode(Image.new("RGB", (32, 32), RED), fmt, icc_profile=icc)))
        assert out.info.get("icc_profile") == icc


def test_gray_profile_is_dropped() -> None:
    data = encode(Image.new("L", (32, 32), 90), "PNG", icc_profile=gray_profile_bytes())
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.info.get("icc_profile")
    out = decode(compress(data))
    assert "icc_profile" not in out.info


def test_malformed_rgb_profile_is_dropped() -> None:
    bogus = bytes(16) + b"RGB " + bytes(200)  # right colour space, no 'acsp' signature
    data = encode(Image.new("RGB", (32, 32), RED), "JPEG", icc_profile=bogus)
    assert "icc_profile" not in decode(compress(data)).info


def test_exif_xmp_and_comments_are_stripped() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    exif = exif_bytes(1, tag_010f="SecretCam", tag_0110="GPS-Model-9000")
    src = Image.new("RGB", (64, 64), RED)
    data = encode(src, "JPEG", exif=exif, xmp=xmp, comment=b"secret-comment")
    with Image.open(io.BytesIO(data)) as reopened:
        assert {"exif", "xmp", "comment"} <= set(reopened.info)
    result = compress(data)
    out = decode(result)
    assert not {"exif", "xmp", "comment"} & set(out.info)
    for marker in (b"Exif\x00\x00", b"SecretCam", b"http://ns.adobe.com/xap", b"xmpmeta", b"secret-comment"):
        assert marker not in result.data


def test_png_text_and_exif_are_stripped() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret-text")
    data = encode(Image.new("RGB", (32, 32), RED), "PNG", pnginfo=text, exif=exif_bytes(1, tag_010f="SecretCam"))
    result = compress(data)
    assert b"secret-text" not in result.data and b"SecretCam" not in result.data


# --- hostile input -------------------------------------------------------------------


def raises(code: str, data: bytes, **kwargs: object) -> ImageProcessingError:
    with pytest.raises(ImageProcessingError) as info:
        compress(data, **kwargs)
    assert info.value.code == code, info.value.message
    assert info.value.message and str(info.value) == info.value.message
    return info.value


NOT_IMAGES = {
    "empty": b"",
    "html": b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "psd": b"8BPS\x00\x01" + bytes(6) + b"\x00\x03\x00\x00\x00\x40\x00\x00\x00\x40\x00\x08\x00\x03" + bytes(64),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto showpage\n",
    "dos-eps": b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, 40, 0, 0, 0, 0) + b"\xff\xff" + b"%!PS" + bytes(60),
    "text": b"S. No.,Product Name,Input Image Urls\n1,SKU1,http://example.com/a.jpg\n",
    "garbage": random.Random(7).randbytes(4096),
    "zero-width-png": png_header_only(0, 16),
}


@pytest.mark.parametrize("name", NOT_IMAGES)
def test_not_an_image(name: str) -> None:
    raises("not_an_image", NOT_IMAGES[name])


@pytest.mark.parametrize(
    ("fmt", "params"), [("ICO", {}), ("PPM", {}), ("TGA", {}), ("PCX", {}), ("JPEG2000", {}), ("SGI", {}), ("DDS", {})]
)
def test_images_in_other_formats_are_refused(fmt: str, params: dict[str, object]) -> None:
    data = encode(Image.new("RGB", (32, 32), RED), fmt, **params)
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.format not in pipeline.ALLOWED_FORMATS
    raises("not_an_image", data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"])
def test_truncated_file_is_corrupt(fmt: str) -> None:
    rng = random.Random(3)
    noisy = Image.frombytes("RGB", (256, 256), rng.randbytes(256 * 256 * 3))
    data = encode(noisy, fmt)
    error = raises("corrupt_image", data[: len(data) // 2])
    if fmt != "WEBP":
        assert "truncated" in error.message


def test_png_with_broken_zlib_stream_is_corrupt() -> None:
    noisy = Image.frombytes("RGB", (64, 64), random.Random(3).randbytes(64 * 64 * 3))
    data = bytearray(encode(noisy, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6 : idat + 14] = b"\xff" * 8  # inside the deflate stream
    error = raises("corrupt_image", bytes(data))
    assert "broken data stream" in error.message


def test_png_bomb_is_refused_quickly_without_allocating() -> None:
    data = png_header_only(30000, 30000)
    assert len(data) < 100
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    raises("too_many_pixels", data)
    assert time.perf_counter() - started < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # 30000x30000 RGB would be 2.7 GB


def test_pillow_bomb_warning_is_an_error_even_when_our_limit_is_higher() -> None:
    # 100 MP is above Image.MAX_IMAGE_PIXELS (~89 MP) but below its error threshold.
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 100_000_000
    raises("too_many_pixels", png_header_only(10000, 10000), max_pixels=10**9)


def test_default_pixel_limit_is_checked_before_decoding() -> None:
    raises("too_many_pixels", png_header_only(8000, 8000))  # 64 MP > 50 MP, below Pillow's


def test_jpeg_header_bomb() -> None:
    data = bytearray(encode(Image.new("RGB", (16, 16), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    raises("too_many_pixels", bytes(data))


def test_pixel_limit_is_exact() -> None:
    raises("too_many_pixels", encode(Image.new("RGB", (101, 100)), "PNG"), max_pixels=10_000)
    result = compress(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=10_000)
    assert (result.width, result.height) == (100, 100)


def test_memory_error_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: ImageFile.ImageFile) -> None:
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    with pytest.raises(MemoryError):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"))


def test_non_decoder_exceptions_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    class SoftTimeLimitExceeded(Exception):
        pass

    def slow(self: ImageFile.ImageFile) -> None:
        raise SoftTimeLimitExceeded

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow)
    with pytest.raises(SoftTimeLimitExceeded):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"))


@pytest.mark.parametrize("exc", [ValueError("bad"), SyntaxError("bad"), struct.error("bad"), EOFError(), IndexError()])
def test_decoder_exceptions_become_corrupt_image(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def broken(self: ImageFile.ImageFile) -> None:
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    raises("corrupt_image", encode(Image.new("RGB", (8, 8)), "PNG"))


def test_pillow_safety_settings_are_untouched() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS is not None


def test_error_carries_code_and_message() -> None:
    error = ImageProcessingError("corrupt_image", "broken")
    assert (error.code, error.message, str(error)) == ("corrupt_image", "broken", "broken")


# --- output formats ------------------------------------------------------------------

PILLOW_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def photo_like(size: tuple[int, int] = (768, 512), seed: int = 1) -> Image.Image:
    """Fine texture and grain everywhere, so that every quality step shows in the score."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    base = 128 + 40 * np.sin(xx * 0.9) * np.sin(yy * 0.7) + rng.normal(0, 16, (size[1], size[0]))
    return Image.fromarray(np.stack([base, base * 0.9, base * 0.7 + 20], axis=2).clip(0, 255).astype(np.uint8))


def flat_packshot(size: tuple[int, int] = (768, 512)) -> Image.Image:
    im = Image.new("RGB", size, (250, 250, 250))
    im.paste((40, 110, 200), (size[0] // 3, size[1] // 4, 2 * size[0] // 3, 3 * size[1] // 4))
    return im


def open_output(result: CompressedImage) -> Image.Image:
    """Open the output, checking that its format and header agree with the result."""
    im = Image.open(io.BytesIO(result.data))
    assert im.format == PILLOW_FORMAT[result.format]
    assert im.size == (result.width, result.height)
    im.load()
    return im


def test_every_output_format_is_encodable_here() -> None:
    assert pipeline.OUTPUT_FORMATS == ("jpeg", "webp", "avif")
    assert pipeline.encodable_formats() == frozenset(pipeline.OUTPUT_FORMATS)


@pytest.mark.parametrize("output_format", pipeline.OUTPUT_FORMATS)
@pytest.mark.parametrize("max_dimension", [None, 200])
def test_each_format_decodes_as_itself_at_its_size(output_format: str, max_dimension: int | None) -> None:
    result = compress(
        encode(corner_image((400, 300), 100), "PNG"), output_format=output_format, max_dimension=max_dimension
    )
    assert (result.format, result.quality, result.score, result.kept_source) == (output_format, 50, None, False)
    out = open_output(result)
    assert out.size == ((400, 300) if max_dimension is None else (200, 150))
    assert_close(out.convert("RGB").getpixel((10, 10)), RED, 30)
    assert_close(out.convert("RGB").getpixel((out.width - 10, out.height - 10)), BLUE, 30)


@pytest.mark.parametrize("output_format", ["webp", "avif"])
def test_webp_and_avif_get_the_flattened_pixels_the_rgb_profile_and_no_metadata(output_format: str) -> None:
    icc = srgb_profile_bytes()
    src = Image.new("RGBA", (64, 32), (0, 0, 0, 0))
    src.paste((255, 0, 0, 255), (0, 0, 32, 32))
    data = encode(src, "PNG", icc_profile=icc, exif=exif_bytes(1, tag_010f="SecretCam"))
    result = compress(data, output_format=output_format)
    out = open_output(result)
    assert out.mode == "RGB"
    assert out.info.get("icc_profile") == icc
    assert not {"exif", "xmp"} & set(out.info)
    assert b"SecretCam" not in result.data
    assert_close(out.getpixel((8, 16)), RED, 20)
    assert_close(out.getpixel((56, 16)), WHITE, 6)


@pytest.mark.parametrize("output_format", ["webp", "avif"])
def test_webp_and_avif_drop_the_source_exif_and_xmp(output_format: str) -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = encode(Image.new("RGB", (64, 64), RED), "JPEG", exif=exif_bytes(1, tag_010f="SecretCam"), xmp=xmp)
    result = compress(data, output_format=output_format)
    assert not {"exif", "xmp"} & set(open_output(result).info)
    assert b"SecretCam" not in result.data and b"xmpmeta" not in result.data


@pytest.mark.parametrize("output_format", ["png", "JPEG", "gif", "", None, 3])
def test_unknown_output_format_is_refused(output_format: object) -> None:
    with pytest.raises(ValueError):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"), output_format=output_format)  # type: ignore[arg-type]


def test_a_format_this_pillow_cannot_encode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.features, "check", lambda name: name != "avif")
    assert pipeline.encodable_formats() == frozenset({"jpeg", "webp"})
    with pytest.raises(ValueError, match="avif"):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"), output_format="avif")


@pytest.mark.parametrize(("output_format", "limit"), [("jpeg", 65500), ("webp", 16383), ("avif", 32768)])
@pytest.mark.parametrize("quality", [50, None])
def test_a_side_longer_than_the_output_format_holds_is_shrunk_to_fit(
    output_format: str, limit: int, quality: int | None
) -> None:
    target = None if quality else 0.965
    for size, fitted in (((limit + 1, 16), (limit, 16)), ((16, 2 * limit), (8, limit))):
        shrunk = compress(
            encode(Image.new("RGB", size), "PNG"), output_format=output_format, quality=quality, target_score=target
        )
        assert (shrunk.width, shrunk.height) == fitted
        assert open_output(shrunk).size == fitted
    # max_dimension shrinks further, never past the format's side.
    assert compress(encode(Image.new("RGB", (limit + 1, 16)), "PNG"), output_format=output_format).width == limit
    fits = compress(
        encode(Image.new("RGB", (limit + 1, 16)), "PNG"),
        output_format=output_format,
        max_dimension=limit,
        quality=quality,
        target_score=target,
    )
    assert (fits.width, fits.height) == (limit, 16)
    assert open_output(fits).size == (limit, 16)


# --- prepare -------------------------------------------------------------------------


def test_prepare_returns_the_pixels_compress_encodes() -> None:
    data = encode(corner_image((640, 320), 160), "JPEG", quality=95, exif=exif_bytes(6))
    prepared = pipeline.prepare(data, max_dimension=160)
    assert (prepared.mode, prepared.size) == ("RGB", (80, 160))
    assert prepared.info == {}
    result = compress(data, max_dimension=160, quality=95)
    assert perceptual.ssim_luma(prepared, open_output(result)) > 0.97
    assert_close(prepared.getpixel(corner_point(TR, prepared.size, 15)), RED, 30)


def test_prepare_raises_as_compress_does() -> None:
    with pytest.raises(ImageProcessingError) as info:
        pipeline.prepare(png_header_only(8000, 8000))
    assert info.value.code == "too_many_pixels"
    with pytest.raises(ImageProcessingError) as info:
        pipeline.prepare(b"<html>")
    assert info.value.code == "not_an_image"
    with pytest.raises(ValueError):
        pipeline.prepare(b"x", max_dimension=0)


# --- quality=None (auto) -------------------------------------------------------------


@pytest.mark.parametrize("output_format", pipeline.OUTPUT_FORMATS)
@pytest.mark.parametrize("target", [0.93, 0.965])
def test_auto_reports_the_full_image_score_of_its_output(output_format: str, target: float) -> None:
    data = encode(photo_like(), "PNG")
    result = compress(data, quality=None, target_score=target, output_format=output_format)
    assert result.quality is not None and perceptual.QUALITY_MIN <= result.quality <= 95
    assert result.score is not None and result.score >= target
    recomputed = perceptual.ssim_luma(pipeline.prepare(data), Image.open(io.BytesIO(result.data)))
    assert result.score == recomputed
    assert open_output(result).size == (768, 512)


def test_auto_scores_the_resized_and_oriented_image() -> None:
    data = encode(photo_like((1200, 800)), "JPEG", quality=95, exif=exif_bytes(6))
    result = compress(data, quality=None, target_score=0.95, max_dimension=600)
    assert (result.width, result.height) == (400, 600)
    prepared = pipeline.prepare(data, max_dimension=600)
    assert result.score == perceptual.ssim_luma(prepared, Image.open(io.BytesIO(result.data)))
    assert result.score >= 0.95


def test_auto_gives_a_flat_image_a_lower_quality_than_a_detailed_one() -> None:
    flat = compress(encode(flat_packshot(), "PNG"), quality=None, target_score=0.965)
    detailed = compress(encode(photo_like(), "PNG"), quality=None, target_score=0.965)
    assert flat.quality is not None and detailed.quality is not None
    assert flat.quality < detailed.quality
    assert flat.score is not None and flat.score >= 0.965


def test_auto_on_a_gray_source() -> None:
    data = encode(photo_like().convert("L"), "JPEG", quality=95)
    result = compress(data, quality=None, target_score=0.95)
    assert result.score == perceptual.ssim_luma(pipeline.prepare(data), Image.open(io.BytesIO(result.data)))
    assert result.score >= 0.95


def test_auto_steps_up_when_the_whole_image_misses_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    def optimistic(image: Image.Image, target: float, **kwargs: object) -> perceptual.Choice:
        # the search's estimate overshoots: it claims the target at its lowest quality
        data = kwargs["encode"](image, perceptual.QUALITY_MIN)  # type: ignore[operator]
        return perceptual.Choice(perceptual.QUALITY_MIN, 0.999, data)

    monkeypatch.setattr(perceptual, "choose_quality", optimistic)
    data = encode(photo_like(), "PNG")
    prepared = pipeline.prepare(data)
    steps = [perceptual.QUALITY_MIN + n * perceptual.QUALITY_STEP for n in range(3)]
    full = [perceptual.ssim_luma(prepared, open_output(compress(data, quality=q))) for q in steps]
    assert full[0] < full[1] < full[2]

    for target, expected in [((full[0] + full[1]) / 2, steps[1]), ((full[1] + full[2]) / 2, steps[2])]:
        result = compress(data, quality=None, target_score=target)
        assert (result.quality, result.score) == (expected, full[steps.index(expected)])
        assert result.score >= target
    # out of reach of two steps: the second step's output, its score honestly below the target
    result = compress(data, quality=None, target_score=(full[2] + 1) / 2)
    assert (result.quality, result.score) == (steps[2], full[2])


def test_auto_never_goes_past_95(monkeypatch: pytest.MonkeyPatch) -> None:
    def at_ninety(image: Image.Image, target: float, **kwargs: object) -> perceptual.Choice:
        return perceptual.Choice(90, 0.0, kwargs["encode"](image, 90))  # type: ignore[operator]

    monkeypatch.setattr(perceptual, "choose_quality", at_ninety)
    result = compress(encode(photo_like(), "PNG"), quality=None, target_score=0.99999)
    assert result.quality == 95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quality": None},
        {"quality": None, "target_score": 0.0},
        {"quality": None, "target_score": 1.0},
        {"quality": None, "target_score": 1.5},
        {"quality": None, "target_score": True},
        {"quality": None, "target_score": "0.9"},
        {"quality": 50, "target_score": 0.9},
    ],
)
def test_auto_arguments_are_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        compress(encode(Image.new("RGB", (8, 8)), "PNG"), **kwargs)  # type: ignore[arg-type]


def test_auto_on_a_tiny_image_scores_the_whole_image() -> None:
    data = encode(photo_like((96, 64)), "PNG")
    result = compress(data, quality=None, target_score=0.9)
    assert result.score == perceptual.ssim_luma(pipeline.prepare(data), Image.open(io.BytesIO(result.data)))


# --- never_bigger --------------------------------------------------------------------


def small_jpeg(**params: object) -> bytes:
    """A photo-like JPEG saved at quality 40, with metadata: re-encoding it at 80 makes it bigger."""
    params = {"quality": 40, "comment": b"secret-comment", **params}
    if "exif" not in params:
        params["exif"] = exif_bytes(1, tag_010f="SecretCam")
    return encode(photo_like((320, 240)), "JPEG", **params)


def decoded_pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


@pytest.mark.parametrize("progressive", [False, True])
def test_never_bigger_keeps_a_smaller_source_as_it_is(progressive: bool) -> None:
    icc = srgb_profile_bytes()  # once: its header holds the time it was made
    source = small_jpeg(progressive=progressive, icc_profile=icc)
    bigger = compress(source, quality=80)
    assert len(bigger.data) > len(source) and not bigger.kept_source

    result = compress(source, quality=80, never_bigger=True)
    assert result.kept_source and result.format == "jpeg"
    assert (result.quality, result.score) == (None, None)
    assert len(result.data) <= len(source)
    assert (result.width, result.height, result.source_bytes) == (320, 240, len(source))
    assert decoded_pixels(result.data) == decoded_pixels(source)
    with Image.open(io.BytesIO(result.data)) as out:
        assert not {"exif", "xmp", "comment"} & set(out.info)
        assert out.info.get("icc_profile") == icc
    assert b"SecretCam" not in result.data and b"secret-comment" not in result.data


def test_never_bigger_under_auto_reports_a_perfect_score() -> None:
    source = small_jpeg()
    result = compress(source, quality=None, target_score=0.995, never_bigger=True)
    assert result.kept_source and (result.quality, result.score) == (None, 1.0)
    assert decoded_pixels(result.data) == decoded_pixels(source)


def test_never_bigger_keeps_a_gray_source() -> None:
    source = encode(photo_like((320, 240)).convert("L"), "JPEG", quality=40, comment=b"secret-comment")
    result = compress(source, quality=90, never_bigger=True)
    assert result.kept_source
    assert decoded_pixels(result.data) == decoded_pixels(source)


def test_never_bigger_keeps_only_the_first_picture_of_an_mpo() -> None:
    first, second = photo_like((320, 240)), photo_like((320, 240), seed=2)
    source = encode(first, "MPO", quality=40, save_all=True, append_images=[second])
    result = compress(source, quality=85, never_bigger=True)
    assert result.kept_source and result.source_format == "JPEG"
    with Image.open(io.BytesIO(result.data)) as out, Image.open(io.BytesIO(source)) as mpo:
        assert out.format == "JPEG" and getattr(out, "n_frames", 1) == 1
        assert out.tobytes() == mpo.tobytes()


def test_never_bigger_encodes_when_the_output_is_smaller() -> None:
    source = encode(photo_like((320, 240)), "JPEG", quality=95)
    result = compress(source, quality=50, never_bigger=True)
    assert not result.kept_source and result.quality == 50
    assert len(result.data) < len(source)


def cmyk_jpeg() -> bytes:
    return encode(photo_like((320, 240)).convert("CMYK"), "JPEG", quality=40)


def rgba_png() -> bytes:
    rgba = photo_like((320, 240)).convert("RGBA")
    rgba.putalpha(200)
    return encode(rgba, "PNG")


@pytest.mark.parametrize(
    ("source", "kwargs"),
    [
        (small_jpeg, {"max_dimension": 160}),
        (lambda: small_jpeg(exif=exif_bytes(6)), {}),
        (cmyk_jpeg, {}),
        (rgba_png, {}),
        (lambda: encode(photo_like((320, 240)), "PNG"), {}),
        (lambda: encode(photo_like((320, 240)), "WEBP", quality=20), {}),
        (small_jpeg, {"output_format": "webp", "quality": 95}),
        (small_jpeg, {"output_format": "avif", "quality": 95}),
        (lambda: small_jpeg(icc_profile=gray_profile_bytes()), {}),
    ],
    ids=["resize", "orientation-6", "cmyk", "alpha", "png", "webp-source", "webp-output", "avif-output", "gray-icc"],
)
def test_never_bigger_does_not_apply(source: object, kwargs: dict[str, object]) -> None:
    data = source()  # type: ignore[operator]
    kwargs = {"quality": 80, **kwargs}
    result = compress(data, never_bigger=True, **kwargs)  # type: ignore[arg-type]
    assert not result.kept_source and result.quality == kwargs["quality"]
    assert open_output(result).mode == "RGB"


def test_never_bigger_is_off_by_default() -> None:
    assert not compress(small_jpeg(), quality=80).kept_source


def test_never_bigger_encodes_a_source_the_marker_walk_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> bytes:
        raise jpeg_metadata.JpegStructureError("refused")

    monkeypatch.setattr(jpeg_metadata, "strip_metadata", refuse)
    result = compress(small_jpeg(), quality=80, never_bigger=True)
    assert not result.kept_source and result.quality == 80


# --- hostile input on the new paths --------------------------------------------------

NEW_PATHS = {
    "webp": {"output_format": "webp"},
    "avif": {"output_format": "avif"},
    "auto": {"quality": None, "target_score": 0.965},
    "auto-avif-never-bigger": {"quality": None, "target_score": 0.965, "output_format": "avif", "never_bigger": True},
    "never-bigger": {"never_bigger": True},
}


def truncated_jpeg() -> bytes:
    data = encode(Image.frombytes("RGB", (256, 256), random.Random(3).randbytes(256 * 256 * 3)), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize("path", list(NEW_PATHS))
@pytest.mark.parametrize(
    ("code", "data"),
    [
        ("not_an_image", NOT_IMAGES["garbage"]),
        ("not_an_image", NOT_IMAGES["html"]),
        ("too_many_pixels", png_header_only(8000, 8000)),
        ("corrupt_image", truncated_jpeg()),
    ],
    ids=["garbage", "html", "bomb", "truncated-jpeg"],
)
def test_hostile_input_fails_the_same_way_on_every_path(path: str, code: str, data: bytes) -> None:
    raises(code, data, **NEW_PATHS[path])  # type: ignore[arg-type]


def test_never_bigger_encodes_when_the_stripped_source_does_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jpeg_metadata, "strip_metadata", lambda data: b"\xff\xd8\xff\xd9")
    monkeypatch.setattr(jpeg_metadata, "frame_marker", lambda data: 0xC0)
    result = compress(small_jpeg(), quality=80, never_bigger=True)
    assert not result.kept_source and result.quality == 80


def test_auto_steps_up_past_the_search_on_a_tiny_image_too() -> None:
    data = encode(photo_like((96, 64)), "PNG")
    result = compress(data, quality=None, target_score=0.9999)  # out of reach: the search ends at its top, 90
    assert result.quality == 95
    assert result.score == perceptual.ssim_luma(pipeline.prepare(data), Image.open(io.BytesIO(result.data)))
