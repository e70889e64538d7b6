"""output_plan.fields.read_plan: an upload's form fields (a plain dict here) read into an OutputPlan, or refused with
ApiError 422 naming the field; OutputPlan.describe/from_described and RenditionOptions.describe round trips."""

from __future__ import annotations

import json

import pytest

from errors import ApiError
from imaging import pipeline
from imaging.canvas import Canvas, layout
from imaging.renditions import RenditionSpec
from marketplaces.profiles import PROFILES
from output_plan.fields import MAX_RENDITIONS, read_plan
from output_plan.plan import OutputPlan, RenditionPlan, rules_described
from outputs.variants import RenditionOptions

#: The encoding fields the form gave, as upload_routes reads them (here: format=jpeg and quality=50); a None is
#: one not given. upload_routes passes only those given, with quality "auto" for quality=auto.
ENCODING = {"format": "jpeg", "quality": 50, "target_score": None, "max_dimension": None}
#: A form that gave none of them.
NOTHING_GIVEN: dict = {}
MB = 1_000_000


def plan_of(form: dict[str, str], encoding: dict | None = None) -> OutputPlan:
    plan = read_plan(form, ENCODING if encoding is None else encoding)
    assert plan is not None
    return plan


def refusal(form: dict[str, str], encoding: dict | None = None) -> ApiError:
    with pytest.raises(ApiError) as raised:
        read_plan(form, ENCODING if encoding is None else encoding)
    error = raised.value
    assert error.status == 422
    assert error.details and len(error.details) == 1
    assert error.details[0]["message"]
    return error


def specs(plan: OutputPlan) -> dict[str, RenditionSpec]:
    return {item.name: item.spec for item in plan.renditions}


# ---------------------------------------------------------------------------------------------------------------
# No plan
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"quality": "80", "format": "webp", "max_dimension": "1000", "never_bigger": "false", "webhook_url": "x"},
        # Blank plan fields are not given.
        {"profile": "", "fit": "  ", "renditions": "", "options": " "},
        # An empty options object asks nothing.
        {"options": "{}"},
    ],
)
def test_no_plan_fields_is_no_plan(form):
    assert read_plan(form, ENCODING) is None


def test_any_plan_field_makes_a_plan_of_one_plain_main_rendition():
    plan = plan_of({"strip": "rights"})
    assert plan == OutputPlan(renditions=(RenditionPlan("main", RenditionSpec()),))
    assert plan.first.spec.canvas.is_plain
    assert plan.profile is None
    assert plan.rules is None
    assert plan.metadata == "keep_rights"
    assert plan.duplicates is False


def test_the_encoding_read_from_the_form_is_every_renditions_default():
    encoding = {"format": "webp", "quality": 70, "target_score": None, "max_dimension": 1200}
    plan = plan_of({"renditions": "main:2048,thumb:400x400:pad"}, encoding)
    main, thumb = plan.renditions
    assert (main.spec.output_format, main.spec.quality, main.spec.max_dimension) == ("webp", 70, 2048)
    assert (thumb.spec.output_format, thumb.spec.quality, thumb.spec.max_dimension) == ("webp", 70, 1200)


# ---------------------------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------------------------


def test_a_profiles_presets_apply_to_the_first_rendition_only():
    plan = plan_of({"profile": "google_merchant", "renditions": "main:2048,thumb:400x400:pad"})
    assert plan.profile == "google_merchant"
    assert plan.rules == PROFILES["google_merchant"].rules
    main, thumb = specs(plan).values()
    assert list(specs(plan)) == ["main", "thumb"]
    assert main == RenditionSpec(
        canvas=Canvas(fit="contain", trim=12, min_dimension=500, upscale=True),
        max_dimension=2048,
        output_format="jpeg",
        quality=50,
        max_bytes=16 * MB,
    )
    assert main.canvas.trim == 12
    assert thumb == RenditionSpec(canvas=Canvas(fit="pad", width=400, height=400))
    assert (thumb.canvas.min_dimension, thumb.canvas.upscale, thumb.canvas.trim, thumb.max_bytes) == (
        None,
        False,
        None,
        None,
    )


