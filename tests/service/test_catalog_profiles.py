"""Catalog outputs over HTTP with a real worker: marketplace profiles and their compliance reports, canvases,
byte caps, named renditions, refusals of bad plans, near-duplicates and the metadata policy (see the API notes
of output_plan/fields.py and reading/planned_outputs.py).

Every source is drawn here, so that what each rule reads of it is known: a "scene" is a smooth gradient with a
few discs and Gaussian noise (no two corners alike, so a trim finds no border in it), like a photo.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import ExifTags, Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from support.api import csv_of, upload, wait_final
from support.loopback import serve, wait_until

from imaging import metadata_policy, renditions
from models import Request, db
from output_plan import fields

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

#: The rule codes in the order every answer lists them (compliance.rules.RULES).
RULE_ORDER = (
    "min_size",
    "min_longest_side",
    "max_size",
    "max_pixels",
    "max_bytes",
    "aspect_ratio",
    "format",
    "white_background",
    "product_fill",
    "added_border",
    "transparency",
)
AI_MADE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GPS_IFD = 0x8825
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
#: The renditions test's three sources.
SIZES = ((1200, 900), (500, 400), (900, 600))


# --- sources --------------------------------------------------------------------------------------


def scene(size: tuple[int, int], seed: int = 0, sigma: float = 8.0) -> Image.Image:
    """A photo-like RGB picture: gradients, six discs and noise; its four corners all differ."""
    width, height = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    red = 50 + 160 * x + 0 * y
    green = 70 + 130 * y + 0 * x
    blue = 140 + 80 * np.sin(6 * x + 4 * y + seed)
    image = Image.fromarray(np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(min(size) // 10, min(size) // 4))
        colour = tuple(int(c) for c in rng.integers(30, 230, 3))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, sigma, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 90} | save if fmt == "JPEG" else save))
    return out.getvalue()


def framed(inner: Image.Image, band: int = 20, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """``inner`` inside a solid frame ``band`` pixels thick."""
    image = Image.new("RGB", (inner.width + 2 * band, inner.height + 2 * band), colour)
    image.paste(inner, (band, band))
    return image


def cutout() -> bytes:
    """A 400x300 RGBA PNG: an opaque 240x200 elliptic product at (80, 50) on a fully transparent background."""
    image = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    mask = Image.new("L", (240, 200), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, 239, 199), fill=255)
    image.paste(scene((240, 200), seed=7).convert("RGBA"), (80, 50), mask)
    return encoded(image, "PNG")


def on_grey() -> bytes:
    """A 600x600 studio shot: a red disc on a mid-grey backdrop with sensor noise (too noisy to trim)."""
    backdrop = np.clip(128 + np.random.default_rng(1).normal(0, 12, (600, 600, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(backdrop)
    ImageDraw.Draw(image).ellipse((150, 150, 450, 450), fill=(200, 40, 40))
    return encoded(image)


def source(server, body: bytes, name: str = "img.jpg") -> str:
    content_type = {"png": "image/png", "jpg": "image/jpeg"}[name.rsplit(".", 1)[1]]
    return serve(server, body, content_type, name=name)


class TaggedSource:
    """A JPEG behind a URL of its own that has an ETag: 304 to a GET that sends it, else 200; records each."""

    def __init__(self, server, body: bytes) -> None:
        self.body = body
        self.answers: list[int] = []
        self._lock = threading.Lock()
        path = f"/{uuid.uuid4().hex}/tagged.jpg"
        server.route(path, self._handle)
        self.url = server.url(path)

    def _handle(self, request) -> None:
        status = 304 if request.headers.get("If-None-Match") == '"v1"' else 200
        with self._lock:
            self.answers.append(status)
        request.send(status, self.body if status == 200 else b"", {"Content-Type": "image/jpeg", "ETag": '"v1"'})


# --- the service ----------------------------------------------------------------------------------


def completed(service, body: bytes, status: str = "COMPLETED", **form: str) -> dict:
    created = upload(service.base_url, body, **form)
    assert created.status_code == 202, created.text
    final = wait_final(service.base_url, created.json()["request_id"])
    assert final["status"] == status, json.dumps(final)[:3000]
    return final


def images_of(status: dict) -> list[dict]:
    return [image for product in status["products"] for image in product["images"]]


def fetched(url: str) -> bytes:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    return response.content


def opened(url: str) -> Image.Image:
    image = Image.open(io.BytesIO(fetched(url)))
    image.load()
    return image


def csv_rows(service, request_id: str, name: str) -> list[dict[str, str]]:
    response = requests.get(service.url(f"/api/requests/{request_id}/{name}"), timeout=10)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def request_count(service) -> int:
    with service.app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Request))
        db.session.remove()
    return count


def scraped(service, name: str) -> float:
    """Sample ``name`` at the API's scrape, which adds up every worker process's files."""
    response = requests.get(service.url("/metrics"), timeout=30)
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    )


def decodes(service) -> float:
    """How many sources the workers decoded (observations of DECODE_SECONDS)."""
    return scraped(service, "imgsvc_image_decode_seconds_count")


def check_compliance(service, final: dict, profile: str, expected: dict[str, tuple]) -> None:
    """Each image's report (``expected``: input URL -> (verdict, source failures, changes, output failures)) in
    the status and the report CSV, and the request's summary as counted from ``expected``."""
    assert final["profile"] == profile
    answered = {image["input_url"]: image["compliance"] for image in images_of(final)}
    assert set(answered) == set(expected)
    for url, (verdict, source_failures, changes, output_failures) in expected.items():
        assert answered[url] == {
            "verdict": verdict,
            "source_failures": source_failures,
            "changes": changes,
            "fixed": [code for code in source_failures if code not in output_failures],
            "output_failures": output_failures,
        }, url
    rows = {row["Input Image Url"]: row for row in csv_rows(service, final["request_id"], "report.csv")}
    assert set(rows) == set(expected)
    for url, (verdict, source_failures, changes, output_failures) in expected.items():
        fixed = [code for code in source_failures if code not in output_failures]
        reported = [rows[url][column] for column in ("Compliance", "Source Failures", "Changes", "Fixed")]
        assert [*reported, rows[url]["Output Failures"]] == [
            verdict,
            " ".join(source_failures),
            " ".join(changes),
            " ".join(fixed),
            " ".join(output_failures),
        ], url
    verdicts = Counter(verdict for verdict, *_ in expected.values())
    sources = Counter(code for _, failures, _, _ in expected.values() for code in failures)
    outputs = Counter(code for *_, failures in expected.values() for code in failures)
    assert final["compliance"] == {
        "profile": profile,
        "checked": len(expected),
        "passing_as_uploaded": verdicts["pass"],
        "fixed": verdicts["fixed"],
        "still_failing": verdicts["failing"],
        "by_rule": {
            code: {"source": sources[code], "output": outputs[code]}
            for code in RULE_ORDER
            if sources[code] or outputs[code]
        },
    }
    assert list(final["compliance"]["by_rule"]) == [code for code in RULE_ORDER if sources[code] or outputs[code]]


