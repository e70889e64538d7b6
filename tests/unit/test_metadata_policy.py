"""metadata_policy: an output keeps its source's copyright, creator and IPTC digital source type, and nothing else."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from PIL import ExifTags, Image, TiffImagePlugin, features
from PIL.PngImagePlugin import PngInfo

from imaging.metadata_policy import (
    MAX_FIELD_CHARS,
    OUTPUT_FORMATS,
    KeptMetadata,
    encoder_arguments,
    exif_bytes,
    read_kept,
    xmp_packet,
)

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_KEPT = KeptMetadata(copyright="© 2026 Ada & Bob <studio>", creator="Ada Zoë; Bob Stone", digital_source_type=AI)
SOURCE_XMP = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="SecretTool 9"
   xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="51,30.0N"
   xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" Iptc4xmpExt:DigitalSourceType="{AI}">
  <dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">
   <rdf:Seq><rdf:li>Ada Zoë</rdf:li><rdf:li>Bob Stone</rdf:li></rdf:Seq></dc:creator>
  <dc:rights xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Alt>
   <rdf:li xml:lang="fr">Tous droits réservés</rdf:li>
   <rdf:li xml:lang="x-default">© 2026 Ada &amp; Bob &lt;studio&gt;</rdf:li></rdf:Alt></dc:rights>
 </rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>""".encode()
#: Strings of the source's metadata that no output may carry.
DROPPED = (b"CamMakeXYZ", b"CamModelXYZ", b"GPSDATUMXYZ", b"SecretTool", b"GPSLatitude", b"Photoshop 3.0", b"droits")
SOURCE_FORMATS = ["JPEG", "PNG", "WEBP", "AVIF", "TIFF"]


