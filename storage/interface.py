"""The storage interface: what a backend does, the keys outputs live under, and the one error it raises."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

#: The keys outputs are stored under: ``<request uuid4>/<image id>.<format>`` (before outputs were
#: shared), or by variant, ``objects/<2 hex>/<variant hex>-<output id>.<format>`` (``outputs``). Nothing
#: else under the root is ever served.
OUTPUT_KEY = re.compile(
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/[0-9]{1,20}"
    r"|objects/[0-9a-f]{2}/[0-9a-f]{64}-(?P<output_id>[0-9]{1,20}))"
    r"\.(?P<format>jpg|webp|avif)"
)
MEDIA_TYPES = {"jpg": "image/jpeg", "webp": "image/webp", "avif": "image/avif"}
#: Where shared outputs are stored: everything a listing of the store goes through.
SHARED_PREFIX = "objects/"
_LARGEST_ID = 2**63 - 1


@dataclass(frozen=True)
class ListedObject:
    """An object a listing found: its key, and when it was last written."""

    key: str
    modified_at: datetime


class StorageError(Exception):
    """Storing or locating an object failed."""


def is_output_key(key: str) -> bool:
    """True if ``key`` has the shape of an output's key (which says nothing of whether it exists)."""
    return OUTPUT_KEY.fullmatch(key) is not None


def shared_output_id(key: str) -> int | None:
    """The output row id a shared output's key holds; None for any other key."""
    match = OUTPUT_KEY.fullmatch(key)
    if match is None or match["output_id"] is None or int(match["output_id"]) > _LARGEST_ID:
        return None
    return int(match["output_id"])


def media_type(key: str) -> str:
    """The content type of the output stored under ``key``, from its format.

    Raises:
        StorageError: the key is not an output's key.
    """
    match = OUTPUT_KEY.fullmatch(key)
    if match is None:
        raise StorageError(f"not an output key: {key!r}")
    return MEDIA_TYPES[match["format"]]


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Store ``data`` under ``key``, replacing what was there; a reader never sees half of it."""

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens if there is none."""

    def delete_orphaned_temporaries(self, older_than_s: float) -> int:
        """Remove what a writer killed mid-write left behind, older than ``older_than_s``; returns how many."""

    def list_objects(self, start_after: str, limit: int) -> list[ListedObject]:
        """Up to ``limit`` objects under ``SHARED_PREFIX`` whose keys sort after ``start_after``, in key order."""

    def read_chunks(self, key: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The object under ``key``, a chunk at a time, never whole in memory; raises StorageError if it is gone."""

    def url_for(self, key: str) -> str:
        """The absolute URL a client fetches the object from."""

    def local_path(self, key: str) -> Path | None:
        """The file the app itself serves for ``key``; None if it serves no such output (or none at all)."""