# --- 1. profiles and compliance -------------------------------------------------------------------


def test_google_merchant_upscales_a_small_photo_and_trims_an_added_frame(service, source_server):
    """google_merchant presets contain, trim 12, a 500 px least side with upscaling, and checks min_size and
    added_border. A 300x200 photo is enlarged to 750x500; a PNG photo of 600x500 in a 20 px black frame is
    cut back to exactly its 600x500 (a PNG: the frame's inner edge is exact, see the JPEG case below)."""
    small = source(source_server, encoded(scene((300, 200), seed=1)))
    inner = scene((600, 500), seed=3)
    bordered = source(source_server, encoded(framed(inner), "PNG"), name="framed.png")
    final = completed(service, csv_of([(1, "Small", [small]), (2, "Framed", [bordered])]), profile="google_merchant")

    check_compliance(
        service,
        final,
        "google_merchant",
        {
            small: ("fixed", ["min_size"], ["upscaled"], []),
            bordered: ("fixed", ["added_border"], ["trimmed", "converted"], []),
        },
    )
    got_small, got_bordered = images_of(final)
    with opened(got_small["output_url"]) as output:
        assert (output.format, output.size) == ("JPEG", (750, 500))
        assert (got_small["width"], got_small["height"]) == (750, 500)
    with opened(got_bordered["output_url"]) as output:
        assert output.size == inner.size == (got_bordered["width"], got_bordered["height"])
        # No black left at any edge: the frame went, not only most of it.
        edges = np.concatenate(
            [np.asarray(output)[[0, -1]].reshape(-1, 3), np.asarray(output)[:, [0, -1]].reshape(-1, 3)]
        )
        assert (edges.max(axis=1) > 40).mean() > 0.99

    # The same photo with upscaling turned off: kept at 300x200, still failing, and the image still completes.
    kept_small = completed(service, csv_of([(1, "Small", [small])]), profile="google_merchant", upscale="false")
    check_compliance(service, kept_small, "google_merchant", {small: ("failing", ["min_size"], [], ["min_size"])})
    [image] = images_of(kept_small)
    assert image["status"] == "COMPLETED" and kept_small["renditions"][0]["canvas"]["upscale"] is False
    # A profile looks for near-duplicates unless told not to; the same URL sent again is no duplicate of itself.
    assert kept_small["duplicates"] is True and kept_small["duplicate_images"] == 0
    assert image["duplicate_of"] is None
    with opened(image["output_url"]) as output:
        assert output.size == (300, 200)