def source_exif(artist: str = "Exif Artist", copyright: str = "Exif Copyright") -> Image.Exif:
    """EXIF with the two kept fields, a camera, and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = artist
    exif[ExifTags.Base.Copyright] = copyright
    exif[ExifTags.Base.Make] = "CamMakeXYZ"
    exif[ExifTags.Base.Model] = "CamModelXYZ"
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSMapDatum: "GPSDATUMXYZ"}
    return exif


def iim_segment(*datasets: tuple[int, int, bytes]) -> bytes:
    """A JPEG APP13 segment with a Photoshop IPTC-NAA resource holding these IIM datasets."""
    iim = b"".join(
        b"\x1c" + bytes([record, number]) + len(value).to_bytes(2, "big") + value for record, number, value in datasets
    )
    resource = b"8BIM\x04\x04\x00\x00" + len(iim).to_bytes(4, "big") + iim + b"\x00" * (len(iim) % 2)
    body = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + (len(body) + 2).to_bytes(2, "big") + body


def pixels() -> Image.Image:
    return Image.linear_gradient("L").resize((96, 64)).convert("RGB")


def source(fmt: str, *, xmp: bytes | None = SOURCE_XMP, exif: Image.Exif | None = None, iim: bytes = b"") -> bytes:
    """An image file as ``fmt`` carrying ``xmp`` and ``exif`` (by default: all of the test's metadata)."""
    exif = source_exif() if exif is None else exif
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        pixels().save(out, fmt, exif=exif.tobytes(), pnginfo=info)
    elif fmt == "TIFF":
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        for tag in (ExifTags.Base.Artist, ExifTags.Base.Copyright, ExifTags.Base.Make, ExifTags.Base.Model):
            if tag in exif:
                tags[tag] = exif[tag]
        if xmp:
            tags[TiffImagePlugin.XMP] = xmp
        pixels().save(out, fmt, tiffinfo=tags)
    else:
        pixels().save(out, fmt, exif=exif.tobytes(), **({"xmp": xmp} if xmp else {}))
    data = out.getvalue()
    return data[:2] + iim + data[2:] if iim else data


def encode(image: Image.Image, fmt: str, kept: KeptMetadata) -> bytes:
    out = io.BytesIO()
    speed = {"speed": 9} if fmt == "avif" else {}
    image.save(out, fmt.upper(), quality=60, **speed, **encoder_arguments(kept, fmt))
    return out.getvalue()


def with_xmp(packet: bytes | str) -> Image.Image:
    image = Image.new("RGB", (1, 1))
    image.info["xmp"] = packet
    return image


def test_every_output_format_is_available() -> None:
    assert features.check("webp") and features.check("avif") and features.check("jpg")


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_xmp_comes_first(fmt: str) -> None:
    with Image.open(io.BytesIO(source(fmt))) as image:
        assert read_kept(image) == XMP_KEPT


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_exif_comes_second(fmt: str) -> None:
    with Image.open(io.BytesIO(source(fmt, xmp=None))) as image:
        assert read_kept(image) == KeptMetadata(copyright="Exif Copyright", creator="Exif Artist")


def test_iim_comes_last() -> None:
    iim = iim_segment((2, 80, b"Iim One"), (2, 80, b"Iim Tw\xf6"), (2, 116, b"Iim Copyright"))
    with Image.open(io.BytesIO(source("JPEG", xmp=None, exif=Image.Exif(), iim=iim))) as image:
        assert read_kept(image) == KeptMetadata(copyright="Iim Copyright", creator="Iim One; Iim Twö")
    with Image.open(io.BytesIO(source("JPEG", iim=iim))) as image:
        assert read_kept(image) == XMP_KEPT


def test_iim_declared_utf8_is_utf8() -> None:
    iim = iim_segment((1, 90, b"\x1b%G"), (2, 80, "Zoë".encode()))
    with Image.open(io.BytesIO(source("JPEG", xmp=None, exif=Image.Exif(), iim=iim))) as image:
        assert read_kept(image).creator == "Zoë"


def test_reading_does_not_load_the_pixels() -> None:
    out = io.BytesIO()
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", SOURCE_XMP.decode())
    pixels().save(out, "PNG", pnginfo=info)  # no EXIF: Pillow's getexif() would decode the image to look further
    with Image.open(out) as image:
        assert read_kept(image) == XMP_KEPT
        assert image.tile, "the PNG was decoded"


@pytest.mark.parametrize("source_format", SOURCE_FORMATS)
@pytest.mark.parametrize("output_format", sorted(OUTPUT_FORMATS))
def test_an_output_carries_the_kept_fields_and_nothing_else(source_format: str, output_format: str) -> None:
    with Image.open(io.BytesIO(source(source_format))) as image:
        data = encode(image, output_format, read_kept(image))  # the source's own info holds all its metadata
    with Image.open(io.BytesIO(data)) as output:
        assert read_kept(output) == XMP_KEPT
        exif = output.getexif()
        assert set(exif) == {ExifTags.Base.Artist, ExifTags.Base.Copyright}
        assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert exif[ExifTags.Base.Artist].encode("latin-1").decode() == "Ada Zoë; Bob Stone"  # UTF-8, not "?"
    for dropped in DROPPED:
        assert dropped not in data


def test_strip_all_leaves_no_exif_or_xmp() -> None:
    kept = KeptMetadata()
    assert kept.is_empty and xmp_packet(kept) == b"" and exif_bytes(kept) == b""
    for fmt in sorted(OUTPUT_FORMATS):
        assert encoder_arguments(kept, fmt) == {"exif": b"", "xmp": b""}
        with Image.open(io.BytesIO(source("JPEG", iim=iim_segment((2, 80, b"Iim One"))))) as image:
            data = encode(image, fmt, kept)
        with Image.open(io.BytesIO(data)) as output:
            assert "exif" not in output.info and "xmp" not in output.info
            assert read_kept(output).is_empty
        for marker in (b"Exif\x00\x00", b"MM\x00*", b"II*\x00", b"xmpmeta", b"http://ns.adobe.com/xap", *DROPPED):
            assert marker not in data, (fmt, marker)


def test_exif_alone_is_kept_as_exif_and_xmp() -> None:
    kept = KeptMetadata(creator="Solo")
    assert encoder_arguments(kept, "jpeg")["xmp"]
    with Image.open(io.BytesIO(encode(pixels(), "jpeg", kept))) as output:
        assert read_kept(output) == kept
        assert set(output.getexif()) == {ExifTags.Base.Artist}


def test_the_packet_is_well_formed_whatever_the_text() -> None:
    kept = KeptMetadata(
        copyright='<a href="x">&amp;</a> \x01\x1b', creator='O\'Neil; "Q" & <R>', digital_source_type=AI
    )
    packet = xmp_packet(kept)
    ET.fromstring(packet)
    assert read_kept(with_xmp(packet)) == KeptMetadata(
        copyright='<a href="x">&amp;</a>', creator='O\'Neil; "Q" & <R>', digital_source_type=AI
    )


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        pytest.param('dc:creator="Attr" dc:rights="Attr rights"', KeptMetadata("Attr rights", "Attr"), id="attributes"),
        pytest.param(
            f">\n<Iptc4xmpExt:DigitalSourceType>{AI}</Iptc4xmpExt:DigitalSourceType",
            KeptMetadata(digital_source_type=AI),
            id="element",
        ),
        pytest.param(
            f'>\n<Iptc4xmpExt:DigitalSourceType rdf:resource="{AI}"/',
            KeptMetadata(digital_source_type=AI),
            id="resource",
        ),
        pytest.param(
            "><dc:rights><rdf:Alt><rdf:li xml:lang='de'>Erst</rdf:li><rdf:li>Zweit</rdf:li></rdf:Alt></dc:rights"
            "><dc:creator><rdf:Bag><rdf:li>One</rdf:li><rdf:li/><rdf:li>Two</rdf:li></rdf:Bag></dc:creator",
            KeptMetadata(copyright="Erst", creator="One; Two"),
            id="alt-without-default-and-bag",
        ),
        pytest.param('photoshop:Credit="Credit line" xmp:CreatorTool="Tool"', KeptMetadata(), id="other-fields"),
    ],
)
def test_xmp_forms(description: str, expected: KeptMetadata) -> None:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        f' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" {description}>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    for form in (packet, packet.encode(), packet.encode("utf-16"), packet.encode() + b"\x00\x00"):
        assert read_kept(with_xmp(form)) == expected