def test_a_profile_alone_makes_its_main_rendition():
    plan = plan_of({"profile": "amazon_main"})
    (main,) = plan.renditions
    assert main.name == "main"
    assert main.spec == RenditionSpec(
        canvas=Canvas(fit="pad", aspect=(1.0, 1.0), trim=12, margin=0.04, min_dimension=1000, upscale=True),
        max_dimension=2000,
    )
    # A 1200x800 product: box (1200, 1200), inner 0.92 of it: 1104x736, centred.
    assert layout((1200, 800), main.spec.canvas, main.spec.max_dimension).canvas == (1200, 1200)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_reads(name):
    plan = plan_of({"profile": name.upper()})
    assert plan.profile == name
    assert plan.rules == PROFILES[name].rules
    assert plan.duplicates is True


def test_request_fields_apply_to_every_rendition_and_override_the_presets():
    plan = plan_of(
        {
            "profile": "google_merchant",
            "renditions": "main:2048,thumb:400x400:pad",
            "background": "#000",
            "min_dimension": "800",
            "trim": "false",
            "max_bytes": "2000000",
        }
    )
    main, thumb = specs(plan).values()
    assert main.canvas.background == thumb.canvas.background == (0, 0, 0)
    assert main.canvas.min_dimension == thumb.canvas.min_dimension == 800
    assert main.max_bytes == thumb.max_bytes == 2_000_000
    # trim=false overrides the preset's 12; upscale (a preset not overridden) stays on main alone.
    assert main.canvas.trim is None and thumb.canvas.trim is None
    assert main.canvas.upscale is True and thumb.canvas.upscale is False


def test_a_request_encoding_overrides_a_profiles_max_dimension_and_format():
    encoding = {"format": "webp", "quality": 50, "target_score": None, "max_dimension": 1000}
    (main,) = plan_of({"profile": "google_merchant"}, encoding).renditions
    assert main.spec.max_dimension == 1000
    assert main.spec.output_format == "webp"


def test_a_rendition_overrides_the_request_and_the_preset():
    renditions = json.dumps([{"name": "main", "min_dimension": 600, "upscale": False}, {"name": "b", "trim": 20}])
    plan = plan_of({"profile": "ebay", "renditions": renditions, "min_dimension": "700"})
    main, other = specs(plan).values()
    assert (main.canvas.min_dimension, main.canvas.upscale, main.canvas.trim) == (600, False, 12)
    assert (other.canvas.min_dimension, other.canvas.upscale, other.canvas.trim) == (700, False, 20)
    assert main.max_dimension == 1600
    assert other.max_dimension is None


def test_an_unknown_profile_is_refused():
    error = refusal({"profile": "etsy"})
    assert error.code == "unknown_profile"
    assert error.details[0]["field"] == "profile"
    for name in PROFILES:
        assert name in error.message


# ---------------------------------------------------------------------------------------------------------------
# The renditions field
# ---------------------------------------------------------------------------------------------------------------


def test_the_compact_form():
    plan = plan_of({"renditions": "main:2048, Zoom:1600x1200 ,thumb:400x400:PAD,sq:300x300:cover"})
    assert list(specs(plan)) == ["main", "zoom", "thumb", "sq"]
    main, zoom, thumb, square = specs(plan).values()
    assert main == RenditionSpec(max_dimension=2048)
    assert zoom == RenditionSpec(canvas=Canvas(width=1600, height=1200))
    assert thumb == RenditionSpec(canvas=Canvas(fit="pad", width=400, height=400))
    assert square == RenditionSpec(canvas=Canvas(fit="cover", width=300, height=300))


