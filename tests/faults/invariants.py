"""What a fault test reads from outside once a request is final: its images that are not COMPLETED, told in
full in a failure's message; one output per image and nothing else in storage; and a snapshot of both, to
show that nothing changes afterwards.

Every query is on the service's own database, through a connection of the test's own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

#: Images a failure's message lists one by one; the rest are counted.
LISTED = 20
MESSAGE_CHARS = 100


def engine_of(env: dict[str, str]) -> sqlalchemy.Engine:
    """A connection pool of the test's own to the service's database."""
    return sqlalchemy.create_engine(
        env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://"),
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def _shortened(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def not_completed(database: sqlalchemy.Engine, request_id: str | None = None) -> str:
    """A line for each image (of the request, or of the whole database) that is not COMPLETED, the first
    ``LISTED`` of them, with a count; "" when every image is COMPLETED."""
    where = "status <> 'COMPLETED'" + (" AND request_id = :id" if request_id else "")
    with database.connect() as connection:
        count = connection.execute(sqlalchemy.text(f"SELECT count(*) FROM images WHERE {where}"), {"id": request_id})
        count = count.scalar()
        total = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM images" + (" WHERE request_id = :id" if request_id else "")),
            {"id": request_id},
        ).scalar()
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT id, status, attempts, retries, requeues, error_code, error_message FROM images"
                f" WHERE {where} ORDER BY id LIMIT {LISTED}"
            ),
            {"id": request_id},
        ).all()
    if not count:
        return ""
    lines = [f"{count} of {total} images not COMPLETED:"]
    for row in rows:
        error = f", {row.error_code}: {_shortened(row.error_message)}" if row.error_code else ""
        lines.append(
            f"  image {row.id} {row.status}, attempts {row.attempts} (retries {row.retries},"
            f" requeues {row.requeues}){error}"
        )
    if count > len(rows):
        lines.append(f"  … and {count - len(rows)} more")
    return "\n".join(lines)


def completion_problems(database: sqlalchemy.Engine, request_id: str, status: str | None) -> list[str]:
    """What keeps the request from being COMPLETED with every image: its status, each image not COMPLETED."""
    unfinished = not_completed(database, request_id)
    if status == "COMPLETED" and not unfinished:
        return []
    return [f"request {request_id} is {status}; {unfinished or 'every image COMPLETED'}"]


def fail_on(problems: list[str]) -> None:
    """Fail with every problem in the message, in full, without a traceback; nothing if there are none."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def require_completed(database: sqlalchemy.Engine, request_id: str, status: str | None) -> None:
    """Fail, naming every image that is not COMPLETED, unless the request and all its images are."""
    fail_on(completion_problems(database, request_id, status))


@dataclass(frozen=True)
class Outputs:
    """The request's images' outputs, and what storage holds besides."""

    #: Output rows the images point at, by id: (variant, storage key).
    pointed_at: dict[int, tuple[str, str]]
    #: Stored output rows of each of those variants.
    stored_per_variant: dict[str, int]
    #: Output rows of those variants that hold no stored object (claims given up or taken over).
    unstored_rows: int
    #: Files under the storage folder that no image's output names (temporary files included).
    orphans: list[str]
    #: Output keys of images with no file.
    missing: list[str]


def files_in(media: Path) -> dict[str, str]:
    """What local storage holds: each file under the storage folder, by its key, with a hash of its bytes."""
    if not media.is_dir():
        return {}
    return {
        str(path.relative_to(media)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(media.rglob("*"))
        if path.is_file()
    }


def objects_in(client, bucket: str) -> dict[str, str]:
    """What an S3 bucket holds: each object by its key, with its ETag (its bytes' MD5 when written whole)."""
    held = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        held.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return held


#: The keys of the given-up claims (no object stored, superseded) of the variants the request's images point at:
#: an object under one is a late writer's, the sweep's to delete once no task can still be writing it
#: (``lifecycle/orphans.py``), and neither an orphan nor a change.
GIVEN_UP_KEYS = sqlalchemy.text(
    "SELECT o.storage_key FROM image_outputs o WHERE o.stored_at IS NULL AND o.superseded_at IS NOT NULL"
    " AND o.variant IN (SELECT p.variant FROM image_outputs p JOIN images i ON i.output_id = p.id"
    " WHERE i.request_id = :id)"
)


def outputs_of(database: sqlalchemy.Engine, request_id: str, stored: dict[str, str]) -> Outputs:
    """What the request's images point at, and everything in storage (``files_in``, ``objects_in``) measured
    against it."""
    with database.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT o.id, o.variant, o.storage_key, i.output_key FROM images i"
                " JOIN image_outputs o ON o.id = i.output_id WHERE i.request_id = :id"
            ),
            {"id": request_id},
        ).all()
        variants = sorted({row.variant for row in rows})
        per_variant = connection.execute(
            sqlalchemy.text(
                "SELECT variant, count(stored_at), count(*) - count(stored_at) FROM image_outputs"
                " WHERE variant = ANY(:variants) GROUP BY variant"
            ),
            {"variants": variants},
        ).all()
        given_up = set(connection.execute(GIVEN_UP_KEYS, {"id": request_id}).scalars())
    keys = {row.storage_key for row in rows} | {row.output_key for row in rows}
    files = set(stored) - given_up
    return Outputs(
        pointed_at={row.id: (row.variant, row.storage_key) for row in rows},
        stored_per_variant={variant: stored for variant, stored, _ in per_variant},
        unstored_rows=sum(unstored for _, _, unstored in per_variant),
        orphans=sorted(files - keys),
        missing=sorted(keys - files),
    )