def test_amazon_main_flattens_and_pads_to_a_square_and_a_photo_on_grey_still_fails(service, source_server):
    """amazon_main presets pad to 1:1 on white with a 4% margin, trim 12, a 1000 px least side with upscaling;
    it checks min_longest_side, white_background, product_fill, added_border and transparency.

    - The transparent PNG (400x300, a 240x200 elliptic product) fails transparency, min_longest_side and
      product_fill (its box spans 200/300 = 0.67 < 0.85); flattened onto white, trimmed to the product and
      padded, it fills 920 of a 1000x1000 JPEG: fixed.
    - The 3:2 scene (600x400) becomes a 1000x1000 square, padded (aspect_ratio is no rule of this profile).
    - The red disc on a noisy mid-grey backdrop (too noisy to trim) fails white_background. Padding with white
      does not repaint the grey: white_background stays in output_failures and the verdict is failing. The
      white padding round a rectangular picture reads as an added border too, so the padded scene fails both.
      (This holds since compliance/measure.py reads the white ring inside a frame found; when it read the
      outer 2% ring, which the 4% white margin always covers, the service called both FIXED.)
    """
    transparent = source(source_server, cutout(), name="cutout.png")
    wide = source(source_server, encoded(scene((600, 400), seed=5)))
    grey = source(source_server, on_grey())
    body = csv_of([(1, "Cutout", [transparent]), (2, "Wide", [wide]), (3, "Grey", [grey])])
    final = completed(service, body, profile="amazon_main")

    padded_photo = (
        "failing",
        ["min_longest_side", "white_background"],
        ["upscaled", "padded"],
        ["white_background", "added_border"],
    )
    check_compliance(
        service,
        final,
        "amazon_main",
        {
            transparent: (
                "fixed",
                ["min_longest_side", "product_fill", "transparency"],
                ["flattened", "trimmed", "upscaled", "padded", "converted"],
                [],
            ),
            wide: padded_photo,
            grey: padded_photo,
        },
    )
    assert "aspect_ratio" not in final["compliance"]["by_rule"]
    flat, square, padded_grey = images_of(final)
    for image in (flat, square, padded_grey):
        assert (image["status"], image["width"], image["height"]) == ("COMPLETED", 1000, 1000)
    with opened(flat["output_url"]) as output:
        assert (output.format, output.mode, output.size) == ("JPEG", "RGB", (1000, 1000))
        for corner in ((0, 0), (999, 0), (0, 999), (999, 999), (500, 30), (30, 500)):
            assert all(channel >= 252 for channel in output.getpixel(corner)), corner
    with opened(square["output_url"]) as output:
        pixels = np.asarray(output).astype(int)
        # 600x400 scaled to 920x613 on a 1000x1000 white square: white above and below, the scene between.
        assert pixels[:150].min() >= 240 and pixels[-150:].min() >= 240
        assert pixels[200:800, 100:900].min() < 200
    with opened(padded_grey["output_url"]) as output:
        # The grey backdrop is still there, inside a white frame.
        backdrop = np.asarray(output)[60:140, 60:140].astype(int)
        assert 100 < backdrop.mean() < 160


