"""Hostile image sources, end to end: each one served from 127.0.0.2, uploaded through the real API,
processed by the real Celery worker, and followed in the status API to its final state.

Every case checks the image's ``error.code`` (and, where it matters, how many times the source was
asked and the ``attempts`` the status API reports). The elapsed times asserted here are hang guards,
not performance claims. The last test reads the worker processes' peak resident memory from /proc
after all of this, as a leak guard.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.handlers import drip, endless_body, hang, respond
from support.images import jpeg_bytes
from support.loopback import Handler, RequestHandler, serve

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

# Hang guards only: nothing here should take more than a fraction of them. Slow sources are tried
# 1 + FETCH_MAX_RETRIES times, up to 5 s each, with up to 2.5 + 4.5 + 8.5 s of back-off between.
HANG_GUARD_S = 60.0
SLOW_GUARD_S = 120.0
MIB = 1024 * 1024


# --- hostile bodies ----------------------------------------------------------


@functools.cache
def gzip_bomb(gib: int = 1) -> bytes:
    """About 1 MiB of gzip that inflates to ``gib`` GiB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    block = bytes(MIB)
    return b"".join(packer.compress(block) for _ in range(1024 * gib)) + packer.flush()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose IHDR claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\0" * 1024)  # a little data; the decoder never gets that far
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    whole = jpeg_bytes((640, 480))
    return whole[: len(whole) // 2]


def gif_huge_screen() -> bytes:
    """A 29-byte GIF whose logical screen and only frame claim 65535x65535 pixels."""
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00;"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 header is rewritten to claim width x height."""
    data = bytearray(jpeg_bytes((64, 48)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_text_bomb() -> bytes:
    """A 10x10 PNG with a zTXt chunk that inflates to 64 MiB (about 64 KiB on the wire)."""
    text = _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(64 * MIB), 9))
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\0" * (10 * 3 + 1) * 10))
    return b"\x89PNG\r\n\x1a\n" + ihdr + text + idat + _png_chunk(b"IEND", b"")


PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
# A Photoshop header (signature, version 1, reserved, 3 channels, 100x100, 8 bits, RGB): Pillow has a
# PSD plugin, so this is a real format the service must still refuse.
PSD = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 100, 100, 8, 3) + b"\0" * 256
HTML = b"<!doctype html><html><head><title>Not a photo</title></head><body><p>hello</p></body></html>"


def image_response(data: bytes, content_type: str = "image/jpeg") -> Handler:
    return respond(200, data, {"Content-Type": content_type})


def failing_then(failures: int, status: int, then: Handler) -> Handler:
    """Answer ``status`` to the first ``failures`` requests, then hand over to ``then``."""
    lock = threading.Lock()
    seen = 0

    def handler(request: RequestHandler) -> None:
        nonlocal seen
        with lock:
            seen += 1
            current = seen
        if current <= failures:
            request.send(status, b"busy, try later", {"Content-Type": "text/plain"})
        else:
            then(request)

    return handler


def redirect_to_self(request: RequestHandler) -> None:
    request.send(302, b"", {"Location": urlsplit(request.path).path})


@dataclass(frozen=True)
class Hostile:
    """One hostile source: how it answers, the error it must end in, how often it may be asked."""

    handler: Callable[[], Handler]
    code: str
    hits: int = 1


