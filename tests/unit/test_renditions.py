"""renditions.compress_renditions: several outputs of one source from one decode, in the order asked, each with
the sizes its canvas's layout gives, a byte cap met by lowering the quality, the change codes, the metadata kept,
and what the inspectors are handed. Sources are made in memory with Pillow and numpy (fixed seeds)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaging import decode, encode, pipeline, renditions
from imaging.canvas import Canvas
from imaging.errors import ImageProcessingError
from imaging.metadata_policy import KeptMetadata, read_kept
from imaging.renditions import RenditionSpec, compress_renditions
from output_plan.plan import OutputPlan, RenditionPlan
from outputs.variants import RenditionOptions

ORIENTATION, ARTIST, COPYRIGHT, MAKE = 0x0112, 0x013B, 0x8298, 0x010F


def pixels(width: int, height: int, seed: int = 1) -> np.ndarray:
    """Photo-like RGB: smooth gradients with grain (so JPEG sizes respond to quality), no uniform border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [40 + 170 * xx / width, 40 + 170 * yy / height, 128 + 60 * np.sin(xx / 17) * np.cos(yy / 23)]
    return (np.stack(planes, axis=2) + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)


def jpeg(width: int, height: int, seed: int = 1, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    extra = {"exif": exif.tobytes()} if exif is not None else {}
    Image.fromarray(pixels(width, height, seed)).save(out, "JPEG", quality=92, **extra)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def rgba_png(width: int = 400, height: int = 400) -> bytes:
    """Transparent all round, an opaque red square in the middle half."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (200, 30, 30, 255)
    return png(Image.fromarray(rgba, "RGBA"))


def bordered_png() -> bytes:
    """300x200: a white border round 200x100 of photo at (50, 50)."""
    image = Image.new("RGB", (300, 200), (255, 255, 255))
    image.paste(Image.fromarray(pixels(200, 100, seed=4)), (50, 50))
    return png(image)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sizes(made: renditions.Made) -> list[tuple[int, int]]:
    return [(item.compressed.width, item.compressed.height) for item in made.renditions]


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The size of the image at each decode (``decode.load``), in order.

    ``pipeline.PREPARE_STEPS`` holds the function object ``decode.load`` as it was at import, so
    ``monkeypatch.setattr(decode, "load", ...)`` alone is never called (checked: it counts 0). ``open_prepared``
    reads the module global ``pipeline.PREPARE_STEPS`` each time it runs, so the tuple is rebuilt with the
    counting wrapper in decode.load's place and set on the module (``pipeline.HEADER_STEPS``, derived from the
    tuple at import, is not used by open_prepared and holds no decode.load anyway).
    """
    seen: list[tuple[int, int]] = []
    load = decode.load

    def counting(work):
        # The size before loading: a drafted JPEG already reports its reduced size here.
        seen.append(work.image.size)
        load(work)

    assert load in pipeline.PREPARE_STEPS
    steps = tuple(counting if step is load else step for step in pipeline.PREPARE_STEPS)
    monkeypatch.setattr(pipeline, "PREPARE_STEPS", steps)
    return seen


@pytest.fixture
def opens(monkeypatch) -> list[int]:
    """How many times a source is opened (``decode.open_image``, looked up on the module at each call)."""
    count: list[int] = []
    open_image = decode.open_image

    def counting(stream):
        count.append(1)
        return open_image(stream)

    monkeypatch.setattr(decode, "open_image", counting)
    return count


# ---------------------------------------------------------------------------------------------------------------
# Order, sizes, one decode
# ---------------------------------------------------------------------------------------------------------------


def test_the_outputs_come_in_the_order_asked_with_the_sizes_of_their_layouts():
    specs = [
        # Smallest first, on purpose: they are made largest first but handed back as asked.
        RenditionSpec(max_dimension=150),
        # 1200x800 padded into 500x500: content 500x333, canvas 500x500.
        RenditionSpec(canvas=Canvas(fit="pad", width=500, height=500)),
        # Covered to 300x300: the canvas only.
        RenditionSpec(canvas=Canvas(fit="cover", width=300, height=300), output_format="webp"),
        # As it is.
        RenditionSpec(),
        # Pad to 1:1.44: (1200, 1728).
        RenditionSpec(canvas=Canvas(fit="pad", aspect=(1, 1.44)), output_format="avif", quality=40),
        # Contain 600 wide: 600x400.
        RenditionSpec(canvas=Canvas(width=600)),
    ]
    made = compress_renditions(jpeg(1200, 800), specs)
    assert sizes(made) == [(150, 100), (500, 500), (300, 300), (1200, 800), (1200, 1728), (600, 400)]
    assert [item.compressed.format for item in made.renditions] == ["jpeg", "jpeg", "webp", "jpeg", "avif", "jpeg"]
    assert [item.compressed.quality for item in made.renditions] == [50, 50, 50, 50, 40, 50]
    for item, spec in zip(made.renditions, specs, strict=True):
        image = opened(item.compressed.data)
        assert image.size == (item.compressed.width, item.compressed.height)
        assert image.format == spec.output_format.upper()
        assert item.compressed.source_format == "JPEG"
        assert item.compressed.kept_source is False
        assert item.inspected is None
    assert made.source is None


def test_no_rendition_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        compress_renditions(jpeg(100, 100), [])


@pytest.mark.parametrize("count", [1, 3, 6])
def test_the_source_is_opened_and_decoded_once_whatever_the_number_of_renditions(count, decodes, opens):
    specs = [RenditionSpec(max_dimension=1000 - 150 * index) for index in range(count)]
    made = compress_renditions(jpeg(1200, 800), specs)
    assert len(made.renditions) == count
    assert len(decodes) == 1
    assert len(opens) == 1


def test_a_trimmed_and_an_untrimmed_rendition_share_one_decode(decodes):
    specs = [RenditionSpec(canvas=Canvas(trim=12)), RenditionSpec(max_dimension=100)]
    made = compress_renditions(bordered_png(), specs)
    assert sizes(made) == [(200, 100), (100, 67)]
    assert len(decodes) == 1


# ---------------------------------------------------------------------------------------------------------------
# Drafting: the decode is only as large as the largest rendition needs
# ---------------------------------------------------------------------------------------------------------------


def test_a_jpeg_source_is_drafted_smaller_when_every_rendition_is_small(decodes):
    seen = []
    specs = [
        RenditionSpec(max_dimension=200),
        RenditionSpec(max_dimension=100),
        RenditionSpec(canvas=Canvas(fit="cover", width=150, height=150)),
    ]
    made = compress_renditions(
        jpeg(1600, 1200), specs, inspect_source=lambda image, *facts: seen.append((image.size, facts))
    )
    # The largest content is 200x150 (the cover's is 200x150 too): libjpeg decodes at 1/8 scale, 200x150.
    assert decodes == [(200, 150)]
    ((prepared, (source_size, _, _, _)),) = seen
    assert prepared == (200, 150)
    # What the source is reported as is its own size, not the draft's.
    assert source_size == (1600, 1200)
    assert sizes(made) == [(200, 150), (100, 75), (150, 150)]


def test_a_jpeg_source_is_decoded_whole_when_one_rendition_needs_it(decodes):
    seen = []
    specs = [RenditionSpec(max_dimension=200), RenditionSpec()]
    compress_renditions(jpeg(1600, 1200), specs, inspect_source=lambda image, *facts: seen.append(image.size))
    assert decodes == [(1600, 1200)]
    assert seen == [(1600, 1200)]


def test_a_trimmed_rendition_decodes_the_source_whole(decodes):
    # The border the trim removes decides the scale, so no draft.
    specs = [RenditionSpec(max_dimension=200, canvas=Canvas(trim=12))]
    compress_renditions(jpeg(1600, 1200), specs)
    assert decodes == [(1600, 1200)]


# ---------------------------------------------------------------------------------------------------------------
# max_bytes
# ---------------------------------------------------------------------------------------------------------------


def drawn_canvas(data: bytes, spec: RenditionSpec) -> Image.Image:
    """The canvas compress_renditions encodes for ``spec`` (handed to inspect_output)."""
    drawn = []
    compress_renditions(data, [spec], inspect_output=lambda image, *_: drawn.append(image.copy()), inspected=(0,))
    return drawn[0]


def encoded_size(image: Image.Image, quality: int) -> int:
    return len(encode.encode_image(image, quality, output_format="jpeg", icc=None))


def test_max_bytes_lowers_the_quality_a_step_at_a_time_until_it_fits():
    data = jpeg(600, 400, seed=3)
    plain = RenditionSpec(quality=90)
    canvas = drawn_canvas(data, plain)
    at = {quality: encoded_size(canvas, quality) for quality in (90, 80, 70, 60, 50, 40, 30, 20, 10)}
    assert at[90] > at[40] > at[30], at
    # A cap between what quality 30 and quality 40 make: 90 -> 80 -> ... -> 30 is the first step that fits.
    cap = (at[30] + at[40]) // 2
    made = compress_renditions(data, [RenditionSpec(quality=90, max_bytes=cap)])
    (item,) = made.renditions
    assert item.compressed.quality == 30
    assert len(item.compressed.data) == at[30] <= cap
    assert item.changes == ("quality_lowered",)


def test_max_bytes_lowers_to_the_lowest_quality_from_one_not_on_its_steps():
    data = jpeg(600, 400, seed=3)
    canvas = drawn_canvas(data, RenditionSpec(quality=15))
    cap = (encoded_size(canvas, 10) + encoded_size(canvas, 15)) // 2
    (item,) = compress_renditions(data, [RenditionSpec(quality=15, max_bytes=cap)]).renditions
    assert item.compressed.quality == renditions.LOWEST_QUALITY == 10
    assert len(item.compressed.data) <= cap


def test_max_bytes_already_met_changes_nothing():
    (item,) = compress_renditions(jpeg(300, 200), [RenditionSpec(quality=80, max_bytes=10_000_000)]).renditions
    assert item.compressed.quality == 80
    assert "quality_lowered" not in item.changes


def test_max_bytes_that_even_the_lowest_quality_cannot_meet_fails_the_image():
    with pytest.raises(ImageProcessingError) as raised:
        compress_renditions(jpeg(600, 400, seed=3), [RenditionSpec(quality=90, max_bytes=1000)])
    assert raised.value.code == "max_bytes_unreachable"
    assert "quality 10" in str(raised.value)


def test_one_rendition_past_reach_fails_them_all():
    specs = [RenditionSpec(max_dimension=100), RenditionSpec(max_bytes=1000)]
    with pytest.raises(ImageProcessingError) as raised:
        compress_renditions(jpeg(600, 400, seed=3), specs)
    assert raised.value.code == "max_bytes_unreachable"


# ---------------------------------------------------------------------------------------------------------------
# Change codes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "spec", "size", "changes"),
    [
        # Same format, same size: nothing changed.
        pytest.param("jpeg", RenditionSpec(), (400, 300), (), id="nothing"),
        pytest.param("rgba", RenditionSpec(), (400, 400), ("flattened", "converted"), id="flattened"),
        # The white border round 200x100 of photo is cut.
        pytest.param(
            "bordered", RenditionSpec(canvas=Canvas(trim=12)), (200, 100), ("trimmed", "converted"), id="trim"
        ),
        # 400x300 padded to a square without enlarging.
        pytest.param(
            "jpeg", RenditionSpec(canvas=Canvas(fit="pad", width=500, height=500)), (500, 500), ("padded",), id="pad"
        ),
        # 400x300 covered to 300x300: content stays 400x300 (scale max(0.75, 1)), 50 px cut off each side.
        pytest.param(
            "jpeg",
            RenditionSpec(canvas=Canvas(fit="cover", width=300, height=300)),
            (300, 300),
            ("cropped",),
            id="crop",
        ),
        pytest.param(
            "jpeg",
            RenditionSpec(canvas=Canvas(fit="cover", width=100, height=100)),
            (100, 100),
            ("cropped", "downscaled"),
            id="crop-downscale",
        ),
        # min_dimension 600 with upscale: 400x300 x2 = 800x600.
        pytest.param(
            "jpeg",
            RenditionSpec(canvas=Canvas(min_dimension=600, upscale=True)),
            (800, 600),
            ("upscaled",),
            id="upscale",
        ),
        pytest.param("jpeg", RenditionSpec(max_dimension=200), (200, 150), ("downscaled",), id="downscale"),
        # A margin pads the shrunk content.
        pytest.param(
            "jpeg", RenditionSpec(canvas=Canvas(margin=0.1)), (400, 300), ("downscaled", "padded"), id="margin"
        ),
        pytest.param("png", RenditionSpec(), (400, 300), ("converted",), id="png-to-jpeg"),
        pytest.param("jpeg", RenditionSpec(output_format="webp"), (400, 300), ("converted",), id="jpeg-to-webp"),
        pytest.param(
            "rgba",
            RenditionSpec(canvas=Canvas(fit="pad", width=500, height=300)),
            (500, 300),
            ("flattened", "downscaled", "padded", "converted"),
            id="several-in-order",
        ),
    ],
)
def test_the_change_codes(source, spec, size, changes):
    data = {
        "jpeg": lambda: jpeg(400, 300),
        "png": lambda: png(Image.fromarray(pixels(400, 300))),
        "rgba": rgba_png,
        "bordered": bordered_png,
    }[source]()
    (item,) = compress_renditions(data, [spec]).renditions
    assert (item.compressed.width, item.compressed.height) == size
    assert item.changes == changes
    assert list(item.changes) == [code for code in renditions.CHANGES if code in changes]