def boxed_product() -> bytes:
    """A packshot as Amazon asks for one: a 300x420 upright box (a noisy coloured scene) centred on a pure
    white 600x600 background."""
    image = Image.new("RGB", (600, 600), (255, 255, 255))
    image.paste(scene((300, 420), seed=17), (150, 90))
    return encoded(image, "PNG")


def test_a_box_shaped_product_on_pure_white_passes_amazon_main(service, source_server):
    """A box on pure white, the product filling 92% once trimmed and padded, is what amazon_main asks for: its
    output must pass every rule. The service finds a "frame" (the white margin round the box's straight edges,
    borders.frame) so the output fails added_border, and reads the white ring inside that frame, which is the
    box itself, so it fails white_background: verdict failing."""
    url = source(source_server, boxed_product(), name="box.png")
    final = completed(service, csv_of([(1, "Box", [url])]), profile="amazon_main")
    [image] = images_of(final)
    assert image["compliance"]["output_failures"] == []
    assert image["compliance"]["verdict"] == "fixed"


def test_a_frame_round_a_jpeg_photo_is_found_and_trimmed_away(service, source_server):
    """The bordered photo of the google_merchant test, saved as a JPEG at quality 90: its source must fail
    added_border and the output be the inner 600x500 photo. The service finds no frame (source_failures [],
    verdict pass) and trims to 603x505, a dark line of the frame left on each side."""
    inner = scene((600, 500), seed=3)
    bordered = source(source_server, encoded(framed(inner), quality=90))
    final = completed(service, csv_of([(1, "Framed", [bordered])]), profile="google_merchant")
    [image] = images_of(final)
    assert image["compliance"]["source_failures"] == ["added_border"]
    assert (image["width"], image["height"]) == (600, 500)


def test_other_profiles_fix_aspect_format_and_oversize_sources(service, source_server):
    """zalando (pad to 1801x2600, JPEG only, 1:1.44) and shopify (within 2048 px, at most 4472 px a side and
    4472x4472 pixels) fix what the amazon and google cases cannot fail: aspect_ratio, format, max_size and
    max_pixels. (max_bytes, at 16 or 20 MB, cannot be failed here: the service fetches at most 5 MB.)"""
    png_scene = source(source_server, encoded(scene((600, 400), seed=5), "PNG"), name="scene.png")
    final = completed(service, csv_of([(1, "Landscape", [png_scene])]), profile="zalando")
    check_compliance(
        service,
        final,
        "zalando",
        {
            png_scene: (
                "failing",
                ["min_size", "aspect_ratio", "format", "white_background"],
                ["upscaled", "padded", "converted"],
                ["white_background", "added_border"],
            )
        },
    )
    [image] = images_of(final)
    with opened(image["output_url"]) as output:
        assert (output.format, output.size) == ("JPEG", (1801, 2600))

    # 4600x4500: 20.7 MP > 4472^2 and 4600 > 4472. A smooth gradient: small to fetch, quick to decode.
    ramp = Image.linear_gradient("L").resize((4600, 4500))
    huge_image = Image.merge(
        "RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("L", ramp.size, 90))
    )
    huge = source(source_server, encoded(huge_image, quality=85))
    final = completed(service, csv_of([(1, "Huge", [huge])]), profile="shopify")
    check_compliance(service, final, "shopify", {huge: ("fixed", ["max_size", "max_pixels"], ["downscaled"], [])})
    [image] = images_of(final)
    with opened(image["output_url"]) as output:
        assert output.size == (2048, 2003)  # 4600x4500 with its longest side at 2048


def _expected_bytes(data: bytes, quality: int, **form: str) -> int:
    """The size of the first rendition the worker makes of ``data`` for these fields at ``quality``, made here
    with the same code."""
    encoding = {"format": "jpeg", "quality": quality, "target_score": None, "max_dimension": None}
    plan = fields.read_plan(form, encoding)
    made = renditions.compress_renditions(data, [plan.first.spec], keep_metadata=True)
    return len(made.renditions[0].compressed.data)