def test_the_json_list_form():
    renditions = [
        {"name": "main", "fit": "pad", "aspect": "1:1.44", "background": "black", "margin": "5%", "format": "webp"},
        {"name": "t-1", "width": 400, "height": 300, "fit": "cover", "gravity": "center", "quality": 80},
        {"name": "z_2", "max_dimension": "1600", "trim": True, "max_bytes": 500_000, "upscale": "yes"},
    ]
    plan = plan_of({"renditions": json.dumps(renditions)})
    main, thumb, zoom = specs(plan).values()
    assert main == RenditionSpec(
        canvas=Canvas(fit="pad", aspect=(1.0, 1.44), background=(0, 0, 0), margin=0.05), output_format="webp"
    )
    assert thumb == RenditionSpec(canvas=Canvas(fit="cover", width=400, height=300, gravity="centre"), quality=80)
    assert zoom == RenditionSpec(canvas=Canvas(trim=12, upscale=True), max_dimension=1600, max_bytes=500_000)


def test_the_options_object():
    options = {
        "profile": "zalando",
        "renditions": [{"name": "main"}, {"name": "thumb", "width": 200, "height": 288, "fit": "pad"}],
        "format": "jpg",
        "quality": 85,
        "strip": "all",
        "duplicates": False,
        "margin": 0,
    }
    plan = plan_of({"options": json.dumps(options)})
    assert plan.profile == "zalando"
    assert plan.metadata == "strip_all"
    assert plan.duplicates is False
    main, thumb = specs(plan).values()
    assert main == RenditionSpec(
        canvas=Canvas(fit="pad", width=1801, height=2600, trim=12, upscale=True),
        quality=85,
        max_bytes=20 * MB,
    )
    assert thumb == RenditionSpec(canvas=Canvas(fit="pad", width=200, height=288), quality=85)


def test_options_may_carry_the_encoding_fields_the_form_does_not_give():
    plan = plan_of({"fit": "pad", "aspect": "1:1", "options": json.dumps({"format": "avif", "max_dimension": 900})})
    assert plan.first.spec.output_format == "avif"
    assert plan.first.spec.max_dimension == 900


def test_name_n_keeps_a_padded_aspect_profile_square():
    # amazon_main presets an aspect (no box): NAME:N is the square's side.
    plan = plan_of({"profile": "amazon_main", "renditions": "main:1500"})
    main = plan.first.spec
    assert (main.canvas.fit, main.canvas.aspect, main.max_dimension) == ("pad", (1.0, 1.0), 1500)
    # 2000x1000, margin 0.04: box (2000, 2000) bounded to 1500x1500; content 0.92 * 1500 = 1380 wide, 690 high.
    assert layout((2000, 1000), main.canvas, main.max_dimension).canvas == (1500, 1500)


def test_name_n_under_a_padded_box_profile_keeps_the_boxs_aspect():
    plan = plan_of({"profile": "zalando", "renditions": "main:1000,thumb:300"})
    main, thumb = specs(plan).values()
    assert (main.canvas.fit, main.canvas.width, main.canvas.height, main.max_dimension) == ("pad", None, None, 1000)
    assert main.canvas.aspect is not None
    assert main.canvas.aspect[0] / main.canvas.aspect[1] == pytest.approx(1801 / 2600)
    # A landscape 1200x800 in 1801:2600: box (1200, 1732.4) bounded to 692.7x1000, the content inside its margin.
    assert layout((1200, 800), main.canvas, main.max_dimension).canvas == (693, 1000)
    # The box is the profile's, so the second rendition (no presets) is a plain contain.
    assert thumb == RenditionSpec(max_dimension=300)


def test_name_n_under_a_request_level_box_keeps_its_aspect():
    plan = plan_of({"fit": "pad", "width": "800", "height": "600", "renditions": "a:400,b:200"})
    for spec, side in zip(specs(plan).values(), (400, 200), strict=True):
        assert spec.canvas.aspect[0] / spec.canvas.aspect[1] == pytest.approx(4 / 3)
        assert layout((1000, 1000), spec.canvas, spec.max_dimension).canvas == (side, round(side * 3 / 4))


@pytest.mark.parametrize(("profile", "aspect"), [("zalando", "1:1"), ("zalando", "4:3")])
def test_a_request_aspect_overrides_a_profiles_box(profile, aspect):
    plan = plan_of({"profile": profile, "aspect": aspect})
    width, height = layout((1200, 800), plan.first.spec.canvas, plan.first.spec.max_dimension).canvas
    asked = [float(part) for part in aspect.split(":")]
    assert width / height == pytest.approx(asked[0] / asked[1], rel=0.01)
    assert (plan.first.spec.canvas.width, plan.first.spec.canvas.height) == (None, None)


