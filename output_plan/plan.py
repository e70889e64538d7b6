"""A request's output plan: its named renditions (each a canvas, a size and an encoding), the marketplace
profile whose rules its first rendition is checked against, and the metadata and near-duplicate policies.

A request without one (``Request.output_plan`` None) makes one output per image exactly as before. The plan
is stored as ``describe`` writes it and read back with ``OutputPlan.from_described``; each rendition's
spec is part of what its variant covers (see outputs.rendition_making), so reuse holds per rendition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from compliance.rules import ProfileRules
from imaging.canvas import Canvas
from imaging.renditions import RenditionSpec

#: Metadata policies: keep the copyright, creator and IPTC DigitalSourceType fields (and the ICC profile), or
#: keep nothing but the profile.
METADATA_POLICIES = ("keep_rights", "strip_all")


@dataclass(frozen=True)
class RenditionPlan:
    """One named output of each image."""

    name: str
    spec: RenditionSpec = field(default_factory=RenditionSpec)


@dataclass(frozen=True)
class OutputPlan:
    """What a request asked beyond one plain output per image."""

    renditions: tuple[RenditionPlan, ...]
    profile: str | None = None
    #: The profile's rules, checked on each source and on its first rendition.
    rules: ProfileRules | None = None
    metadata: str = "keep_rights"
    #: Whether sources are hashed and near-duplicates flagged.
    duplicates: bool = False

    @property
    def first(self) -> RenditionPlan:
        return self.renditions[0]

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "rules": rules_described(self.rules),
            "metadata": self.metadata,
            "duplicates": self.duplicates,
            "renditions": [{"name": item.name, **spec_described(item.spec)} for item in self.renditions],
        }

    @classmethod
    def from_described(cls, described: dict[str, Any]) -> OutputPlan:
        rules = described.get("rules")
        return cls(
            renditions=tuple(
                RenditionPlan(item["name"], spec_from_described(item)) for item in described["renditions"]
            ),
            profile=described.get("profile"),
            rules=_rules_from_described(rules) if rules is not None else None,
            metadata=described.get("metadata", "keep_rights"),
            duplicates=bool(described.get("duplicates")),
        )


def spec_described(spec: RenditionSpec) -> dict[str, Any]:
    canvas = asdict(spec.canvas)
    canvas["background"] = list(spec.canvas.background)
    canvas["aspect"] = list(spec.canvas.aspect) if spec.canvas.aspect else None
    return {
        "format": spec.output_format,
        "quality": spec.quality,
        "target_score": spec.target_score,
        "max_dimension": spec.max_dimension,
        "max_bytes": spec.max_bytes,
        "canvas": canvas,
    }


def spec_from_described(described: dict[str, Any]) -> RenditionSpec:
    canvas = dict(described["canvas"])
    canvas["background"] = tuple(canvas["background"])
    canvas["aspect"] = tuple(canvas["aspect"]) if canvas.get("aspect") else None
    return RenditionSpec(
        canvas=Canvas(**canvas),
        max_dimension=described.get("max_dimension"),
        output_format=described["format"],
        quality=described.get("quality"),
        target_score=described.get("target_score"),
        max_bytes=described.get("max_bytes"),
    )


def rules_described(rules: ProfileRules | None) -> dict[str, Any] | None:
    if rules is None:
        return None
    described = asdict(rules)
    described["aspect"] = list(rules.aspect) if rules.aspect else None
    described["formats"] = sorted(rules.formats) if rules.formats is not None else None
    return described


def _rules_from_described(described: dict[str, Any]) -> ProfileRules:
    values = dict(described)
    values["aspect"] = tuple(values["aspect"]) if values.get("aspect") else None
    values["formats"] = frozenset(values["formats"]) if values.get("formats") is not None else None
    return ProfileRules(**values)
