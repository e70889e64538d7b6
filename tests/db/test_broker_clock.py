"""A message's visibility is judged by Redis's clock, on a real Redis: a worker whose clock runs slow does not
have the message it is running handed out again by the next worker to start."""

from __future__ import annotations

import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis
from support.slots import REDIS_URL

from queueing import redis_transport

pytestmark = pytest.mark.usefixtures("redis_prefix")

VISIBILITY_TIMEOUT_S = 15


def _connection(redis_prefix: str, visibility_timeout_s: float) -> Connection:
    return Connection(
        REDIS_URL,
        transport=redis_transport.transport_for(REDIS_URL),
        transport_options={"global_keyprefix": redis_prefix, "visibility_timeout": visibility_timeout_s},
    )


def _restore_now(connection: Connection) -> None:
    connection.default_channel.qos.restore_visible(num=100, interval=1)


def test_a_message_taken_by_a_worker_ten_minutes_slow_is_not_handed_out_again(redis_prefix, monkeypatch):
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("", type="direct"))
    slow, normal = _connection(redis_prefix, VISIBILITY_TIMEOUT_S), _connection(redis_prefix, VISIBILITY_TIMEOUT_S)
    try:
        normal.Producer(normal.default_channel).publish({"n": 1}, routing_key=queue.name, declare=[queue])
        with monkeypatch.context() as slow_clock:
            slow_clock.setattr(kombu_redis, "time", lambda: time.time() - 600)
            taken = queue(slow.default_channel).get(no_ack=False)
        assert taken is not None

        _restore_now(normal)

        assert queue(normal.default_channel).get(no_ack=False) is None
        taken.ack()
    finally:
        slow.release()
        normal.release()


def test_a_message_held_past_the_visibility_timeout_is_still_handed_out_again(redis_prefix):
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("", type="direct"))
    holder, other = _connection(redis_prefix, 1), _connection(redis_prefix, 1)
    try:
        other.Producer(other.default_channel).publish({"n": 2}, routing_key=queue.name, declare=[queue])
        assert queue(holder.default_channel).get(no_ack=False) is not None
        time.sleep(1.5)

        _restore_now(other)

        again = queue(other.default_channel).get(no_ack=False)
        assert again is not None and again.payload == {"n": 2}
        again.ack()
    finally:
        holder.release()
        other.release()