def test_a_request_box_overrides_a_profiles_aspect():
    main = plan_of({"profile": "amazon_main", "width": "1500", "height": "1000"}).first.spec
    assert (main.canvas.fit, main.canvas.width, main.canvas.height, main.canvas.aspect) == ("pad", 1500, 1000, None)
    # min_dimension 1000 and max_dimension 2000 leave the 1500x1000 box as it is.
    assert layout((1200, 800), main.canvas, main.max_dimension).canvas == (1500, 1000)


def test_a_renditions_aspect_overrides_the_requests_box():
    renditions = json.dumps([{"name": "a"}, {"name": "b", "aspect": "1:1"}])
    a, b = specs(plan_of({"fit": "pad", "width": "800", "height": "600", "renditions": renditions})).values()
    assert (a.canvas.width, a.canvas.height, a.canvas.aspect) == (800, 600, None)
    assert (b.canvas.width, b.canvas.height, b.canvas.aspect) == (None, None, (1.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------------------


def test_quality_auto_in_options_takes_the_default_target_score():
    plan = plan_of({"options": json.dumps({"quality": "auto"})})
    assert (plan.first.spec.quality, plan.first.spec.target_score) == (None, pipeline.DEFAULT_TARGET_SCORE)


def test_quality_auto_with_a_target_score():
    plan = plan_of({"options": json.dumps({"quality": "AUTO", "target_score": 0.95})})
    assert (plan.first.spec.quality, plan.first.spec.target_score) == (None, 0.95)


def test_the_forms_quality_auto_and_target_score_reach_every_rendition():
    encoding = {"quality": "auto", "target_score": 0.93}
    plan = plan_of({"renditions": "a:100,b:200"}, encoding)
    assert [(spec.quality, spec.target_score) for spec in specs(plan).values()] == [(None, 0.93), (None, 0.93)]


def test_a_rendition_may_ask_auto_or_a_fixed_quality_of_its_own():
    renditions = [
        {"name": "a", "quality": "auto", "target_score": "0.9"},
        {"name": "b", "quality": "35"},
        {"name": "c", "target_score": 0.8},
        {"name": "d"},
    ]
    encoding = {"quality": "auto", "target_score": 0.93}
    a, b, c, d = specs(plan_of({"renditions": json.dumps(renditions)}, encoding)).values()
    assert (a.quality, a.target_score) == (None, 0.9)
    # A fixed quality has no target score, whatever the request's.
    assert (b.quality, b.target_score) == (35, None)
    # A target score alone is quality=auto.
    assert (c.quality, c.target_score) == (None, 0.8)
    assert (d.quality, d.target_score) == (None, 0.93)


def test_a_renditions_target_score_replaces_the_requests_fixed_quality():
    renditions = json.dumps([{"name": "a"}, {"name": "b", "target_score": 0.9}])
    a, b = specs(plan_of({"renditions": renditions}, ENCODING)).values()
    assert (a.quality, a.target_score) == (50, None)
    assert (b.quality, b.target_score) == (None, 0.9)


def test_no_quality_given_is_quality_50():
    plan = plan_of({"strip": "all"}, NOTHING_GIVEN)
    assert (plan.first.spec.quality, plan.first.spec.target_score, plan.first.spec.output_format) == (50, None, "jpeg")


def test_a_target_score_in_options_without_quality_is_quality_auto():
    # Regression: with the form's default quality 50 passed as if given, the target score was silently dropped.
    plan = plan_of({"options": json.dumps({"target_score": 0.9})}, NOTHING_GIVEN)
    assert (plan.first.spec.quality, plan.first.spec.target_score) == (None, 0.9)


# ---------------------------------------------------------------------------------------------------------------
# Refusals: 422, the field named
# ---------------------------------------------------------------------------------------------------------------


REFUSALS = [
    pytest.param({"renditions": "main"}, "renditions[0]", id="compact-no-size"),
    pytest.param({"renditions": "main:2048,thumb:400x"}, "renditions[1]", id="compact-bad-box"),
    pytest.param({"renditions": "main:2048,"}, "renditions[1]", id="compact-empty-part"),
    pytest.param({"renditions": "main:-5"}, "renditions[0]", id="compact-negative"),
    pytest.param({"renditions": "main:0"}, "renditions[0].max_dimension", id="compact-zero"),
    pytest.param({"renditions": "main:400x400:squash"}, "renditions[0].fit", id="compact-bad-fit"),
    pytest.param({"renditions": "Main Image:400"}, "renditions[0].name", id="bad-name"),
    pytest.param({"renditions": "a:100,b:200,A:300"}, "renditions[2].name", id="duplicate-names"),
    pytest.param({"renditions": ",".join(f"r{i}:100" for i in range(11))}, "renditions", id="eleven"),
    pytest.param({"renditions": "[]"}, "renditions", id="none-listed"),
    pytest.param({"renditions": "[{"}, "renditions", id="json-broken"),
    pytest.param({"renditions": '["main"]'}, "renditions", id="json-not-objects"),
    pytest.param({"renditions": '[{"name": "a", "colour": "red"}]'}, "renditions[0].colour", id="unknown-key"),
    pytest.param({"renditions": '[{"width": 100}]'}, "renditions[0].name", id="no-name"),
    pytest.param({"width": "20000", "height": "100", "fit": "pad"}, "width", id="width-20000"),
    pytest.param({"renditions": "main:20000x100"}, "renditions[0].width", id="rendition-width-20000"),
    pytest.param({"height": "0"}, "height", id="height-0"),
    pytest.param({"width": "1.5"}, "width", id="width-not-integer"),
    pytest.param({"fit": "pad"}, "fit", id="pad-without-box"),
    pytest.param({"fit": "cover", "width": "100"}, "fit", id="cover-width-only"),
    pytest.param({"renditions": "t:400:pad"}, "renditions[0].fit", id="compact-pad-without-box"),
    pytest.param({"aspect": "1:1"}, "aspect", id="aspect-with-contain"),
    pytest.param({"fit": "pad", "aspect": "1x1"}, "aspect", id="aspect-unreadable"),
    pytest.param({"fit": "pad", "aspect": "1:20"}, "aspect", id="aspect-too-narrow"),
    pytest.param({"fit": "squash"}, "fit", id="unknown-fit"),
    pytest.param({"min_dimension": "3000"}, "min_dimension", id="min-over-max"),
    pytest.param({"background": "#12345"}, "background", id="colour-five-digits"),
    pytest.param({"background": "red"}, "background", id="colour-unnamed"),
    pytest.param({"margin": "0.5"}, "margin", id="margin-0.5"),
    pytest.param({"margin": "45%"}, "margin", id="margin-45-percent"),
    pytest.param({"margin": "wide"}, "margin", id="margin-not-a-number"),
    pytest.param({"trim": "300"}, "trim", id="trim-300"),
    pytest.param({"trim": "maybe"}, "trim", id="trim-unreadable"),
    pytest.param({"max_bytes": "10"}, "max_bytes", id="max-bytes-10"),
    pytest.param({"max_bytes": "100000001"}, "max_bytes", id="max-bytes-too-many"),
    pytest.param({"upscale": "sometimes"}, "upscale", id="upscale-unreadable"),
    pytest.param({"gravity": "north"}, "gravity", id="unknown-gravity"),
    pytest.param({"strip": "none"}, "strip", id="unknown-strip"),
    pytest.param({"duplicates": "maybe"}, "duplicates", id="duplicates-unreadable"),
    pytest.param({"options": "{not json"}, "options", id="options-not-json"),
    pytest.param({"options": "[1, 2]"}, "options", id="options-not-object"),
    pytest.param({"options": '"fit"'}, "options", id="options-a-string"),
    pytest.param({"options": '{"foo": 1}'}, "options.foo", id="options-unknown-key"),
    pytest.param({"options": '{"never_bigger": false}'}, "options.never_bigger", id="options-not-a-plan-field"),
    pytest.param({"fit": "pad", "options": '{"fit": "cover"}'}, "fit", id="both-form-and-options"),
    pytest.param({"quality": "80", "options": '{"quality": 70}'}, "quality", id="encoding-both-form-and-options"),
    pytest.param({"options": '{"quality": "best"}'}, "quality", id="quality-unreadable"),
    pytest.param({"options": '{"quality": 96}'}, "quality", id="quality-96"),
    pytest.param({"options": '{"quality": "auto", "target_score": 2}'}, "target_score", id="target-out-of-range"),
    pytest.param({"options": '{"format": "gif"}'}, "format", id="unknown-format"),
    pytest.param({"renditions": '[{"name": "a", "quality": true}]'}, "renditions[0].quality", id="quality-a-bool"),
]


@pytest.mark.parametrize(("form", "field"), REFUSALS)
def test_every_refusal_is_a_422_naming_the_field(form, field):
    # min-over-max: the request's max_dimension is 2000.
    encoding = ENCODING | {"max_dimension": 2000}
    error = refusal(form, encoding)
    assert error.code == "invalid_option"
    assert error.details[0]["field"] == field
    assert error.to_dict()["error"]["details"][0]["field"] == field


def test_at_most_ten_renditions_are_read():
    plan = plan_of({"renditions": ",".join(f"r{index}:{100 + index}" for index in range(MAX_RENDITIONS))})
    assert len(plan.renditions) == MAX_RENDITIONS


def test_min_dimension_over_a_profiles_max_dimension_is_refused():
    error = refusal({"profile": "google_merchant", "min_dimension": "3000"})
    # google_merchant presets max_dimension 2048.
    assert error.details[0]["field"] == "min_dimension"


def test_an_unknown_key_of_options_is_named_and_cut_short():
    error = refusal({"options": json.dumps({"x" * 200: 1})})
    assert error.details[0]["field"].startswith("options.xxx")
    assert len(error.details[0]["field"]) <= 80


# ---------------------------------------------------------------------------------------------------------------
# Canvas values read
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"background": "#ff8000"}, Canvas(background=(255, 128, 0))),
        ({"background": "#f80"}, Canvas(background=(255, 136, 0))),
        ({"background": "BLACK"}, Canvas(background=(0, 0, 0))),
        ({"trim": "true"}, Canvas(trim=12)),
        ({"trim": "0"}, Canvas(trim=0)),
        ({"trim": "2"}, Canvas(trim=2)),
        ({"trim": "255"}, Canvas(trim=255)),
        ({"trim": "off"}, Canvas()),
        ({"margin": "5%"}, Canvas(margin=0.05)),
        ({"margin": "0.4"}, Canvas(margin=0.4)),
        ({"min_dimension": "500", "upscale": "on"}, Canvas(min_dimension=500, upscale=True)),
        (
            {"fit": "cover", "aspect": "1:1.44", "gravity": "attention"},
            Canvas("cover", aspect=(1.0, 1.44), gravity="attention"),
        ),
        ({"fit": "pad", "width": "10000", "height": "1"}, Canvas("pad", 10_000, 1)),
    ],
)
def test_canvas_values(form, expected):
    assert plan_of(form).first.spec.canvas == expected


