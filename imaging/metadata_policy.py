"""What metadata an output keeps from its source: the copyright, the creator and the IPTC digital source type.

Everything else (camera, GPS, dates, software, thumbnails, other XMP) is dropped; a request with ``strip=all``
keeps nothing, which is an empty ``KeptMetadata``. The ICC profile is not metadata here: the encoders carry it.

Each field is read from XMP first, then EXIF, then IPTC IIM (JPEG and TIFF), and is written back as XMP
(``dc:rights``, ``dc:creator``, ``Iptc4xmpExt:DigitalSourceType``) and, but for the source type that EXIF has
no tag for, as EXIF (Copyright, Artist). Several creators are one string joined with "; ", as the Metadata
Working Group's guidelines reconcile EXIF Artist with ``dc:creator``; EXIF text is UTF-8, as they recommend.
Reading never raises on malformed metadata: a block that does not parse is ignored, and the others still count.
"""

from __future__ import annotations

import codecs
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from PIL import Image, ImageFile, IptcImagePlugin, TiffImagePlugin

#: The longest field kept, in characters; the rest is cut off.
MAX_FIELD_CHARS = 1000
#: A larger XMP packet is not parsed (so its fields are not kept): 1 MB.
MAX_XMP_BYTES = 1 << 20
#: The output formats ``encoder_arguments`` knows.
OUTPUT_FORMATS = frozenset({"jpeg", "webp", "avif"})

_ARTIST, _COPYRIGHT = 0x013B, 0x8298
_IIM_BYLINE, _IIM_COPYRIGHT, _IIM_CHARSET = (2, 80), (2, 116), (1, 90)
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_CREATOR_SEPARATOR = "; "
# What XML 1.0 cannot carry (most C0 controls, lone surrogates, U+FFFE/U+FFFF): dropped, so the packet parses.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# XMP may be UTF-16 (marked so); it is UTF-8 otherwise. (UTF-32, allowed too, is not read.)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# What Pillow raises on a malformed EXIF block (a bad or short TIFF header: it skips bad tags with a warning)
# and on a malformed IIM block (a bad dataset marker, length or size field), found by fuzzing both.
_BAD_EXIF = (SyntaxError, struct.error, ValueError)
_BAD_IIM = (SyntaxError, struct.error, OSError)


@dataclass(frozen=True)
class KeptMetadata:
    """The metadata an output carries over from its source; every field None is ``strip=all``."""

    #: The copyright notice (XMP ``dc:rights`` x-default, EXIF Copyright, IIM 2:116 Copyright Notice).
    copyright: str | None = None
    #: The creators, joined with "; " (XMP ``dc:creator``, EXIF Artist, IIM 2:80 By-line).
    creator: str | None = None
    #: The IPTC NewsCodes URI saying how the image was made, e.g.
    #: "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia" for generative AI.
    digital_source_type: str | None = None

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to keep."""
        return not (self.copyright or self.creator or self.digital_source_type)


def read_kept(image: Image.Image) -> KeptMetadata:
    """The fields of ``image`` (opened; its pixels need not be loaded) that the policy keeps.

    Never raises on malformed metadata: a block that does not parse is ignored. A PNG's chunks after its pixel
    data (rare: Pillow and most tools write metadata before) are only seen once the image is loaded; this never
    loads it.
    """
    xmp = _xmp_fields(image.info.get("xmp"))
    artist, exif_copyright = _exif_fields(image)
    byline, iim_copyright = _iim_fields(image)
    return KeptMetadata(
        copyright=xmp.get("rights") or exif_copyright or iim_copyright,
        creator=xmp.get("creator") or artist or byline,
        digital_source_type=xmp.get("DigitalSourceType"),
    )


def xmp_packet(kept: KeptMetadata) -> bytes:
    """A minimal XMP packet (UTF-8) carrying the kept fields; b"" when there are none."""
    if kept.is_empty:
        return b""
    properties = []
    if kept.copyright:
        text = escape(_writable(kept.copyright))
        properties.append(f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:rights>')
    if kept.creator:
        names = "".join(
            f"<rdf:li>{escape(name)}</rdf:li>" for name in _writable(kept.creator).split(_CREATOR_SEPARATOR)
        )
        properties.append(f"<dc:creator><rdf:Seq>{names}</rdf:Seq></dc:creator>")
    if kept.digital_source_type:
        text = escape(_writable(kept.digital_source_type))
        properties.append(f"<Iptc4xmpExt:DigitalSourceType>{text}</Iptc4xmpExt:DigitalSourceType>")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{_RDF}">'
        f'<rdf:Description rdf:about="" xmlns:dc="{_DC}" xmlns:Iptc4xmpExt="{_IPTC_EXT}">'
        f"{''.join(properties)}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def exif_bytes(kept: KeptMetadata) -> bytes:
    """An EXIF block ("Exif\\0\\0" and a TIFF header) with only Artist and Copyright; b"" when neither is kept."""
    exif = Image.Exif()
    # Bytes, because Pillow writes a str as ASCII with "?" for every other character.
    if kept.creator:
        exif[_ARTIST] = _writable(kept.creator).encode()
    if kept.copyright:
        exif[_COPYRIGHT] = _writable(kept.copyright).encode()
    return exif.tobytes() if len(exif) else b""


def encoder_arguments(kept: KeptMetadata, output_format: str) -> dict[str, bytes]:
    """Keyword arguments for Pillow's ``save`` as ``output_format`` ("jpeg", "webp" or "avif") that make the
    output carry the kept fields and no other EXIF or XMP.

    Both keys are always there, empty when nothing is kept, to override whatever the image's ``info`` holds.

    Raises:
        ValueError: ``output_format`` is not one of those.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"no metadata policy for output format {output_format!r}")
    # Pillow 13's JPEG, WebP and AVIF writers all take both, as bytes; JPEG caps each at 64 KB, far above ours.
    return {"exif": exif_bytes(kept), "xmp": xmp_packet(kept)}


