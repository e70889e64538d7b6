"""Where compressed images live: behind one small interface, so the tasks never know which."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from config import Settings


class StorageError(Exception):
    """Storing or locating an object failed."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Store ``data`` under ``key``, replacing what was there; a reader never sees half of it."""

    def url_for(self, key: str) -> str:
        """The absolute URL a client fetches the object from."""


class LocalStorage:
    """Files under a folder, served by the app itself at ``/media/<key>``."""

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root
        self.public_base_url = public_base_url

    def path_for(self, key: str) -> Path:
        """The file for ``key``; refuses keys that would leave the root.

        Raises:
            StorageError: the key is absolute or climbs out of the root.
        """
        if Path(key).is_absolute():
            raise StorageError(f"absolute storage key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise StorageError(f"key outside the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash mid-write leaves a temporary file, never a torn image.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/media/{key}"


class S3Storage:
    """An S3-compatible bucket; output URLs are the objects' URLs."""

    def __init__(self, bucket: str, endpoint_url: str | None, region: str | None, public_base_url: str | None) -> None:
        import boto3  # only needed when this backend is chosen

        self.bucket = bucket
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        base = public_base_url or (
            f"{endpoint_url.rstrip('/')}/{bucket}" if endpoint_url else f"https://{bucket}.s3.amazonaws.com"
        )
        self.public_base_url = base.rstrip("/")

    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        # A PUT is atomic in S3: readers see the old object or the new one, never a part.
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"


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