def test_a_byte_cap_lowers_the_quality_until_it_fits_or_fails_the_image(service, source_server):
    """``max_bytes`` on google_merchant: a noisy 1500x1500 photo is 154 KB at quality 50 and 121 KB at 40
    (computed here with the worker's code); a cap between the two makes quality 40. A 1000 byte cap on
    noise fails the image with ``max_bytes_unreachable``."""
    data = encoded(scene((1500, 1500), seed=9, sigma=10))
    at_50, at_40 = (
        _expected_bytes(data, 50, profile="google_merchant"),
        _expected_bytes(data, 40, profile="google_merchant"),
    )
    assert at_40 < at_50
    cap = (at_40 + at_50) // 2
    url = source(source_server, data)
    final = completed(service, csv_of([(1, "Big", [url])]), profile="google_merchant", max_bytes=str(cap))

    check_compliance(service, final, "google_merchant", {url: ("pass", [], ["quality_lowered"], [])})
    [image] = images_of(final)
    assert final["renditions"][0]["max_bytes"] == cap
    assert (image["quality"], image["bytes_out"]) == (40, at_40)
    assert image["bytes_out"] <= cap
    assert len(fetched(image["output_url"])) == at_40

    noise = np.random.default_rng(3).integers(0, 256, (300, 300, 3), np.uint8)
    hopeless = source(source_server, encoded(Image.fromarray(noise)))
    final = completed(service, csv_of([(1, "Noise", [hopeless])]), status="FAILED", max_bytes="1000")
    [image] = images_of(final)
    assert image["status"] == "FAILED" and image["output_url"] is None
    assert image["error"]["code"] == "max_bytes_unreachable", image


def test_a_rendition_not_made_is_answered_with_every_field_null(service, source_server):
    """An image that failed has its renditions listed with url null, and the same eight fields as a made one."""
    noise = np.random.default_rng(4).integers(0, 256, (300, 300, 3), np.uint8)
    url = source(source_server, encoded(Image.fromarray(noise)))
    final = completed(
        service, csv_of([(1, "Noise", [url])]), status="FAILED", max_bytes="1000", renditions="main:300,small:100"
    )
    [image] = images_of(final)
    assert image["error"]["code"] == "max_bytes_unreachable"
    fields_ = ["name", "url", "width", "height", "bytes", "quality", "score", "reused"]
    assert [list(item) for item in image["renditions"]] == [fields_, fields_]
    assert [item["url"] for item in image["renditions"]] == [None, None]


# --- 2. renditions --------------------------------------------------------------------------------


