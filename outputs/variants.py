"""Outputs shared across requests: one encode per (caller, source bytes, options), and what a URL sent last.

An output is found by its *variant*, an HMAC-SHA256 of the caller, the source's SHA-256 and the options
under a key derived from the service's secret: the same work has the same variant, and without the secret
nobody can compute one. Reuse never crosses callers: each API key (and the open service) has variants of
its own, so one caller's reuse, and how fast its images finish, says nothing of another's uploads.

Who encodes a variant is settled in ``encode_claims``. Each function is a short transaction of its own.
Clean-up (``retention``) deletes an output only when no image points at it and no lookup has touched it for
a grace period, so a worker that found an output has that long to point its image at it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from compliance.rules import CHECKS_VERSION, ProfileRules
from database import db_now
from imaging.renditions import RenditionSpec
from models import ImageOutput, SourceVersion, db, utcnow
from output_plan.plan import OutputPlan, rules_described, spec_described

#: Raised when an encoder change makes earlier outputs of the same options differ from new ones.
PIPELINE_VERSION = 1
_EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
#: A source version seen again unchanged is written again only this long after it was last written.
SOURCE_REFRESH = timedelta(days=1)


@dataclass(frozen=True)
class OutputOptions:
    """Everything that changes the encoded bytes."""

    output_format: str = "jpeg"
    #: None: chosen per image to reach ``target_score``.
    quality: int | None = 50
    target_score: float | None = None
    max_dimension: int | None = None
    never_bigger: bool = True

    def describe(self) -> dict[str, object]:
        return {
            "pipeline": PIPELINE_VERSION,
            "format": self.output_format,
            "quality": self.quality,
            "target_score": self.target_score,
            "max_dimension": self.max_dimension,
            "never_bigger": self.never_bigger,
        }


@dataclass(frozen=True)
class RenditionOptions:
    """Everything that changes one rendition's bytes or its recorded checks (see output_plan)."""

    spec: RenditionSpec
    rules: ProfileRules | None = None
    metadata: str = "keep_rights"
    #: Whether the source's perceptual hash is recorded with the output.
    hashed: bool = False
    #: What transparency is flattened onto: the first rendition's background, for every rendition of a plan.
    flattened_onto: tuple[int, int, int] = (255, 255, 255)

    @classmethod
    def of(cls, plan: OutputPlan, position: int) -> RenditionOptions:
        """Rendition ``position`` of ``plan``: the first carries the checks and the hash."""
        first = position == 0
        return cls(
            plan.renditions[position].spec,
            rules=plan.rules if first else None,
            metadata=plan.metadata,
            hashed=plan.duplicates and first,
            flattened_onto=plan.first.spec.canvas.background,
        )

    @property
    def output_format(self) -> str:
        return self.spec.output_format

    def describe(self) -> dict[str, object]:
        return {
            "pipeline": PIPELINE_VERSION,
            **spec_described(self.spec),
            "rules": rules_described(self.rules),
            "checks": CHECKS_VERSION if self.rules is not None else None,
            "metadata": self.metadata,
            "hashed": self.hashed,
            "flattened_onto": list(self.flattened_onto),
        }


@dataclass(frozen=True)
class EncodedFigures:
    """What an encode made: the source's and the output's sizes, the output's pixels, quality and score."""

    bytes_in: int
    bytes_out: int
    width: int
    height: int
    quality: int | None
    score: float | None
    kept_source: bool
    #: The checks of the source and the output against a profile's rules (see compliance.report).
    compliance: dict | None = None
    #: The source's perceptual hash, signed.
    phash: int | None = None


@dataclass(frozen=True)
class StoredOutput:
    """An output ready to point an image at."""

    id: int
    storage_key: str
    figures: EncodedFigures


@dataclass(frozen=True)
class KnownSource:
    """What a caller's URL answered the last time: the validators to send, and its bytes' hash."""

    etag: str | None
    last_modified: str | None
    content_sha256: str
    #: When it was last written; retention forgets versions not written for RETENTION_DAYS.
    updated_at: datetime | None = field(default=None, compare=False)

    def is_fresh(self, within: timedelta = SOURCE_REFRESH) -> bool:
        return self.updated_at is not None and self.updated_at > utcnow() - within


