"""The Redis transport's repair: a channel of a closed connection raises a connection error, never AttributeError."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from queueing import redis_transport


@pytest.mark.parametrize(
    ("broker_url", "chosen"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("rediss://cache.example:6380/1", True),
        ("redis://a:6379/0;redis://b:6379/0", True),
        ("amqp://guest:guest@127.0.0.1:5672//", False),
        ("redis://a:6379/0;amqp://b//", False),
        ("filesystem://", False),
        ("", False),
    ],
)
def test_the_repaired_transport_serves_redis_urls_only(broker_url, chosen):
    assert (redis_transport.transport_for(broker_url) == "queueing.redis_transport:Transport") is chosen


def test_a_channel_whose_connection_was_collected_raises_a_connection_error():
    # What Connection.collect() leaves behind: a transport without its client (and so without its settings).
    collected = SimpleNamespace(connection=SimpleNamespace(client=None))
    with pytest.raises(redis.exceptions.ConnectionError):
        redis_transport.Channel._connparams(collected)