def test_renditions_are_made_from_one_decode_listed_everywhere_and_reused_by_name(service, source_server, receiver):
    sources = [TaggedSource(source_server, encoded(scene(size, seed=11 + n))) for n, size in enumerate(SIZES)]
    big, small, wide = (item.url for item in sources)
    body = csv_of([(1, "Two images", [big, small]), (2, "One image", [wide])])
    before = decodes(service)

    final = completed(service, body, renditions="main:800,zoom:600,thumb:200x200:pad", webhook_url=receiver.url)

    # One decode per source, not one per rendition.
    assert wait_until(lambda: decodes(service) - before >= 3, 5)
    assert decodes(service) - before == 3
    assert [item["name"] for item in final["renditions"]] == ["main", "zoom", "thumb"]
    assert [(item["max_dimension"], item["canvas"]["fit"]) for item in final["renditions"]] == [
        (800, "contain"),
        (600, "contain"),
        (None, "pad"),
    ]
    expected = {
        big: [(800, 600), (600, 450), (200, 200)],
        small: [(500, 400), (500, 400), (200, 200)],  # never enlarged
        wide: [(800, 533), (600, 400), (200, 200)],
    }
    for image in images_of(final):
        listed = image["renditions"]
        assert [item["name"] for item in listed] == ["main", "zoom", "thumb"]
        assert [(item["width"], item["height"]) for item in listed] == expected[image["input_url"]]
        assert listed[0]["url"] == image["output_url"] and listed[0]["bytes"] == image["bytes_out"]
        assert len({item["url"] for item in listed}) == 3
        for item in listed:
            data = fetched(item["url"])
            assert len(data) == item["bytes"] and item["reused"] is False and item["quality"] == 50
            with Image.open(io.BytesIO(data)) as output:
                assert (output.format, output.size) == ("JPEG", (item["width"], item["height"]))
    with opened(images_of(final)[0]["renditions"][2]["url"]) as thumb:
        # 1200x900 padded into 200x200: 200x150 of picture at row 25, white above and below (the rows clear of
        # the JPEG blocks that hold picture).
        pixels = np.asarray(thumb).astype(int)
        assert pixels[:14].min() >= 245 and pixels[-20:].min() >= 245 and pixels[40:160].min() < 200

    rows = csv_rows(service, final["request_id"], "output.csv")
    columns = ["Output Image Urls", "Output Image Urls (zoom)", "Output Image Urls (thumb)"]
    assert list(rows[0]) == ["S. No.", "Product Name", "Input Image Urls", *columns]
    for row, product in zip(rows, final["products"], strict=True):
        assert row["Input Image Urls"].split(",") == [image["input_url"] for image in product["images"]]
        for position, column in enumerate(columns):
            assert row[column].split(",") == [image["renditions"][position]["url"] for image in product["images"]]

    report = {row["Input Image Url"]: row for row in csv_rows(service, final["request_id"], "report.csv")}
    for image in images_of(final):
        for item in image["renditions"][1:]:
            name = item["name"]
            cells = [report[image["input_url"]][f"{name} {column}"] for column in ("Url", "Width", "Height", "Bytes")]
            assert cells == [item["url"], str(item["width"]), str(item["height"]), str(item["bytes"])]
        assert "Compliance" not in report[image["input_url"]]

    assert wait_until(lambda: len(receiver.deliveries()) >= 1, 30)
    totals = json.loads(receiver.deliveries()[0]["body"])["data"]["totals"]
    assert totals["renditions"] == [
        {
            "name": name,
            "images": 3,
            "bytes_out": sum(image["renditions"][position]["bytes"] for image in images_of(final)),
        }
        for position, name in enumerate(["main", "zoom", "thumb"])
    ]
    assert totals["bytes_out"] == final["totals"]["bytes_out"] == totals["renditions"][0]["bytes_out"]
    assert "compliance" not in totals and "duplicate_images" not in totals

    # Again with main as it was and a new rendition: main is found (the revalidation answered 304), then the
    # source is downloaded again, unconditionally, for tiny, the one rendition missing: one more decode each.
    before = decodes(service)
    again = completed(service, body, renditions="main:800,tiny:100x100:pad")
    assert wait_until(lambda: decodes(service) - before >= 3, 5)
    assert decodes(service) - before == 3
    assert [item.answers for item in sources] == [[200, 304, 200]] * 3
    first_by_url = {image["input_url"]: image for image in images_of(final)}
    for image in images_of(again):
        main, tiny = image["renditions"]
        assert (main["name"], main["reused"]) == ("main", True)
        assert main["url"] == first_by_url[image["input_url"]]["output_url"] == image["output_url"]
        assert (tiny["name"], tiny["reused"], tiny["width"], tiny["height"]) == ("tiny", False, 100, 100)
        with opened(tiny["url"]) as output:
            assert output.size == (100, 100)

    # A third time: a 304 each, every rendition found, nothing decoded.
    before = decodes(service)
    third = completed(service, body, renditions="main:800,tiny:100x100:pad")
    assert [item.answers for item in sources] == [[200, 304, 200, 304]] * 3
    assert [[item["reused"] for item in image["renditions"]] for image in images_of(third)] == [[True, True]] * 3
    assert [[item["url"] for item in image["renditions"]] for image in images_of(third)] == [
        [item["url"] for item in image["renditions"]] for image in images_of(again)
    ]
    assert decodes(service) == before


def test_each_rendition_encoded_is_counted_in_the_encode_histogram(service, source_server):
    """imgsvc_image_encode_seconds is "Time to encode an output": two renditions of one source are two encodes,
    as a plain request's one output is one (outputs/making.py observes it; the plan path does not)."""
    url = source(source_server, encoded(scene((400, 300), seed=41)))
    before = scraped(service, "imgsvc_image_encode_seconds_count")
    completed(service, csv_of([(1, "A", [url])]), renditions="main:300,thumb:100x100:pad")
    assert scraped(service, "imgsvc_image_encode_seconds_count") - before == 2