def test_transparency_is_flattened_onto_the_background():
    spec = RenditionSpec(canvas=Canvas(background=(0, 0, 0)))
    (item,) = compress_renditions(rgba_png(), [spec]).renditions
    image = opened(item.compressed.data)
    assert image.getpixel((5, 5)) == pytest.approx((0, 0, 0), abs=3)
    assert image.getpixel((200, 200)) == pytest.approx((200, 30, 30), abs=8)


# ---------------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------------


def tagged_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ARTIST] = "Ada Artist"
    exif[COPYRIGHT] = "(c) 2026 Ada"
    exif[MAKE] = "CamMakeXYZ"
    return jpeg(200, 100, exif=exif)


FORMATS = ("jpeg", "webp", "avif")


def test_keep_metadata_keeps_the_artist_and_copyright_in_every_format():
    made = compress_renditions(
        tagged_jpeg(), [RenditionSpec(output_format=name) for name in FORMATS], keep_metadata=True
    )
    for item, name in zip(made.renditions, FORMATS, strict=True):
        image = opened(item.compressed.data)
        assert image.format == name.upper()
        assert read_kept(image) == KeptMetadata(copyright="(c) 2026 Ada", creator="Ada Artist")
        # Nothing else of the source's EXIF.
        assert b"CamMakeXYZ" not in item.compressed.data
        assert MAKE not in image.getexif()


