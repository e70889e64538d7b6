"""Where compressed images live: behind one small interface, so the tasks never know which."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Protocol

from config import Settings

#: The keys outputs are stored under: ``<request uuid4>/<image id>.<format>`` (before outputs were
#: shared), or by variant, ``objects/<2 hex>/<variant hex>-<output id>.<format>`` (``outputs``). Nothing
#: else under the root is ever served.
OUTPUT_KEY = re.compile(
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/[0-9]{1,20}"
    r"|objects/[0-9a-f]{2}/[0-9a-f]{64}-[0-9]{1,20})"
    r"\.(?P<format>jpg|webp|avif)"
)
MEDIA_TYPES = {"jpg": "image/jpeg", "webp": "image/webp", "avif": "image/avif"}


class StorageError(Exception):
    """Storing or locating an object failed."""


def is_output_key(key: str) -> bool:
    """True if ``key`` has the shape of an output's key (which says nothing of whether it exists)."""
    return OUTPUT_KEY.fullmatch(key) is not None


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

    def url_for(self, key: str) -> str:
        """The absolute URL a client fetches the object from."""

    def local_path(self, key: str) -> Path | None:
        """The file the app itself serves for ``key``; None if it serves no such output (or none at all)."""


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
        """Write then rename: a crash mid-write leaves a temporary file, never a torn image.

        Raises:
            StorageError: the folder cannot be written (full, read-only, gone).
        """
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        except OSError as error:
            raise StorageError(f"cannot write under {path.parent}: {error.strerror or error}") from error
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp_name, path)
        except OSError as error:
            Path(tmp_name).unlink(missing_ok=True)
            raise StorageError(f"cannot write {path.name}: {error.strerror or error}") from error
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        """Remove the file, if there is one.

        Raises:
            StorageError: the file exists and cannot be removed.
        """
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot remove {key}: {error.strerror or error}") from error

    def delete_orphaned_temporaries(self, older_than_s: float) -> int:
        """Every ``put`` runs inside a task, and no task outlives its hard time limit: a temporary
        file older than that was left by a worker killed between the write and the rename.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in (*self.root.glob("*/.tmp-*"), *self.root.glob("objects/*/.tmp-*")):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # renamed or removed meanwhile
        return removed

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/media/{key}"

    def local_path(self, key: str) -> Path | None:
        # Only outputs: the root may hold other files (temporary ones, or worse if it is the instance folder).
        if not is_output_key(key):
            return None
        try:
            path = self.path_for(key)
        except StorageError:
            return None
        return path if path.is_file() else None


class S3Storage:
    """An S3-compatible bucket; output URLs are the objects' URLs."""

    def __init__(self, bucket: str, endpoint_url: str | None, region: str | None, public_base_url: str | None) -> None:
        import boto3  # only needed when this backend is chosen
        from botocore.config import Config

        self.bucket = bucket
        # Short timeouts and few retries here: a failed put is retried by the task, with back-off.
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        base = public_base_url or (
            f"{endpoint_url.rstrip('/')}/{bucket}" if endpoint_url else f"https://{bucket}.s3.amazonaws.com"
        )
        self.public_base_url = base.rstrip("/")

    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """A PUT is atomic in S3: readers see the old object or the new one, never a part.

        Raises:
            StorageError: the store did not take the object (an error answer, a timeout, no connection).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"the object store did not take {key}: {error}") from error

    def delete(self, key: str) -> None:
        """Remove the object (S3 answers success for a missing one).

        Raises:
            StorageError: the store did not answer, or refused.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"the object store did not delete {key}: {error}") from error

    def delete_orphaned_temporaries(self, older_than_s: float) -> int:
        return 0  # a PUT to the store is whole or nothing: it leaves no temporary object

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"

    def local_path(self, key: str) -> Path | None:
        return None  # clients fetch the objects from the store itself


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
