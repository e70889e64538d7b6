"""An upload's output plan read from its fields: a marketplace ``profile``, canvas options, ``renditions`` (a
compact list, ``main:2048,thumb:400x400:pad``, or JSON objects), ``strip`` and ``duplicates``; or all of them,
and the encoding fields too, as one JSON object in ``options``.

Every problem is refused with ``422`` naming the field, before anything is written. A request that gives none
of these fields has no plan: one plain output per image, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from errors import ApiError
from imaging import canvas, pipeline
from imaging.renditions import RenditionSpec
from marketplaces.profiles import PROFILES
from output_plan import values
from output_plan.plan import OutputPlan, RenditionPlan

#: What shapes an output beyond its encoding, for the request or a rendition.
CANVAS_FIELDS = (
    "fit",
    "width",
    "height",
    "aspect",
    "background",
    "trim",
    "margin",
    "min_dimension",
    "upscale",
    "max_bytes",
    "gravity",
)
#: The fields that make a plan; any of them given makes the request's outputs follow one.
PLAN_FIELDS = ("profile", *CANVAS_FIELDS, "strip", "duplicates", "renditions")
#: The encoding fields the ``options`` object may carry too.
ENCODING_FIELDS = ("format", "quality", "target_score", "max_dimension")
#: What a rendition may set for itself; the rest of its options are the request's.
RENDITION_FIELDS = ("name", *CANVAS_FIELDS, *ENCODING_FIELDS)
MAX_RENDITIONS = 10
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_COMPACT = re.compile(r"(?P<name>[^:]+):(?P<size>\d+|\d+x\d+)(?::(?P<fit>\w+))?")


def has_plan_fields(form: Mapping[str, str]) -> bool:
    return any(form.get(name, "").strip() for name in (*PLAN_FIELDS, "options"))


def read_plan(form: Mapping[str, str], encoding: Mapping[str, Any]) -> OutputPlan | None:
    """The plan the upload's fields ask for, or None when they ask none.

    ``encoding``: those of the request's format, quality (``auto`` or a number), target_score and max_dimension
    the form gave, as already read (every rendition's); the ``options`` object may set them instead.
    Raises ApiError 422 naming the field of the first problem found.
    """
    given = {name: form[name].strip() for name in PLAN_FIELDS if form.get(name, "").strip()}
    options = _options_object(form.get("options", "").strip())
    for name in options:
        if name in given or (name in ENCODING_FIELDS and form.get(name, "").strip()):
            raise values.invalid(name, f"'{name}' is given both as a field and in 'options': give it once.")
    given |= options
    if not given:
        return None
    profile = None
    presets: dict[str, Any] = {}
    if "profile" in given:
        name = str(given.pop("profile")).strip().lower()
        if name not in PROFILES:
            known = ", ".join(PROFILES)
            raise ApiError(
                422,
                "unknown_profile",
                f"There is no profile {name[:40]!r}; the profiles are: {known}.",
                details=[{"field": "profile", "message": f"one of: {known}"}],
            )
        profile = PROFILES[name]
        presets = dict(profile.options)
    settings = {name: value for name, value in encoding.items() if value is not None}
    settings |= {name: given.pop(name) for name in list(given) if name in RENDITION_FIELDS}
    metadata = "strip_all" if _choice(given, "strip", ("all", "rights"), "rights") == "all" else "keep_rights"
    duplicates = values.flag(given.get("duplicates"), "duplicates", default=profile is not None)
    first = _merged(presets, settings)
    # Each of the request's own values is read as such first: a problem names the field as the request gave it.
    for name, value in settings.items():
        if name in values.READERS and value is not None:
            values.READERS[name](value, name)
    renditions = _renditions(given.get("renditions"), first, settings)
    return OutputPlan(
        renditions=renditions,
        profile=profile.name if profile else None,
        rules=profile.rules if profile else None,
        metadata=metadata,
        duplicates=duplicates,
    )


def _options_object(raw: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as error:
        raise values.invalid("options", f"'options' is not valid JSON: {error}.") from None
    if not isinstance(options, dict):
        raise values.invalid("options", "'options' must be a JSON object of upload fields.")
    for name in options:
        if name not in PLAN_FIELDS and name not in ENCODING_FIELDS:
            raise values.invalid(f"options.{name}"[:80], f"'options' has no field {name[:40]!r}.")
    return options


def _renditions(raw: Any, first: dict[str, Any], others: dict[str, Any]) -> tuple[RenditionPlan, ...]:
    """The renditions asked: the first on the profile's presets and the request's options (``first``), the
    others on the request's options alone (``others``); each with its own on top."""
    if raw is None:
        return (RenditionPlan("main", _spec(first, "")),)
    items = _rendition_items(raw)
    if not 1 <= len(items) <= MAX_RENDITIONS:
        raise values.invalid(
            "renditions", f"'renditions' must list 1 to {MAX_RENDITIONS} renditions, got {len(items)}."
        )
    made: list[RenditionPlan] = []
    for index, item in enumerate(items):
        where = f"renditions[{index}]"
        unknown = sorted(set(item) - set(RENDITION_FIELDS))
        if unknown:
            raise values.invalid(f"{where}.{unknown[0]}"[:80], f"A rendition has no option {unknown[0][:40]!r}.")
        name = str(item.get("name", "")).strip().lower()
        if not _NAME.fullmatch(name):
            raise values.invalid(
                f"{where}.name",
                "A rendition's name is 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit.",
            )
        if any(plan.name == name for plan in made):
            raise values.invalid(f"{where}.name", f"Two renditions are named {name!r}: each name must be unique.")
        own = {key: value for key, value in item.items() if key != "name"}
        settings = first if index == 0 else others
        own |= _box_kept_as_aspect(own, settings)
        made.append(RenditionPlan(name, _spec(_merged(settings, own), f"{where}.")))
    return tuple(made)


#: Options that say one thing between them: the one given over inherited ones drops the others.
_TOGETHER = ({"width", "height"}, {"aspect"}), ({"quality"}, {"target_score"})


def _merged(inherited: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` options over ``inherited`` ones: a box given replaces an inherited aspect and the other way
    round; a quality given without a target score drops an inherited one."""
    merged = inherited | own
    set_here = {name for name, value in own.items() if value is not None}
    for first, second in _TOGETHER:
        for given, other in ((first, second), (second, first)):
            if set_here & given and not set_here & other:
                for name in other:
                    merged.pop(name, None)
    return merged


def _box_kept_as_aspect(own: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``NAME:N`` under a padded or covered box (a profile's) keeps the box's shape, N on its longest side."""
    merged = settings | own
    sized_alone = own.get("max_dimension") is not None and own.get("width", "") is None
    boxed = settings.get("width") and settings.get("height") and not merged.get("aspect")
    if sized_alone and boxed and merged.get("fit") in ("pad", "cover"):
        width, height = values.side(settings["width"], "width"), values.side(settings["height"], "height")
        longest = max(width, height)
        return {"aspect": f"{width / longest}:{height / longest}"}
    return {}


def _rendition_items(raw: Any) -> list[dict[str, Any]]:
    """The renditions as objects: from a JSON list (given as one, or as text) or the compact form."""
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise values.invalid("renditions", f"'renditions' is not valid JSON: {error}.") from None
    if isinstance(raw, list):
        if not all(isinstance(item, dict) for item in raw):
            raise values.invalid("renditions", "Each rendition of the JSON list must be an object.")
        return raw
    if not isinstance(raw, str):
        raise values.invalid("renditions", "'renditions' must be a list like 'main:2048,thumb:400x400:pad' or JSON.")
    items = []
    for index, part in enumerate(piece.strip() for piece in raw.split(",")):
        found = _COMPACT.fullmatch(part)
        if found is None:
            raise values.invalid(
                f"renditions[{index}]",
                f"Cannot read rendition {part[:60]!r}: write NAME:SIZE or NAME:WIDTHxHEIGHT[:FIT], "
                "e.g. 'main:2048,thumb:400x400:pad'.",
            )
        item: dict[str, Any] = {"name": found["name"]}
        if "x" in found["size"]:
            item["width"], item["height"] = found["size"].split("x")
        else:
            item["max_dimension"] = found["size"]
            item["width"] = item["height"] = None
        if found["fit"]:
            item["fit"] = found["fit"]
        items.append(item)
    return items


def _spec(options: dict[str, Any], where: str) -> RenditionSpec:
    """One rendition's spec from its merged options; ``where`` prefixes the field names of its errors."""

    def read(name: str, parse: Callable[[Any, str], Any], default: Any = None) -> Any:
        value = options.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        return parse(value, where + name)

    fit = read("fit", lambda value, field: values.one_of(value, field, canvas.FITS), "contain")
    width = read("width", values.side)
    height = read("height", values.side)
    aspect = read("aspect", values.aspect)
    if fit != "contain" and aspect is None and (width is None or height is None):
        raise values.invalid(where + "fit", f"fit={fit} needs a width and a height, or an aspect ratio such as 1:1.")
    if fit == "contain" and aspect is not None:
        raise values.invalid(where + "aspect", "An aspect ratio needs fit=pad or fit=cover.")
    max_dimension = read("max_dimension", values.side)
    min_dimension = read("min_dimension", values.side)
    if max_dimension is not None and min_dimension is not None and min_dimension > max_dimension:
        raise values.invalid(where + "min_dimension", "min_dimension is larger than max_dimension.")
    quality, target_score = _quality(options, where)
    output_format = read("format", values.output_format, "jpeg")
    shape = canvas.Canvas(
        fit=fit,
        width=width,
        height=height,
        aspect=aspect,
        background=read("background", values.colour, (255, 255, 255)),
        trim=read("trim", values.trim),
        margin=read("margin", values.margin, 0.0),
        min_dimension=min_dimension,
        upscale=read("upscale", lambda value, field: values.flag(value, field, False), False),
        gravity=read("gravity", lambda value, field: values.one_of(value, field, canvas.GRAVITIES), "centre"),
    )
    return RenditionSpec(
        canvas=shape,
        max_dimension=max_dimension,
        output_format=output_format,
        quality=quality,
        target_score=target_score,
        max_bytes=read("max_bytes", values.max_bytes),
    )


def _quality(options: dict[str, Any], where: str) -> tuple[int | None, float | None]:
    quality = options.get("quality")
    auto = isinstance(quality, str) and quality.strip().lower() == "auto"
    if auto or (quality is None and options.get("target_score") is not None):
        score = options.get("target_score")
        if score is None:
            return None, pipeline.DEFAULT_TARGET_SCORE
        target = values.number(score, where + "target_score")
        if not pipeline.TARGET_SCORE_MIN <= target <= pipeline.TARGET_SCORE_MAX:
            raise values.invalid(
                where + "target_score",
                f"target_score must be from {pipeline.TARGET_SCORE_MIN} to {pipeline.TARGET_SCORE_MAX}.",
            )
        return None, target
    if options.get("target_score") is not None:
        raise values.invalid(where + "target_score", "target_score applies only with quality=auto.")
    if quality is None:
        return 50, None
    return values.integer(quality, where + "quality", 1, 95), None


def _choice(given: dict[str, Any], field: str, choices: tuple[str, ...], default: str) -> str:
    return values.one_of(given[field], field, choices) if field in given else default