# --- 3. refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "code", "field"),
    [
        ({"profile": "etsy"}, "unknown_profile", "profile"),
        ({"renditions": "main:abc"}, "invalid_option", "renditions[0]"),
        ({"renditions": "main:800,thumb:200x200:pad,main:400"}, "invalid_option", "renditions[2].name"),
        ({"fit": "pad", "width": "20000", "height": "100"}, "invalid_option", "width"),
        ({"fit": "pad"}, "invalid_option", "fit"),
        ({"aspect": "1:1", "fit": "contain"}, "invalid_option", "aspect"),
        ({"options": "{fit: pad}"}, "invalid_option", "options"),
        ({"options": '{"fit": "pad", "aspect": "1:1"}', "fit": "pad"}, "invalid_option", "fit"),
        (
            {"renditions": '[{"name": "main", "max_dimension": 800, "colour": "red"}]'},
            "invalid_option",
            "renditions[0].colour",
        ),
    ],
)
def test_a_plan_that_cannot_be_read_is_refused_naming_its_field_and_nothing_is_created(
    service, source_server, form, code, field
):
    path = f"/{uuid.uuid4().hex}/never.jpg"
    source_server.route(
        path, lambda request: request.send(200, encoded(scene((64, 64))), {"Content-Type": "image/jpeg"})
    )
    before = request_count(service)

    refused = upload(service.base_url, csv_of([(1, "A", [source_server.url(path)])]), **form)

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert [detail["field"] for detail in error["details"]] == [field]
    assert all(isinstance(detail["message"], str) and detail["message"] for detail in error["details"])
    assert request_count(service) == before == 0
    assert source_server.hits(path) == 0


# --- 4. near-duplicates ---------------------------------------------------------------------------


def bottle_sources(server) -> tuple[str, str, str, str]:
    """URLs of a photo A, A resized to 70% and recompressed hard, A at 80% and a little brighter, and an unrelated
    photo B (pHash distances 0, 0 and 42 from A)."""
    with Image.open(SAMPLES / "sku1_bottle.jpg") as sample:
        original = sample.convert("RGB").resize((800, 600), Image.Resampling.LANCZOS)
    with Image.open(SAMPLES / "sku2_fruit.jpg") as sample:
        unrelated = sample.convert("RGB").resize((800, 533), Image.Resampling.LANCZOS)
    brighter = Image.eval(original.resize((640, 480), Image.Resampling.LANCZOS), lambda v: min(255, v + 6))
    return (
        source(server, encoded(original, quality=92)),
        source(server, encoded(original.resize((560, 420), Image.Resampling.LANCZOS), quality=40)),
        source(server, encoded(brighter, quality=60)),
        source(server, encoded(unrelated, quality=92)),
    )


def test_near_duplicates_are_flagged_with_the_first_image_in_the_request_and_across_requests(service, source_server):
    a, a_copy, a_again, b = bottle_sources(source_server)
    listing = csv_of([(1, "Bottle", [a]), (2, "Bottle copy", [a_copy]), (3, "Fruit", [b])])

    first = completed(service, listing, duplicates="true")

    assert first["duplicates"] is True and first["duplicate_images"] == 1
    by_url = {image["input_url"]: image for image in images_of(first)}
    flagged = {"request_id": first["request_id"], "product_name": "Bottle", "input_url": a}
    assert by_url[a_copy]["duplicate_of"] == flagged
    assert by_url[a]["duplicate_of"] is None and by_url[b]["duplicate_of"] is None
    report = {
        row["Input Image Url"]: row["Duplicate Of"] for row in csv_rows(service, first["request_id"], "report.csv")
    }
    assert report == {a: "", a_copy: f"Bottle {a}", b: ""}

    # Another request of the same (open) caller: a third copy under a URL of its own points at the first
    # request's A; B's own URL sent again is the same listing, no duplicate.
    second = completed(service, csv_of([(1, "Bottle again", [a_again]), (2, "Fruit", [b])]), duplicates="true")
    again, b_again = images_of(second)
    assert second["duplicate_images"] == 1
    assert again["duplicate_of"] == flagged and b_again["duplicate_of"] is None


