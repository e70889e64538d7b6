"""S3 storage: an S3-compatible bucket whose objects' URLs are the output URLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from storage.interface import SHARED_PREFIX, ListedObject, StorageError


class S3Storage:
    """An S3-compatible bucket; output URLs are the objects' URLs."""

    #: Keys a listing asks for at once (S3 answers at most 1,000).
    LIST_PAGE = 1000

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
            StorageError: the store refused, or did not answer in time. After a timeout the object may be
                stored all the same: the caller's claim keeps naming the key until the sweep deletes it.
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

    def list_objects(self, start_after: str, limit: int) -> list[ListedObject]:
        """ListObjectsV2 under ``objects/``, a page at a time (S3 lists keys in order).

        Raises:
            StorageError: the store did not answer, or refused.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        listed: list[ListedObject] = []
        request = {"Bucket": self.bucket, "Prefix": SHARED_PREFIX, "StartAfter": start_after}
        try:
            while len(listed) < limit:
                page = self.client.list_objects_v2(**request, MaxKeys=min(self.LIST_PAGE, limit - len(listed)))
                listed += [ListedObject(item["Key"], item["LastModified"]) for item in page.get("Contents", [])]
                if not page.get("IsTruncated"):
                    break
                request["ContinuationToken"] = page["NextContinuationToken"]
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"the object store did not list {SHARED_PREFIX}: {error}") from error
        return listed[:limit]

    def read_chunks(self, key: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                yield from body.iter_chunks(chunk_size)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"the object store did not give {key}: {error}") from error

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"

    def local_path(self, key: str) -> Path | None:
        return None  # clients fetch the objects from the store itself