def output_problems(outputs: Outputs, images: int) -> list[str]:
    """Unless each image (all of distinct bytes) has an output of its own, its variant's only stored one,
    whose object is in storage, and storage holds nothing else: what is wrong."""
    problems = []
    if len(outputs.pointed_at) != images:
        problems.append(f"{images} images point at {len(outputs.pointed_at)} outputs")
    shared = Counter(variant for variant, _ in outputs.pointed_at.values())
    problems += [
        f"variant {variant[:12]}… has {n} outputs that images point at" for variant, n in shared.items() if n > 1
    ]
    problems += [
        f"variant {variant[:12]}… has {n} stored outputs" for variant, n in outputs.stored_per_variant.items() if n != 1
    ]
    if outputs.orphans:
        problems.append(f"{len(outputs.orphans)} files no image's output names: {outputs.orphans[:LISTED]}")
    if outputs.missing:
        problems.append(f"{len(outputs.missing)} outputs with no file: {outputs.missing[:LISTED]}")
    return ["outputs:\n  " + "\n  ".join(problems)] if problems else []


@dataclass(frozen=True)
class Snapshot:
    """Everything about a final request that nothing may change any more."""

    request: dict
    images: list[tuple]
    outputs: list[tuple]
    files: dict[str, str]


def snapshot(database: sqlalchemy.Engine, request_id: str, stored: dict[str, str]) -> Snapshot:
    """The request's row, its images' rows, the stored outputs of their variants (but when lookups last used
    them; claims given up are the sweep's to delete), and what storage holds, with hashes."""
    with database.connect() as connection:
        request = connection.execute(sqlalchemy.text("SELECT * FROM requests WHERE id = :id"), {"id": request_id})
        request = dict(request.one()._mapping)
        images = [
            tuple(row)
            for row in connection.execute(
                sqlalchemy.text("SELECT * FROM images WHERE request_id = :id ORDER BY id"), {"id": request_id}
            )
        ]
        outputs = [
            tuple(row)
            for row in connection.execute(
                sqlalchemy.text(
                    "SELECT o.id, o.variant, o.storage_key, o.stored_at, o.bytes_out FROM image_outputs o"
                    " WHERE o.stored_at IS NOT NULL AND o.variant IN (SELECT p.variant FROM image_outputs p"
                    " JOIN images i ON i.output_id = p.id WHERE i.request_id = :id) ORDER BY o.id"
                ),
                {"id": request_id},
            )
        ]
        given_up = set(connection.execute(GIVEN_UP_KEYS, {"id": request_id}).scalars())
    return Snapshot(request, images, outputs, {key: held for key, held in stored.items() if key not in given_up})


def changes_between(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed from one snapshot to the other, if anything did."""
    changes = []
    changed = {column: (value, after.request.get(column)) for column, value in before.request.items()}
    changed = {column: values for column, values in changed.items() if values[0] != values[1]}
    if changed:
        changes.append(f"the request's row: {', '.join(f'{c}: {a!r} -> {b!r}' for c, (a, b) in changed.items())}")
    old_images = {row[0]: row for row in before.images}
    for row in after.images:
        if old_images.get(row[0]) != row:
            changes.append(f"image {row[0]}: {old_images.get(row[0])} -> {row}")
    if before.outputs != after.outputs:
        changes.append(f"the outputs' rows: {before.outputs} -> {after.outputs}")
    added = sorted(set(after.files) - set(before.files))
    removed = sorted(set(before.files) - set(after.files))
    rewritten = sorted(key for key in set(before.files) & set(after.files) if before.files[key] != after.files[key])
    for what, keys in (("added", added), ("removed", removed), ("rewritten", rewritten)):
        if keys:
            changes.append(f"files {what}: {keys[:LISTED]}")
    return ["changed after the request was final:\n  " + "\n  ".join(changes[:LISTED])] if changes else []