def test_without_keep_metadata_no_metadata_is_kept():
    made = compress_renditions(tagged_jpeg(), [RenditionSpec(output_format=name) for name in FORMATS])
    for item in made.renditions:
        image = opened(item.compressed.data)
        assert read_kept(image) == KeptMetadata()
        assert len(image.getexif()) == 0
        assert b"Ada" not in item.compressed.data
        assert b"CamMakeXYZ" not in item.compressed.data


# ---------------------------------------------------------------------------------------------------------------
# The inspectors
# ---------------------------------------------------------------------------------------------------------------


def test_inspect_source_is_handed_the_upright_source_its_size_byte_count_and_format():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = jpeg(300, 200, exif=exif)
    seen = []

    def inspect(image, size, byte_count, source_format, had_alpha):
        seen.append((image.size, image.mode, size, byte_count, source_format, had_alpha))
        return "source facts"

    made = compress_renditions(data, [RenditionSpec(max_dimension=150)], inspect_source=inspect)
    # Orientation 6 turns the stored 300x200 upright: 200x300, the size reported; the image is the prepared one,
    # already shrunk to what the rendition needs (150 on its longest side), upright too.
    assert seen == [((100, 150), "RGB", (200, 300), len(data), "JPEG", False)]
    assert made.source == "source facts"
    assert sizes(made) == [(100, 150)]


