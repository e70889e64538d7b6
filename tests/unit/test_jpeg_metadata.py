"""jpeg_metadata.strip_metadata: the same JPEG data without its metadata, and a clean refusal of anything else."""

from __future__ import annotations

import io
import random
import struct
import time

import numpy as np
import pytest
from PIL import Image, ImageCms

from imaging.jpeg_metadata import WEB_FRAMES, JpegStructureError, frame_marker, strip_metadata

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
SECRET_MAKE = "SecretCam"
COMMENT = b"secret-comment"


def photo(size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Gradients and grain: enough detail that every block codes something."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    base = 100 + 60 * np.sin(xx / 9) * np.cos(yy / 7) + rng.normal(0, 20, (size[1], size[0]))
    rgb = np.stack([base, base * 0.8 + 30, 255 - base], axis=2)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def exif_with_make() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = SECRET_MAKE
    return exif.tobytes()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def jpeg(im: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", **params)
    return out.getvalue()


def tagged_jpeg(progressive: bool = False, icc: bytes | None = None, **params: object) -> bytes:
    return jpeg(
        photo(),
        quality=80,
        progressive=progressive,
        exif=exif_with_make(),
        xmp=XMP,
        comment=COMMENT,
        icc_profile=icc or srgb_icc(),
        **params,
    )


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


def markers(data: bytes) -> list[int]:
    """The marker codes of the segments of a canonical JPEG (no fill bytes), scans skipped over."""
    found, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        found.append(marker)
        if marker == 0xD9:
            break
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:
            while not (data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0, 0xD8))):
                pos += 1
    return found


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_pixels_and_profile_stay_while_exif_xmp_and_comment_go(progressive: bool) -> None:
    icc = srgb_icc()
    data = tagged_jpeg(progressive, icc)
    with Image.open(io.BytesIO(data)) as before:
        assert {"exif", "xmp", "comment", "icc_profile"} <= set(before.info)
    stripped = strip_metadata(data)
    assert len(stripped) < len(data)
    assert pixels(stripped) == pixels(data)
    with Image.open(io.BytesIO(stripped)) as after:
        assert after.format == "JPEG"
        assert not {"exif", "xmp", "comment"} & set(after.info)
        assert after.info["icc_profile"] == icc
        assert bool(after.info.get("progressive")) == progressive
    for secret in (b"Exif\x00\x00", SECRET_MAKE.encode(), b"xmpmeta", COMMENT):
        assert secret not in stripped
    if progressive:
        assert markers(stripped).count(0xDA) > 1
    assert frame_marker(stripped) == (0xC2 if progressive else 0xC0)


def test_a_profile_in_several_chunks_is_kept_whole() -> None:
    icc = srgb_icc().ljust(150_000, b"\x00")  # three APP2 chunks of at most 65519 bytes
    data = jpeg(photo(), icc_profile=icc, exif=exif_with_make())
    stripped = strip_metadata(data)
    assert markers(stripped).count(0xE2) == 3
    with Image.open(io.BytesIO(stripped)) as after:
        assert after.info["icc_profile"] == icc
    assert pixels(stripped) == pixels(data)


@pytest.mark.parametrize("params", [{"restart_marker_blocks": 3}, {"restart_marker_rows": 1}])
def test_restart_markers_are_kept(params: dict[str, int]) -> None:
    data = jpeg(photo(), quality=90, comment=COMMENT, **params)
    assert b"\xff\xd0" in data and b"\xff\xdd" in data
    stripped = strip_metadata(data)
    assert 0xDD in markers(stripped)
    assert stripped.count(b"\xff\xd0") == data.count(b"\xff\xd0")
    assert pixels(stripped) == pixels(data)


def test_gray_and_cmyk_adobe_jpegs_keep_their_pixels() -> None:
    gray = jpeg(photo().convert("L"), comment=COMMENT)
    assert pixels(strip_metadata(gray)) == pixels(gray)
    cmyk = jpeg(photo().convert("CMYK"), comment=COMMENT)
    assert b"Adobe" in cmyk
    stripped = strip_metadata(cmyk)
    assert b"Adobe" in stripped and 0xEE in markers(stripped)
    assert pixels(stripped) == pixels(cmyk)


def test_the_jfif_header_stays_without_its_thumbnail() -> None:
    data = jpeg(photo(), dpi=(300, 300))
    app0 = data.index(b"\xff\xe0")
    thumbnail = bytes([2, 1]) + bytes(2 * 1 * 3)  # a 2x1 RGB thumbnail, in place of "none" (0, 0)
    length = struct.unpack(">H", data[app0 + 2 : app0 + 4])[0] + len(thumbnail) - 2
    body = data[app0 + 4 : app0 + 16]  # JFIF\0, version, units, densities
    with_thumbnail = data[:app0] + b"\xff\xe0" + struct.pack(">H", length) + body + thumbnail + data[app0 + 18 :]
    assert pixels(with_thumbnail) == pixels(data)
    stripped = strip_metadata(with_thumbnail)
    assert stripped[2:4] == b"\xff\xe0" and stripped[6:11] == b"JFIF\x00"
    assert stripped == strip_metadata(data)
    with Image.open(io.BytesIO(stripped)) as after:
        assert after.info["dpi"] == (300, 300)