def test_a_listing_sent_again_is_flagged_as_it_was_the_first_time(service, source_server):
    """The same CSV sent twice: the first time A is the original and A' its duplicate. The second time A's own
    URL is skipped ("the same listing sent again", lifecycle/duplicates.py) but A' of the first request is
    not, so A is flagged as a duplicate of "Bottle copy" A', the copy named as the original."""
    a, a_copy, _, b = bottle_sources(source_server)
    listing = csv_of([(1, "Bottle", [a]), (2, "Bottle copy", [a_copy]), (3, "Fruit", [b])])
    first = completed(service, listing, duplicates="true")
    second = completed(service, listing, duplicates="true")
    flagged = {"request_id": first["request_id"], "product_name": "Bottle", "input_url": a}
    assert [image["duplicate_of"] for image in images_of(first)] == [None, flagged, None]
    assert [image["duplicate_of"] for image in images_of(second)] == [None, flagged, None]


# --- 5. metadata ----------------------------------------------------------------------------------


def tagged_source() -> bytes:
    """A JPEG with EXIF Artist, Copyright, camera and GPS, and XMP with the AI source type and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = "Ada Lovelace"
    exif[ExifTags.Base.Copyright] = "(c) 2026 Analytical Studio"
    exif[ExifTags.Base.Make] = "CamMakeXYZ"
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (51.0, 30.0, 0.0)}
    xmp = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' Iptc4xmpExt:DigitalSourceType="{AI_MADE}" exif:GPSLatitude="51,30.0N" xmp:CreatorTool="SecretTool 9"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()
    return encoded(scene((400, 300), seed=31), exif=exif.tobytes(), xmp=xmp)


def test_outputs_keep_rights_and_source_type_in_every_format_and_strip_all_keeps_nothing(service, source_server):
    data = tagged_source()
    with Image.open(io.BytesIO(data)) as check:  # the source really carries all of it
        assert check.getexif().get_ifd(GPS_IFD) and b"GPSLatitude" in check.info["xmp"]
    url = source(source_server, data)
    formats = {"j": "JPEG", "w": "WEBP", "a": "AVIF"}
    plan = json.dumps([{"name": name, "format": fmt.lower(), "max_dimension": 300} for name, fmt in formats.items()])

    kept = completed(service, csv_of([(1, "Tagged", [url])]), renditions=plan, trim="false")

    [image] = images_of(kept)
    assert kept["metadata"] == "keep_rights" and kept["profile"] is None and "compliance" not in image
    assert [item["name"] for item in image["renditions"]] == list(formats)
    for item in image["renditions"]:
        data_out = fetched(item["url"])
        with Image.open(io.BytesIO(data_out)) as output:
            assert (output.format, output.size) == (formats[item["name"]], (300, 225))
            assert metadata_policy.read_kept(output) == metadata_policy.KeptMetadata(
                copyright="(c) 2026 Analytical Studio", creator="Ada Lovelace", digital_source_type=AI_MADE
            ), item["name"]
            exif = output.getexif()
            assert set(exif) == {ExifTags.Base.Artist, ExifTags.Base.Copyright}, (item["name"], dict(exif))
            assert not exif.get_ifd(GPS_IFD)
        for dropped in (b"GPSLatitude", b"SecretTool", b"CamMakeXYZ", b"51,30"):
            assert dropped not in data_out, (item["name"], dropped)

    stripped = completed(service, csv_of([(1, "Tagged", [url])]), renditions=plan, trim="false", strip="all")

    [image] = images_of(stripped)
    assert stripped["metadata"] == "strip_all"
    for item in image["renditions"]:
        data_out = fetched(item["url"])
        with Image.open(io.BytesIO(data_out)) as output:
            assert output.format == formats[item["name"]]
            assert metadata_policy.read_kept(output).is_empty
            assert not output.info.get("exif") and not output.info.get("xmp"), (item["name"], output.info.keys())
            assert not output.getexif()
        for dropped in (b"Ada Lovelace", b"Analytical", b"trainedAlgorithmicMedia", b"GPSLatitude"):
            assert dropped not in data_out, (item["name"], dropped)