def test_an_oriented_source_decoded_whole_is_handed_over_upright():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    seen = []
    made = compress_renditions(
        jpeg(300, 200, exif=exif),
        [RenditionSpec()],
        inspect_source=lambda image, size, *_: seen.append((image.size, size)),
    )
    assert seen == [((200, 300), (200, 300))]
    assert sizes(made) == [(200, 300)]


def test_inspect_source_is_told_of_transparency():
    seen = []
    data = rgba_png()
    compress_renditions(data, [RenditionSpec()], inspect_source=lambda image, *facts: seen.append(facts))
    assert seen == [((400, 400), len(data), "PNG", True)]


def test_inspect_output_is_called_only_for_the_indexes_inspected():
    calls = []

    def inspect(image, encoded, output_format):
        calls.append(image.size)
        return (image.size, len(encoded), output_format)

    specs = [
        RenditionSpec(),
        RenditionSpec(max_dimension=100),
        RenditionSpec(canvas=Canvas(fit="pad", width=300, height=300), output_format="webp"),
    ]
    made = compress_renditions(jpeg(400, 300), specs, inspect_output=inspect, inspected=(0, 2))
    assert sorted(calls) == sorted([(400, 300), (300, 300)])
    first, second, third = made.renditions
    assert first.inspected == ((400, 300), len(first.compressed.data), "jpeg")
    assert second.inspected is None
    assert third.inspected == ((300, 300), len(third.compressed.data), "webp")