@pytest.mark.parametrize(
    ("value", "tolerance"), [("1", 1), (1, 1), ("0", 0), (0, 0), (True, 12), (False, None), ("yes", 12), ("off", None)]
)
def test_trim_digits_are_always_a_tolerance(value, tolerance):
    # Regression: "1" and "0" read as true (tolerance 12) and false (off), not as the tolerances the API documents.
    assert plan_of({"options": json.dumps({"trim": value})}).first.spec.canvas.trim == tolerance


# ---------------------------------------------------------------------------------------------------------------
# strip and duplicates
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strip", "metadata"), [("all", "strip_all"), ("ALL", "strip_all"), ("rights", "keep_rights")])
def test_strip(strip, metadata):
    assert plan_of({"strip": strip}).metadata == metadata


@pytest.mark.parametrize(
    ("form", "duplicates"),
    [
        ({"profile": "ebay"}, True),
        ({"fit": "pad", "aspect": "1:1"}, False),
        ({"profile": "ebay", "duplicates": "false"}, False),
        ({"duplicates": "true"}, True),
        ({"options": '{"duplicates": true}'}, True),
    ],
)
def test_duplicates_default_on_with_a_profile_and_off_without(form, duplicates):
    assert plan_of(form).duplicates is duplicates


# ---------------------------------------------------------------------------------------------------------------
# describe / from_described, and each rendition's variant options
# ---------------------------------------------------------------------------------------------------------------

