"""Where compressed images live: behind one small interface, so the tasks never know which."""

from __future__ import annotations

from config import Settings
from storage.interface import (
    MEDIA_TYPES,
    OUTPUT_KEY,
    SHARED_PREFIX,
    ListedObject,
    Storage,
    StorageError,
    is_output_key,
    media_type,
    shared_output_id,
)
from storage.local import LocalStorage
from storage.s3 import S3Storage

__all__ = [
    "MEDIA_TYPES",
    "OUTPUT_KEY",
    "SHARED_PREFIX",
    "ListedObject",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "from_settings",
    "is_output_key",
    "media_type",
    "shared_output_id",
]


def from_settings(settings: Settings) -> Storage:
    """The storage backend the settings name."""
    if settings.storage_backend == "s3":
        return S3Storage(
            bucket=settings.s3["S3_BUCKET"],
            endpoint_url=settings.s3.get("S3_ENDPOINT_URL"),
            region=settings.s3.get("S3_REGION"),
            public_base_url=settings.s3.get("S3_PUBLIC_BASE_URL"),
        )
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    return LocalStorage(settings.storage_root, settings.public_base_url)