HOSTILE: dict[str, Hostile] = {
    "png_bomb_30000x30000": Hostile(lambda: image_response(png_bomb(30_000, 30_000), "image/png"), "too_many_pixels"),
    # Over the service's MAX_IMAGE_PIXELS (40M) but under Pillow's own bomb limit (~89M): the
    # service's check, not Pillow's, has to catch it, before any pixel is decoded.
    "png_bomb_8000x8000": Hostile(lambda: image_response(png_bomb(8_000, 8_000), "image/png"), "too_many_pixels"),
    "gif_bomb_65535x65535": Hostile(lambda: image_response(gif_huge_screen(), "image/gif"), "too_many_pixels"),
    "jpeg_sof_claims_65000x65000": Hostile(lambda: image_response(jpeg_claiming(65_000, 65_000)), "too_many_pixels"),
    # Pillow refuses text chunks that inflate past 1 MiB; the service reports it as undecodable.
    "png_ztxt_bomb": Hostile(lambda: image_response(png_text_bomb(), "image/png"), "corrupt_image"),
    "endless_body_close_delimited": Hostile(lambda: endless_body(headers={"Content-Type": "image/jpeg"}), "too_large"),
    "endless_body_chunked": Hostile(
        lambda: endless_body(chunked=True, headers={"Content-Type": "image/jpeg"}), "too_large"
    ),
    # The service asks for identity, but a server may compress anyway: the cap is on decoded bytes.
    "gzip_bomb_1_gib": Hostile(
        lambda: respond(200, gzip_bomb(), {"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}), "too_large"
    ),
    "gzip_gzip_bomb": Hostile(
        lambda: respond(
            200, gzip.compress(gzip_bomb(), 9), {"Content-Type": "image/jpeg", "Content-Encoding": "gzip, gzip"}
        ),
        "too_large",
    ),
    "content_length_6_mib": Hostile(lambda: image_response(b"\xff\xd8\xff" + bytes(6 * MIB - 3)), "too_large"),
    "html_as_jpeg": Hostile(lambda: image_response(HTML), "not_an_image"),
    "truncated_jpeg": Hostile(lambda: image_response(truncated_jpeg()), "corrupt_image"),
    "pdf_as_jpeg": Hostile(lambda: image_response(PDF), "not_an_image"),
    "psd_as_jpeg": Hostile(lambda: image_response(PSD), "not_an_image"),
    "empty_body": Hostile(lambda: image_response(b""), "not_an_image"),
    # A redirect to itself: followed FETCH_MAX_REDIRECTS (5) times after the first request, then given up.
    "redirect_loop": Hostile(lambda: redirect_to_self, "too_many_redirects", hits=6),
    "http_404": Hostile(lambda: respond(404, b"not here", {"Content-Type": "text/plain"}), "http_404"),
}


# --- helpers -----------------------------------------------------------------


def hits(source_server, url: str) -> int:
    return source_server.hits(urlsplit(url).path)


def run_single(service, url: str) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Upload a one-image CSV naming url; return the final status, its image and the elapsed time."""
    started = time.monotonic()
    response = upload(service.base_url, csv_of([(1, "SKU1", [url])]))
    assert response.status_code == 202, response.text
    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=HANG_GUARD_S)
    elapsed = time.monotonic() - started
    assert elapsed < HANG_GUARD_S
    images = [image for product in status["products"] for image in product["images"]]
    assert len(images) == 1
    return status, images[0], elapsed


def assert_failed_with(status: dict[str, Any], image: dict[str, Any], code: str) -> None:
    assert status["status"] == "FAILED", status
    assert image["status"] == "FAILED", image
    assert image["output_url"] is None
    assert image["error"]["code"] == code, image
    assert image["error"]["message"]
    assert status["progress"]["failed_images"] == 1 and status["progress"]["percent"] == 100.0


# --- the cases ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_source_fails_with_its_code(service, source_server, name):
    case = HOSTILE[name]
    url = serve(source_server, case.handler(), name=name)

    status, image, elapsed = run_single(service, url)

    assert_failed_with(status, image, case.code)
    # None of these is transient: one request to the source, one attempt.
    assert hits(source_server, url) == case.hits
    assert image["attempts"] == 1
    print(f"\n[hostile] {name}: {image['error']['code']} in {elapsed:.2f}s")


SLOW = {
    # Accepts, reads the request, never answers: the read timeout (2 s) ends each try.
    "hang": hang,
    # One body byte every 0.5 s: no read ever waits past the read timeout; only the whole-call
    # deadline (FETCH_TOTAL_TIMEOUT_S, 5 s) can end it.
    "drip_body": lambda: drip(jpeg_bytes((64, 48)), 0.5, {"Content-Type": "image/jpeg"}),
    # The same with the status line and headers dripped too.
    "drip_headers": lambda: drip(jpeg_bytes((64, 48)), 0.5, {"Content-Type": "image/jpeg"}, drip_headers=True),
}


def test_slow_sources_time_out_after_retries(service, source_server):
    """Three requests at once (the worker has two processes), each naming one slow source."""
    urls = {
        name: serve(source_server, factory if name == "hang" else factory(), name=f"{name}.jpg")
        for name, factory in SLOW.items()
    }
    started = time.monotonic()
    request_ids = {}
    for name, url in urls.items():
        response = upload(service.base_url, csv_of([(1, "SKU1", [url])]))
        assert response.status_code == 202, response.text
        request_ids[name] = response.json()["request_id"]

    # download_timeout is transient: the first try and FETCH_MAX_RETRIES (3) retries, no more.
    tries = 1 + int(service.env.get("FETCH_MAX_RETRIES", "3"))
    for name, request_id in request_ids.items():
        status = wait_final(service.base_url, request_id, timeout_s=SLOW_GUARD_S)
        elapsed = time.monotonic() - started
        assert elapsed < SLOW_GUARD_S
        image = status["products"][0]["images"][0]
        assert_failed_with(status, image, "download_timeout")
        assert hits(source_server, urls[name]) == tries
        assert image["attempts"] == tries
        print(f"\n[hostile] {name}: download_timeout after {image['attempts']} attempts, final by {elapsed:.2f}s")


def test_source_that_is_busy_twice_then_answers(service, source_server):
    url = serve(source_server, failing_then(2, 503, image_response(jpeg_bytes((320, 240)))), name="flaky.jpg")

    status, image, elapsed = run_single(service, url)

    assert status["status"] == "COMPLETED", status
    assert image["status"] == "COMPLETED" and image["error"] is None
    assert hits(source_server, url) == 3
    assert image["attempts"] == 3
    fetched = requests.get(image["output_url"], timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(fetched.content)).size == (320, 240)
    print(f"\n[hostile] 503, 503, 200: COMPLETED after 3 attempts in {elapsed:.2f}s")


def test_good_and_hostile_in_one_request(service, source_server):
    good = [serve(source_server, jpeg_bytes((200 + 40 * n, 150)), name=f"good{n}.jpg") for n in range(3)]
    bad = {name: serve(source_server, HOSTILE[name].handler(), name=name) for name in HOSTILE}
    rows = [
        (1, "Mixed", [good[0], bad["png_bomb_30000x30000"], bad["http_404"]]),
        (2, "GoodAndHtml", [good[1], bad["html_as_jpeg"]]),
        (3, "AllGood", [good[2], good[0]]),
        (
            4,
            "AllBad",
            [
                bad["endless_body_close_delimited"],
                bad["truncated_jpeg"],
                bad["content_length_6_mib"],
                bad["pdf_as_jpeg"],
            ],
        ),
        (5, "Rest", [bad["psd_as_jpeg"], bad["endless_body_chunked"], bad["png_bomb_8000x8000"], good[1]]),
        (6, "More", [bad["empty_body"], bad["redirect_loop"]]),
        (7, "Gzip", [bad["gzip_bomb_1_gib"], bad["gzip_gzip_bomb"]]),
        (8, "Bombs", [bad["gif_bomb_65535x65535"], good[2], bad["jpeg_sof_claims_65000x65000"], bad["png_ztxt_bomb"]]),
    ]
    assert {url for _, _, urls in rows for url in urls} == {*good, *bad.values()}
    started = time.monotonic()
    response = upload(service.base_url, csv_of(rows))
    assert response.status_code == 202, response.text

    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=HANG_GUARD_S)

    assert time.monotonic() - started < HANG_GUARD_S
    assert status["status"] == "COMPLETED_WITH_ERRORS", status
    code_of = {url: name for name, url in bad.items()}
    outputs = set()
    for product, (_, _, urls) in zip(status["products"], rows, strict=True):
        assert [image["input_url"] for image in product["images"]] == urls
        for image in product["images"]:
            if image["input_url"] in good:
                assert image["status"] == "COMPLETED" and image["error"] is None, image
                outputs.add(image["output_url"])
            else:
                expected = HOSTILE[code_of[image["input_url"]]].code
                assert image["status"] == "FAILED" and image["error"]["code"] == expected, image
    assert [p["status"] for p in status["products"]] == [
        "COMPLETED_WITH_ERRORS",
        "COMPLETED_WITH_ERRORS",
        "COMPLETED",
        "FAILED",
        "COMPLETED_WITH_ERRORS",
        "FAILED",
        "FAILED",
        "COMPLETED_WITH_ERRORS",
    ]
    # Every distinct good URL is one image (the same URL in two products is downloaded once).
    assert len(outputs) == 3
    for output in outputs:
        fetched = requests.get(output, timeout=10)
        assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"
    entries = [url for _, _, urls in rows for url in urls]
    good_entries = sum(1 for url in entries if url in good)
    assert status["progress"] == {
        "total_images": len(entries),
        "completed_images": good_entries,
        "failed_images": len(entries) - good_entries,
        "pending_images": 0,
        "percent": 100.0,
    }
    for name, url in [*((f"good{n}", url) for n, url in enumerate(good)), *bad.items()]:
        assert hits(source_server, url) == (HOSTILE[name].hits if name in HOSTILE else 1), name


# --- the worker's memory -------------------------------------------------------


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _kib(value: str) -> int:
    number, unit = value.split()
    assert unit == "kB", value
    return int(number)


def _is_celery_worker(argv: list[str]) -> bool:
    return any(os.path.basename(arg) == "celery" for arg in argv) and "app:celery_app" in argv and "worker" in argv


def _is_image_worker(argv: list[str]) -> bool:
    queues = argv[argv.index("--queues") + 1].split(",") if "--queues" in argv[:-1] else []
    return _is_celery_worker(argv) and "images" in queues


def _processes() -> dict[int, tuple[list[str], dict[str, str]]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [arg.decode(errors="replace") for arg in (entry / "cmdline").read_bytes().split(b"\0") if arg]
            found[int(entry.name)] = (argv, _proc_status(int(entry.name)))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def test_worker_peak_memory_after_hostile_sources(service, tmp_path_factory):
    """Run last in this file: VmHWM is each process's peak RSS over its whole life so far."""
    processes = _processes()
    # The fixture's image worker is a child of this pytest process (other runs on the machine have their own).
    mains = [
        pid
        for pid, (argv, status) in processes.items()
        if _is_image_worker(argv) and int(status["PPid"]) == os.getpid()
    ]
    assert len(mains) == 1, f"expected one worker started by this run, found {mains}"
    main = mains[0]
    children = sorted(
        pid for pid, (argv, status) in processes.items() if int(status["PPid"]) == main and _is_celery_worker(argv)
    )
    assert children, "the worker has no pool processes"
    report = {
        "main": {"pid": main, "VmHWM_kib": _kib(processes[main][1]["VmHWM"])},
        "children": [
            {
                "pid": pid,
                "VmHWM_kib": _kib(processes[pid][1]["VmHWM"]),
                "VmRSS_kib": _kib(processes[pid][1]["VmRSS"]),
            }
            for pid in children
        ],
    }
    peak = max(child["VmHWM_kib"] for child in report["children"])
    report["peak_child_VmHWM_mib"] = round(peak / 1024, 1)
    out = tmp_path_factory.getbasetemp() / "worker_memory.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\n[memory] worker pool peak RSS (VmHWM): {report['peak_child_VmHWM_mib']} MiB; {json.dumps(report)}")
    print(f"[memory] written to {out}")
    assert peak < 1024 * 1024, report  # a leak guard: under 1 GiB
