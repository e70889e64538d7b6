"""The S3 backend against an S3-compatible server on loopback (moto's), as a deployment uses it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from moto.server import ThreadedMotoServer

import storage
from config import Settings

BUCKET = "catalog-media"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    # Output URLs are fetched with a plain GET, so the deployment makes the objects publicly readable.
    public_read = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
        ],
    }
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read))
    return BUCKET


def s3_settings(tmp_path, endpoint: str, **extra: str) -> Settings:
    env = {
        "INSTANCE_DIR": str(tmp_path),
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        **extra,
    }
    return Settings.from_env(env)


def test_s3_backend_stores_and_serves_an_output(tmp_path, s3_endpoint, bucket):
    backend = storage.from_settings(s3_settings(tmp_path, s3_endpoint))
    assert isinstance(backend, storage.S3Storage)

    backend.put("req-1/7.jpg", b"\xff\xd8jpeg bytes")
    backend.put("req-1/7.jpg", b"\xff\xd8rerun overwrites")  # a task run twice writes the same key

    url = backend.url_for("req-1/7.jpg")
    assert url == f"{s3_endpoint}/{BUCKET}/req-1/7.jpg"
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"] == "image/jpeg"
    assert fetched.content == b"\xff\xd8rerun overwrites"


def test_s3_public_base_url_names_a_cdn_in_front_of_the_bucket(tmp_path, s3_endpoint, bucket):
    settings = s3_settings(tmp_path, s3_endpoint, S3_PUBLIC_BASE_URL="https://cdn.example.com/media/")
    assert storage.from_settings(settings).url_for("a/b.jpg") == "https://cdn.example.com/media/a/b.jpg"


def test_s3_listing_pages_through_the_shared_outputs_in_key_order(tmp_path, s3_endpoint, bucket, monkeypatch):
    backend = storage.from_settings(s3_settings(tmp_path, s3_endpoint))
    monkeypatch.setattr(storage.S3Storage, "LIST_PAGE", 2)  # several pages per listing
    keys = sorted(f"objects/{n:02x}/{n:02x}{'0' * 62}-{n}.jpg" for n in (3, 200, 17, 90, 41))
    for key in keys:
        backend.put(key, b"jpeg")
    backend.put("req-2/1.jpg", b"per-request output")

    first = backend.list_objects("", 3)
    assert [item.key for item in first] == keys[:3]
    assert first[0].modified_at.tzinfo is not None
    assert [item.key for item in backend.list_objects(first[-1].key, 10)] == keys[3:]
    assert backend.list_objects(keys[-1], 10) == []
