"""Which failures are the file's (``corrupt_image``) and which are ours (they propagate out of compress).

Only Pillow's calls on the source (open, load, the first conversion of its palette and transparency) turn
what they raise into ImageProcessingError; an exception raised by our own steps, the encoders or the
quality search must reach the caller as it is.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from imaging import budget, colour, encode, keep_source, orientation, perceptual, resize
from imaging.pipeline import ImageProcessingError, compress


def png_bytes(size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def palette_png_with_overlong_trns() -> bytes:
    """A 4x4 palette PNG whose tRNS chunk has 300 entries: Pillow loads it, then refuses to apply it."""
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    rows = b"".join(b"\0" + bytes(4) for _ in range(4))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"PLTE", bytes(768))
        + _chunk(b"tRNS", b"\x01" * 300)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def tiff_with_undefined_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed UNDEFINED: Pillow's load() raises TypeError on it."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        if struct.unpack_from("<H", data, entry)[0] == 273:
            struct.pack_into("<H", data, entry + 2, 7)
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def test_a_palette_pillow_refuses_to_apply_is_corrupt() -> None:
    with pytest.raises(ImageProcessingError) as info:
        compress(palette_png_with_overlong_trns())
    assert info.value.code == "corrupt_image"
    assert "palette index out of range" in info.value.message


def test_a_type_error_from_pillows_loader_on_a_hostile_tiff_is_corrupt() -> None:
    with pytest.raises(ImageProcessingError) as info:
        compress(tiff_with_undefined_strip_offsets())
    assert info.value.code == "corrupt_image"
    assert "TypeError" in info.value.message


OUR_BUGS = [TypeError("bug"), AttributeError("bug"), AssertionError("bug"), RuntimeError("bug"), ValueError("bug")]


def _raise(exc: BaseException):
    def broken(*args: object, **kwargs: object) -> object:
        raise exc

    return broken


@pytest.mark.parametrize("exc", OUR_BUGS, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize(
    ("module", "name", "options"),
    [
        pytest.param(module, name, options, id=f"{module.__name__}.{name}")
        for module, name, options in [
            (resize, "target_size", {}),
            (orientation, "exif_orientation", {}),
            (keep_source, "_needs_no_change", {"never_bigger": True}),
            (colour, "is_rgb_profile", {}),
            (encode, "encode_image", {}),
            (budget, "estimate", {}),
            (perceptual, "choose_quality", {"quality": None, "target_score": 0.965}),
        ]
    ],
)
def test_an_exception_of_our_own_code_propagates(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, options: dict[str, object], exc: BaseException
) -> None:
    monkeypatch.setattr(module, name, _raise(exc))
    data = png_bytes() if module is not keep_source else jpeg_bytes()
    with pytest.raises(type(exc)) as info:
        compress(data, **options)  # type: ignore[arg-type]
    assert info.value is exc


def test_a_type_error_in_the_working_mode_conversion_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversion is guarded for Pillow's ValueError only: a TypeError there is ours."""
    monkeypatch.setattr(colour, "_working_image", _raise(TypeError("bug")))
    with pytest.raises(TypeError):
        compress(png_bytes())