ROUND_TRIP_FORMS = [
    pytest.param({"strip": "all"}, id="plain"),
    pytest.param({"profile": "google_merchant", "renditions": "main:2048,thumb:400x400:pad"}, id="google"),
    pytest.param({"profile": "zalando", "duplicates": "false", "background": "#f0f0f0"}, id="zalando"),
    pytest.param({"profile": "amazon_main", "renditions": "main:1500,zoom:3000"}, id="amazon-main"),
    pytest.param(
        {
            "fit": "cover",
            "aspect": "1:1.44",
            "gravity": "attention",
            "margin": "3%",
            "trim": "true",
            "renditions": json.dumps(
                [
                    {"name": "a", "quality": "auto", "target_score": 0.91, "format": "webp"},
                    {"name": "b", "max_bytes": 50_000, "min_dimension": 200, "upscale": True},
                ]
            ),
        },
        id="everything",
    ),
]


@pytest.mark.parametrize("form", ROUND_TRIP_FORMS)
def test_describe_then_from_described_is_the_same_plan(form):
    plan = plan_of(form)
    assert OutputPlan.from_described(plan.describe()) == plan
    # As stored: through JSON, which has no tuples or frozensets.
    assert OutputPlan.from_described(json.loads(json.dumps(plan.describe()))) == plan