def variant_key(secret: bytes, owner: str, content_sha256: str, options: OutputOptions) -> str:
    """The variant of this work: equal for equal (caller, bytes, options), unguessable without ``secret``."""
    message = json.dumps([owner, content_sha256, options.describe()], sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def variant_secret(service_secret: str) -> bytes:
    """The key of the variants, derived from the service's secret (shared by every API and worker process)."""
    return hmac.new(service_secret.encode(), b"image-output-variants", hashlib.sha256).digest()


def owner_of(owner_key_hash: str | None) -> str:
    return owner_key_hash or ""


def output_key(variant: str, output_id: int, output_format: str) -> str:
    return f"objects/{variant[:2]}/{variant}-{output_id}.{_EXTENSIONS[output_format]}"


def as_stored(row: ImageOutput) -> StoredOutput:
    figures = EncodedFigures(
        row.bytes_in or 0,
        row.bytes_out or 0,
        row.width or 0,
        row.height or 0,
        row.quality,
        row.score,
        row.kept_source,
        row.compliance,
        row.phash,
    )
    return StoredOutput(row.id, row.storage_key, figures)


def find_stored(variant: str, commit: bool = True) -> StoredOutput | None:
    """The stored output of ``variant``, marked as just used so that clean-up leaves it alone; or None.

    With ``commit=False`` the caller's transaction goes on, to be ended by the caller.
    """
    row = db.session.execute(
        update(ImageOutput)
        .where(
            ImageOutput.id
            == select(ImageOutput.id)
            .where(ImageOutput.variant == variant, ImageOutput.stored_at.is_not(None))
            .order_by(ImageOutput.id)
            .limit(1)
            .scalar_subquery()
        )
        .values(last_used_at=db_now())
        .returning(ImageOutput)
    ).scalar_one_or_none()
    found = as_stored(row) if row is not None else None
    if commit:
        db.session.commit()
    return found


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def known_sources(sources: list[tuple[str, str]]) -> dict[tuple[str, str], KnownSource]:
    """``known_source`` of each (owner, url), in one query within the caller's transaction; those known only."""
    if not sources:
        return {}
    by_hash = {(owner, _url_hash(url)): (owner, url) for owner, url in sources}
    rows = db.session.execute(
        select(
            SourceVersion.owner,
            SourceVersion.url_hash,
            SourceVersion.etag,
            SourceVersion.last_modified,
            SourceVersion.content_sha256,
            SourceVersion.updated_at,
        ).where(
            SourceVersion.owner.in_({owner for owner, _ in by_hash}),
            SourceVersion.url_hash.in_({url_hash for _, url_hash in by_hash}),
        )
    ).all()
    return {
        by_hash[(row.owner, row.url_hash)]: KnownSource(row.etag, row.last_modified, row.content_sha256, row.updated_at)
        for row in rows
        if (row.owner, row.url_hash) in by_hash
    }


def known_source(owner: str, url: str) -> KnownSource | None:
    """What ``url`` answered this caller last, if it sent validators; None otherwise."""
    known = known_sources([(owner, url)]).get((owner, url))
    db.session.rollback()
    return known


def remember_source(owner: str, url: str, etag: str | None, last_modified: str | None, content_sha256: str) -> None:
    """Keep what ``url`` answered (validators and bytes' hash) for the next conditional GET; forget it if it
    sent no validators."""
    where = and_(SourceVersion.owner == owner, SourceVersion.url_hash == _url_hash(url))
    if etag is None and last_modified is None:
        db.session.execute(delete(SourceVersion).where(where))
        db.session.commit()
        return
    values = {"etag": etag, "last_modified": last_modified, "content_sha256": content_sha256, "updated_at": utcnow()}
    updated = db.session.execute(update(SourceVersion).where(where).values(values)).rowcount
    if not updated:
        dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
        db.session.execute(
            dialect.insert(SourceVersion)
            .values(owner=owner, url_hash=_url_hash(url), **values)
            .on_conflict_do_update(index_elements=["owner", "url_hash"], set_=values)
        )
    db.session.commit()