def test_what_follows_the_image_goes() -> None:
    first, second = photo(), photo().transpose(Image.Transpose.ROTATE_180)
    mpo = io.BytesIO()
    first.save(mpo, "MPO", save_all=True, append_images=[second])
    stripped = strip_metadata(mpo.getvalue())
    with Image.open(io.BytesIO(stripped)) as after:
        assert after.format == "JPEG" and getattr(after, "n_frames", 1) == 1
    with Image.open(io.BytesIO(mpo.getvalue())) as before:
        before.load()
        assert pixels(stripped)[2] == before.tobytes()
    data = jpeg(photo())
    assert strip_metadata(data + b"trailing junk \xff\xd8\xff\xe1") == strip_metadata(data)


def test_fill_bytes_between_segments_are_dropped() -> None:
    data = jpeg(photo())
    dqt = data.index(b"\xff\xdb")
    padded = data[:dqt] + b"\xff\xff\xff" + data[dqt:]
    assert pixels(padded) == pixels(data)
    assert strip_metadata(padded) == strip_metadata(data)


def test_accepts_bytearray_and_memoryview() -> None:
    data = tagged_jpeg()
    assert strip_metadata(bytearray(data)) == strip_metadata(memoryview(data)) == strip_metadata(data)
    assert frame_marker(data) in WEB_FRAMES


def _scan_start(data: bytes) -> int:
    sos = data.index(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]


def _broken_inputs() -> dict[str, bytes]:
    data = jpeg(photo())
    sof = data.index(b"\xff\xc0")
    sos = data.index(b"\xff\xda")
    return {
        "empty": b"",
        "not a jpeg": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "soi only": b"\xff\xd8",
        "soi and eoi": b"\xff\xd8\xff\xd9",
        "truncated in the tables": data[: sof + 3],
        "truncated in the scan": data[: _scan_start(data) + 100],
        "no eoi": data[:-2],
        "length past the end": data[:sof] + b"\xff\xc0\xff\xff" + data[sof + 4 :],
        "length below 2": data[:sof] + b"\xff\xc0\x00\x01" + data[sof + 4 :],
        "scan before frame": data[:sof] + data[sos:],
        "two frames": data[:sos] + data[sof : sof + 2 + struct.unpack(">H", data[sof + 2 : sof + 4])[0]] + data[sos:],
        "junk between segments": data[:sof] + b"junk" + data[sof:],
        "restart marker outside a scan": data[:sof] + b"\xff\xd0" + data[sof:],
        "second soi": data[:sof] + b"\xff\xd8" + data[sof:],
        "reserved marker": data[:sof] + b"\xff\xc8\x00\x02" + data[sof:],
        "only fill bytes after soi": b"\xff\xd8" + b"\xff" * 1000,
    }


@pytest.mark.parametrize("name", list(_broken_inputs()))
def test_malformed_or_truncated_input_raises_the_structure_error(name: str) -> None:
    data = _broken_inputs()[name]
    with pytest.raises(JpegStructureError):
        strip_metadata(data)
    with pytest.raises(JpegStructureError):
        frame_marker(data)
    assert issubclass(JpegStructureError, ValueError)


def test_random_truncations_and_mutations_raise_nothing_else() -> None:
    rng = random.Random(11)
    data = tagged_jpeg(progressive=True, restart_marker_blocks=2)
    started = time.perf_counter()
    outcomes = {"stripped": 0, "refused": 0}
    for attempt in range(600):
        case = bytearray(data[: rng.randrange(len(data) + 1)] if attempt % 3 == 0 else data)
        for _ in range(rng.randrange(1, 6)):
            if case:
                at = rng.randrange(len(case))
                case[at] = rng.choice((0xFF, 0x00, 0xD9, 0xDA, rng.randrange(256)))
        try:
            result = strip_metadata(bytes(case))
        except JpegStructureError:
            outcomes["refused"] += 1
        else:
            outcomes["stripped"] += 1
            assert len(result) <= len(case)
    assert outcomes["stripped"] and outcomes["refused"]
    assert time.perf_counter() - started < 10


def test_a_huge_claimed_length_is_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(JpegStructureError):
        strip_metadata(b"\xff\xd8\xff\xe1\xff\xff" + bytes(10))
    with pytest.raises(JpegStructureError):
        strip_metadata(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100_000)  # comments only: no scan, no end
    assert time.perf_counter() - started < 1