@pytest.mark.parametrize("form", ROUND_TRIP_FORMS)
def test_a_plans_variant_options_are_stable_and_survive_its_round_trip(form):
    plan, again = plan_of(form), plan_of(dict(form))
    assert plan == again
    stored = OutputPlan.from_described(json.loads(json.dumps(plan.describe())))
    for position in range(len(plan.renditions)):
        described = RenditionOptions.of(plan, position).describe()
        # Equal plans give equal descriptions, and so equal variants.
        assert described == RenditionOptions.of(again, position).describe()
        # A plan read back gives the same variant options.
        assert RenditionOptions.of(stored, position) == RenditionOptions.of(plan, position)
        assert RenditionOptions.of(stored, position).describe() == described
        # The description is JSON as it is (variant_key dumps it) and the same once through JSON.
        assert json.loads(json.dumps(described, sort_keys=True)) == json.loads(json.dumps(described))
        first = position == 0
        assert described["rules"] == (rules_described(plan.rules) if first else None)
        assert described["hashed"] is (plan.duplicates and first)


def test_different_plans_give_different_variant_options():
    one = RenditionOptions.of(plan_of({"fit": "pad", "aspect": "1:1"}), 0).describe()
    other = RenditionOptions.of(plan_of({"fit": "pad", "aspect": "1:1", "background": "black"}), 0).describe()
    assert one != other
    stripped = RenditionOptions.of(plan_of({"fit": "pad", "aspect": "1:1", "strip": "all"}), 0).describe()
    assert stripped != one
    assert stripped["metadata"] == "strip_all"


def test_a_request_level_value_is_refused_under_its_own_name_beside_a_json_list():
    renditions = json.dumps([{"name": "a"}, {"name": "b", "width": 100, "height": 100}])
    with pytest.raises(ApiError) as refused:
        plan_of({"fit": "pad", "width": "20000", "height": "100", "renditions": renditions})
    assert refused.value.details[0]["field"] == "width"