def _xmp_fields(packet: object) -> dict[str, str]:
    """``rights``, ``creator`` and ``DigitalSourceType`` from an XMP packet, those it has."""
    text = _packet_text(packet)
    if text is None:
        return {}
    # Entities are declared only in a DOCTYPE: refusing it refuses entity expansion and external entities.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return {}
    try:
        root = ET.fromstring(text)  # noqa: S314 - no DOCTYPE (above), so none of the attacks defusedxml stops
    except ET.ParseError:
        return {}
    found: dict[str, str] = {}
    for rdf in root.iter(f"{{{_RDF}}}RDF"):
        for description in rdf.findall(f"{{{_RDF}}}Description"):
            for key, namespace in (("rights", _DC), ("creator", _DC), ("DigitalSourceType", _IPTC_EXT)):
                if key not in found and (value := _clean(_property(description, f"{{{namespace}}}{key}"))):
                    found[key] = value
    return found


def _packet_text(packet: object) -> str | None:
    """The packet as text, when it is text or bytes within ``MAX_XMP_BYTES``."""
    if isinstance(packet, str):
        return packet.rstrip("\x00") if len(packet) <= MAX_XMP_BYTES else None
    if not isinstance(packet, bytes) or len(packet) > MAX_XMP_BYTES:
        return None
    return packet.decode("utf-16" if packet.startswith(_UTF16_BOMS) else "utf-8", "replace").rstrip(
        "\x00"
    )  # some writers pad with NULs


def _property(description: ET.Element, name: str) -> str | None:
    """The value of property ``name`` of an ``rdf:Description``: an attribute, a simple element, or an array's
    items (a language alternative's x-default item, else its first; every item of a sequence or a bag)."""
    if (value := description.get(name)) is not None:
        return value
    element = description.find(name)
    if element is None:
        return None
    if (resource := element.get(f"{{{_RDF}}}resource")) is not None:
        return resource
    for kind in ("Alt", "Seq", "Bag"):
        if (array := element.find(f"{{{_RDF}}}{kind}")) is not None:
            items = array.findall(f"{{{_RDF}}}li")
            if kind == "Alt":
                items = [item for item in items if item.get(_XML_LANG) == "x-default"] or items[:1]
            return _CREATOR_SEPARATOR.join(text.strip() for item in items if (text := item.text) and text.strip())
    return element.text


def _exif_fields(image: Image.Image) -> tuple[str | None, str | None]:
    """(Artist, Copyright) from the image's EXIF, or a TIFF's own tags."""
    try:
        if isinstance(image, TiffImagePlugin.TiffImageFile):
            tags = image.tag_v2
        else:
            # Not image.getexif(): for a PNG without EXIF before its pixels, that decodes the whole image.
            tags = Image.Exif()
            if isinstance(raw := image.info.get("exif"), bytes) and raw:
                tags.load(raw)
        return _exif_text(tags.get(_ARTIST)), _exif_text(tags.get(_COPYRIGHT))
    except _BAD_EXIF:
        return None, None


def _exif_text(value: object) -> str | None:
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")  # how Pillow decodes ASCII fields: undone, to read them as UTF-8
        except UnicodeEncodeError:
            return _clean(value)
    if not isinstance(value, bytes):
        return None
    # Copyright may be "photographer\0editor".
    parts = _decode(value).split("\x00")
    return _clean(_CREATOR_SEPARATOR.join(part.strip() for part in parts if part.strip()))


def _iim_fields(image: Image.Image) -> tuple[str | None, str | None]:
    """(By-line, Copyright Notice) from the image's IPTC IIM block (JPEG APP13 or TIFF tag 33723)."""
    if not isinstance(image, ImageFile.ImageFile):
        return None, None
    try:
        iim = IptcImagePlugin.getiptcinfo(image)
    except _BAD_IIM:
        return None, None
    if not iim:
        return None, None
    utf8 = iim.get(_IIM_CHARSET) == b"\x1b%G"

    def text(key: tuple[int, int]) -> str | None:
        values = iim.get(key)
        values = values if isinstance(values, list) else [values]
        decoded = [value.decode("utf-8", "replace") if utf8 else _decode(value) for value in values if value]
        return _clean(_CREATOR_SEPARATOR.join(decoded))

    return text(_IIM_BYLINE), text(_IIM_COPYRIGHT)


def _decode(data: bytes) -> str:
    """UTF-8 when the bytes are UTF-8, else Latin-1 (what older writers meant)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _clean(value: str | None) -> str | None:
    """``value`` without characters XML cannot carry, trimmed, cut to ``MAX_FIELD_CHARS``; None when empty."""
    if value is None:
        return None
    value = _NOT_XML.sub("", value).strip()[:MAX_FIELD_CHARS].strip()
    return value or None


def _writable(value: str) -> str:
    """``value`` as written: without what XML cannot carry (so the packet parses), within ``MAX_FIELD_CHARS``."""
    return _NOT_XML.sub("", value)[:MAX_FIELD_CHARS]