def test_no_inspected_index_calls_no_inspector():
    calls = []
    compress_renditions(jpeg(400, 300), [RenditionSpec()], inspect_output=lambda *args: calls.append(args))
    assert calls == []


def test_a_webp_rendition_of_a_very_wide_source_is_shrunk_to_what_webp_holds():
    # Regression: each rendition's layout is bounded by encode.MAX_SIDE of its format (as pipeline.compress
    # shrinks to); without it a WebP rendition wider than 16383 px failed to encode with a ValueError.
    data = png(Image.new("RGB", (17_000, 50), (120, 120, 120)))
    plain = pipeline.compress(data, output_format="webp")
    assert (plain.width, plain.height) == (16_383, 48)
    (item,) = compress_renditions(data, [RenditionSpec(output_format="webp")]).renditions
    assert (item.compressed.width, item.compressed.height) == (16_383, 48)


# ---------------------------------------------------------------------------------------------------------------
# Bugs found, and fixed
# ---------------------------------------------------------------------------------------------------------------


def test_a_rendition_with_the_same_variant_has_the_same_pixels_whatever_the_first_renditions_background():
    thumb = RenditionSpec(max_dimension=200)
    black_first = RenditionSpec(canvas=Canvas(fit="pad", width=500, height=500, background=(0, 0, 0)))
    with_black_first = OutputPlan((RenditionPlan("main", black_first), RenditionPlan("thumb", thumb)))
    alone = OutputPlan((RenditionPlan("thumb", thumb),))
    same_variant = RenditionOptions.of(with_black_first, 1).describe() == RenditionOptions.of(alone, 0).describe()
    made_with = compress_renditions(rgba_png(), [black_first, thumb]).renditions[1]
    made_alone = compress_renditions(rgba_png(), [thumb]).renditions[0]
    # A transparent corner: white (the thumb's own background) alone; black after the black-padded first.
    corner_with = opened(made_with.compressed.data).getpixel((2, 2))
    corner_alone = opened(made_alone.compressed.data).getpixel((2, 2))
    assert corner_alone == pytest.approx((255, 255, 255), abs=3)
    # Equal variants are one stored output, reused for either request: their pixels must be the same.
    same_pixels = corner_with == pytest.approx(corner_alone, abs=3)
    assert same_pixels or not same_variant, (same_variant, corner_with, corner_alone)


def test_a_rendition_too_large_to_make_is_refused_before_it_is_drawn():
    # A 40x30 source asked at a 10,000 px minimum, upscaled: 10000x13333 is past the pixel limit; 6000x8000
    # under it, but its canvas and encoder past a 64 MiB budget.
    tiny = jpeg(40, 30)
    huge = RenditionSpec(canvas=Canvas(min_dimension=10_000, upscale=True), max_dimension=None)
    with pytest.raises(ImageProcessingError) as refused:
        compress_renditions(tiny, [huge], max_pixels=50_000_000)
    assert refused.value.code == "too_many_pixels"
    large = RenditionSpec(canvas=Canvas(min_dimension=6000, upscale=True))
    with pytest.raises(ImageProcessingError) as refused:
        compress_renditions(tiny, [large], decode_budget=64 << 20)
    assert refused.value.code == "image_too_large"
    assert compress_renditions(tiny, [RenditionSpec(canvas=Canvas(min_dimension=600, upscale=True))]).renditions