def test_fields_are_capped() -> None:
    kept = read_kept(with_xmp(xmp_packet(KeptMetadata(creator="x" * 5000))))
    assert kept.creator == "x" * MAX_FIELD_CHARS
    assert len(exif_bytes(KeptMetadata(copyright="é" * 5000))) < 2 * MAX_FIELD_CHARS + 100


def test_an_exif_copyright_of_photographer_and_editor() -> None:
    image = Image.open(io.BytesIO(source("JPEG", xmp=None, exif=source_exif(copyright="Phot\x00Edit"))))
    assert read_kept(image).copyright == "Phot; Edit"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="&lol3;"/></rdf:RDF></x:xmpmeta>"""
EXTERNAL_ENTITY = BILLION_LAUGHS.replace(b'<!ENTITY lol "lol">', b'<!ENTITY lol SYSTEM "file:///etc/passwd">')


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(BILLION_LAUGHS.decode().encode("utf-16"), id="billion-laughs-utf16"),
        pytest.param(SOURCE_XMP[: len(SOURCE_XMP) // 2], id="truncated"),
        pytest.param(SOURCE_XMP.replace(b"<?xpacket end", b" " * (2 << 20) + b"<?xpacket end"), id="2MB"),
        pytest.param(b"<a>" * 150_000 + b"</a>" * 150_000, id="deep"),
        pytest.param(b"\xff\xfe\x00garbage\x00", id="garbage"),
        pytest.param(12, id="not-bytes"),
    ],
)
def test_hostile_xmp_is_ignored(packet: object) -> None:
    assert read_kept(with_xmp(packet)) == KeptMetadata()  # type: ignore[arg-type]


def test_hostile_xmp_in_a_file_leaves_the_rest_readable() -> None:
    big = SOURCE_XMP.replace(b"<?xpacket end", b" " * (2 << 20) + b"<?xpacket end")
    for packet in (BILLION_LAUGHS, big):
        with Image.open(io.BytesIO(source("WEBP", xmp=packet))) as image:
            assert read_kept(image) == KeptMetadata(copyright="Exif Copyright", creator="Exif Artist")


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00",
        b"Exif\x00\x00garbage!",
        b"Exif\x00\x00MM\x00*",
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01",
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_hostile_exif_is_ignored(exif: bytes) -> None:
    image = with_xmp(b"")
    image.info["exif"] = exif
    assert read_kept(image) == KeptMetadata()


@pytest.mark.parametrize(
    "iim",
    [
        b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x05\x1c\x02\x50\xff\xff",
        b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x06\x1c\x99\x50\x00\x01X",
        b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x04\x1c\x02\x50\x00",
    ],
)
def test_hostile_iim_is_ignored(iim: bytes) -> None:
    segment = b"\xff\xed" + (len(iim) + 2).to_bytes(2, "big") + iim
    with Image.open(io.BytesIO(source("JPEG", xmp=None, exif=Image.Exif(), iim=segment))) as image:
        assert read_kept(image) == KeptMetadata()


def test_an_unknown_output_format_is_refused() -> None:
    with pytest.raises(ValueError, match="png"):
        encoder_arguments(XMP_KEPT, "png")
