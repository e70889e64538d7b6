"""Download slots on both of their stores, for the tests of the per-address limit: Redis and lock files."""

from __future__ import annotations

import os
import uuid

import pytest

from support.backing import REQUIRE_SERVICES

REDIS_URL = os.environ.get("TEST_BROKER_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix():
    """A Redis key prefix of the test's own, its keys deleted afterwards."""
    import redis

    prefix = f"imgsvc-test-slots-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis at {REDIS_URL} cannot be reached: {error}", pytrace=False)
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached")
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["redis", "file"])
def make_slots(request, tmp_path):
    """Builds slot sets that share one store, as the processes of a deployment do."""
    from fetching.host_slots import FileHostSlots, RedisHostSlots

    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        return lambda limit: RedisHostSlots(REDIS_URL, limit, prefix)
    return lambda limit: FileHostSlots(tmp_path / "host-slots", limit)
