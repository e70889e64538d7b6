"""What the answers add for a request with an output plan: its profile, renditions and compliance summary, and
for each image its renditions, its compliance report and the earlier image it duplicates. A plain request's
answers are unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import aliased

from compliance import report
from models import Image, ImageRendition, ImageStatus, Product, ProductImage, Request, db
from output_plan.plan import OutputPlan, spec_described
from storage import Storage


def plan_of(request: Request) -> OutputPlan | None:
    return OutputPlan.from_described(request.output_plan) if request.output_plan is not None else None


def request_fields(request: Request) -> dict[str, Any]:
    """The request's plan as answered: profile, renditions (with their options), metadata and duplicates
    policies, and the compliance summary over the images checked so far."""
    plan = plan_of(request)
    if plan is None:
        return {}
    fields: dict[str, Any] = {
        "profile": plan.profile,
        "renditions": [{"name": item.name, **spec_described(item.spec)} for item in plan.renditions],
        "metadata": plan.metadata,
        "duplicates": plan.duplicates,
    }
    if plan.profile is not None:
        fields["compliance"] = compliance_summary(request.id, plan.profile)
    if plan.duplicates:
        fields["duplicate_images"] = duplicate_count(request.id)
    return fields


def webhook_fields(request: Request) -> dict[str, Any]:
    """What a planned request's webhook adds: each rendition's totals, the compliance summary, duplicates."""
    plan = plan_of(request)
    if plan is None:
        return {}
    made = {
        row.position: (row.images, int(row.bytes_out or 0))
        for row in db.session.execute(
            select(
                ImageRendition.position,
                func.count().label("images"),
                func.sum(ImageRendition.bytes_out).label("bytes_out"),
            )
            .join(Image, Image.id == ImageRendition.image_id)
            .where(Image.request_id == request.id)
            .group_by(ImageRendition.position)
        )
    }
    renditions = []
    for position, item in enumerate(plan.renditions):
        if position == 0:
            images, bytes_out = _completed_images(request.id), request.bytes_out
        else:
            images, bytes_out = made.get(position, (0, 0))
        renditions.append({"name": item.name, "images": images, "bytes_out": bytes_out})
    fields: dict[str, Any] = {"renditions": renditions}
    if plan.profile is not None:
        fields["compliance"] = compliance_summary(request.id, plan.profile)
    if plan.duplicates:
        fields["duplicate_images"] = duplicate_count(request.id)
    return fields


def _completed_images(request_id: uuid.UUID) -> int:
    completed = (Image.request_id == request_id, Image.status == ImageStatus.COMPLETED)
    return db.session.scalar(select(func.count()).select_from(Image).where(*completed)) or 0


def compliance_summary(request_id: uuid.UUID, profile: str) -> dict[str, Any]:
    reports = db.session.scalars(
        select(Image.compliance).where(Image.request_id == request_id, Image.compliance.is_not(None))
    ).all()
    return report.summary(profile, list(reports))


def duplicate_count(request_id: uuid.UUID) -> int:
    flagged = (Image.request_id == request_id, Image.duplicate_of_id.is_not(None))
    return db.session.scalar(select(func.count()).select_from(Image).where(*flagged)) or 0


def rendition_names(request: Request) -> list[str]:
    """The names of the request's renditions, in order; empty for a plain request."""
    plan = plan_of(request)
    return [item.name for item in plan.renditions] if plan is not None else []


def renditions_of(image_ids: Sequence[int]) -> dict[int, dict[int, Row]]:
    """Each image's renditions beyond its first: image id -> position -> row."""
    found: dict[int, dict[int, Row]] = {}
    if not image_ids:
        return found
    rows = db.session.execute(
        select(
            ImageRendition.image_id,
            ImageRendition.position,
            ImageRendition.name,
            ImageRendition.output_key,
            ImageRendition.bytes_out,
            ImageRendition.width,
            ImageRendition.height,
            ImageRendition.quality,
            ImageRendition.score,
            ImageRendition.reused,
        ).where(ImageRendition.image_id.in_(image_ids))
    ).all()
    for row in rows:
        found.setdefault(row.image_id, {})[row.position] = row
    return found


def duplicates_of(image_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The earlier image each of ``image_ids`` duplicates, if any: its request, product and URL."""
    if not image_ids:
        return {}
    first = aliased(Image)
    rows = db.session.execute(
        select(Image.id, first.id.label("first_id"), first.request_id, first.source_url, Product.name)
        .join(first, first.id == Image.duplicate_of_id)
        .join(ProductImage, ProductImage.image_id == first.id)
        .join(Product, Product.id == ProductImage.product_id)
        .where(Image.id.in_(image_ids))
        .order_by(Image.id, ProductImage.id)
    ).all()
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        found.setdefault(
            row.id,
            {"request_id": str(row.request_id), "product_name": row.name, "input_url": row.source_url},
        )
    return found


@dataclass
class ImageExtras:
    """What a page of a planned request's images adds to each image's answer."""

    names: list[str]
    storage: Storage
    #: Whether the request named a profile: each image then has a compliance report (None until made).
    checked: bool = False
    #: Whether the request looks for near-duplicates: each image then says which one it duplicates, if any.
    duplicates_looked_for: bool = False
    compliance: dict[int, Any] = field(default_factory=dict)
    renditions: dict[int, dict[int, Row]] = field(default_factory=dict)
    duplicates: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, request: Request, images_by_product: dict[int, list[Row]], storage: Storage) -> ImageExtras | None:
        plan = plan_of(request)
        if plan is None:
            return None
        ids = [image.id for images in images_by_product.values() for image in images]
        compliance = {}
        if plan.profile is not None and ids:
            compliance = dict(db.session.execute(select(Image.id, Image.compliance).where(Image.id.in_(ids))).all())
        return cls(
            [item.name for item in plan.renditions],
            storage,
            plan.profile is not None,
            plan.duplicates,
            compliance,
            renditions_of(ids),
            duplicates_of(ids) if plan.duplicates else {},
        )

    def of_image(self, image_id: int, answer: dict[str, Any]) -> dict[str, Any]:
        """The fields added to one image's answer (``answer``: its plain answer)."""
        own = self.renditions.get(image_id, {})
        listed = []
        for position, name in enumerate(self.names):
            if position == 0:
                listed.append(
                    {
                        "name": name,
                        "url": answer["output_url"],
                        "width": answer["width"],
                        "height": answer["height"],
                        "bytes": answer["bytes_out"],
                        "quality": answer["quality"],
                        "score": answer["score"],
                        "reused": answer["reused"],
                    }
                )
                continue
            row = own.get(position)
            listed.append(_rendition_answer(name, row, self.storage))
        added: dict[str, Any] = {"renditions": listed}
        if self.checked:
            added["compliance"] = self.compliance.get(image_id)
        if self.duplicates_looked_for:
            added["duplicate_of"] = self.duplicates.get(image_id)
        return added


def _rendition_answer(name: str, row: Row | None, storage: Storage) -> dict[str, Any]:
    if row is None:
        return {"name": name} | dict.fromkeys(("url", "width", "height", "bytes", "quality", "score", "reused"))
    return {
        "name": name,
        "url": storage.url_for(row.output_key),
        "width": row.width,
        "height": row.height,
        "bytes": row.bytes_out,
        "quality": row.quality,
        "score": row.score,
        "reused": row.reused,
    }
