"""Remove metadata from a JPEG without re-encoding it, so that it decodes to the very same pixels.

A walk over the file's markers (ITU-T T.81 Annex B) that copies what decoding needs and the entropy-coded
scans byte for byte, and drops the rest: Exif and XMP (APP1), Photoshop/IPTC (APP13), every other APPn
segment, comments and anything after the end of the image (an MPO's second picture, trailing junk).
Pure Python; the scans are searched with ``bytes.find``, so the cost is a few ms per MB.
"""

from __future__ import annotations

from collections.abc import Iterator

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_APP0, _APP2, _APP14, _COM = 0xE0, 0xE2, 0xEE, 0xFE
_RST = range(0xD0, 0xD8)
# SOF0-3, 5-7, 9-11, 13-15; 0xC4 (DHT), 0xC8 (reserved JPG) and 0xCC (DAC) sit between them.
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Frame types every browser decodes: Huffman-coded baseline, extended sequential and progressive.
WEB_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
# What decoding needs besides the frames and scans: DHT, DAC, DQT, DNL, DRI, DHP, EXP.
_TABLES = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF})
_APPS = frozenset(range(0xE0, 0xF0))
_JFIF = b"JFIF\x00"
_ICC = b"ICC_PROFILE\x00"
_ADOBE = b"Adobe"


class JpegStructureError(ValueError):
    """The bytes are not a JPEG this module can walk: no SOI, a truncated segment, no scan or no EOI."""


def strip_metadata(data: bytes | bytearray | memoryview) -> bytes:
    """The same JPEG without its metadata; its scans (so its pixels) unchanged.

    Kept: the tables, the frame header, every scan (with its restart markers), the JFIF header (without
    its thumbnail), the ICC profile (APP2 ``ICC_PROFILE`` chunks: what the pixels' colours mean) and the
    Adobe segment (APP14: whether the samples are YCbCr). Fill bytes between segments are dropped.

    Raises:
        JpegStructureError: the input is malformed or truncated. The result is never larger than the input.
    """
    data = _as_bytes(data)
    view = memoryview(data)
    parts: list[bytes | memoryview] = [b"\xff\xd8"]
    for marker, start, end in _segments(data):
        if marker == _APP0:
            if data.startswith(_JFIF, start + 2) and end - start >= 16:
                # Version, units and densities; the thumbnail (often stale after an edit) goes.
                parts.append(b"\xff\xe0\x00\x10" + data[start + 2 : start + 14] + b"\x00\x00")
        elif marker in _APPS or marker == _COM:
            if (marker == _APP2 and data.startswith(_ICC, start + 2)) or (
                marker == _APP14 and data.startswith(_ADOBE, start + 2)
            ):
                parts.append(view[start - 2 : end])
        else:
            parts.append(view[start - 2 : end])  # the marker, then the segment (or the scan) as it is
    return b"".join(parts)


def frame_marker(data: bytes | bytearray | memoryview) -> int:
    """The SOFn marker code of the JPEG's frame (0xC0 baseline, 0xC2 progressive, ...).

    Raises:
        JpegStructureError: as strip_metadata.
    """
    frame = 0
    for marker, _start, _end in _segments(_as_bytes(data)):
        if not frame and marker in _FRAMES:
            frame = marker
    return frame  # never 0: the walk refuses a scan before a frame, and a file without a scan


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()


def _segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment after SOI, up to and including EOI.

    ``data[start:end]`` is the segment from its length field on; an SOS segment's end extends over its
    entropy-coded data, so that a scan comes out whole. Every step moves forward, so the walk ends.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise JpegStructureError("not a JPEG: no start-of-image marker")
    pos = 2
    seen_frame = seen_scan = False
    while True:
        if pos >= n:
            raise JpegStructureError("truncated: no end-of-image marker")
        if data[pos] != 0xFF:
            raise JpegStructureError(f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise JpegStructureError("truncated: no end-of-image marker")
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            if not seen_scan:
                raise JpegStructureError("no scan before the end-of-image marker")
            yield marker, pos, pos
            return
        if not (marker in _FRAMES or marker in _TABLES or marker in _APPS or marker in (_SOS, _COM)):
            raise JpegStructureError(f"unexpected marker 0xFF{marker:02X} at byte {pos - 2}")
        if pos + 2 > n:
            raise JpegStructureError("truncated inside a segment header")
        length = data[pos] << 8 | data[pos + 1]
        end = pos + length
        if length < 2 or end > n:
            raise JpegStructureError(f"segment 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file")
        if marker in _FRAMES:
            if seen_frame:
                raise JpegStructureError("a second frame header")
            seen_frame = True
        elif marker == _SOS:
            if not seen_frame:
                raise JpegStructureError("a scan before the frame header")
            seen_scan = True
            end = _scan_end(data, end)
        yield marker, pos, end
        pos = end


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at ``pos`` ends: at the first marker that is not RSTn.

    Inside a scan 0xFF is followed by 0x00 (a stuffed data byte), by RSTn, or by more 0xFF (fill).
    """
    n = len(data)
    while True:
        found = data.find(b"\xff", pos)
        if found < 0:
            raise JpegStructureError("truncated inside a scan: no marker after its data")
        after = found + 1
        while after < n and data[after] == 0xFF:
            after += 1
        if after >= n:
            raise JpegStructureError("truncated inside a scan: no marker after its data")
        if data[after] == 0x00 or data[after] in _RST:
            pos = after + 1
            continue
        return found
