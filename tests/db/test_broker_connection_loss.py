"""Celery's way with a lost Redis connection, on a real Redis: collect the connection, then close it while a
message is still unacknowledged. kombu's own transport raised AttributeError there, which stopped the worker.

With Redis down, ``collect()`` fails to close the channel and then lets go of the transport's settings; the
test leaves out the outage and does that second step itself, with kombu's own method for it.
"""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue
from support.slots import REDIS_URL

from queueing import redis_transport

pytestmark = pytest.mark.usefixtures("redis_prefix")


def test_closing_a_collected_connection_with_an_unacknowledged_message_is_not_an_error(redis_prefix):
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("", type="direct"))
    connection = Connection(
        REDIS_URL,
        transport=redis_transport.transport_for(REDIS_URL),
        transport_options={"global_keyprefix": redis_prefix},
    )
    channel = connection.default_channel
    connection.Producer(channel).publish({"n": 1}, routing_key=queue.name, declare=[queue])
    message = queue(channel).get(no_ack=False)
    assert message is not None and message.payload == {"n": 1}

    connection._do_close_transport()
    connection.close()
    with pytest.raises(connection.connection_errors):
        message.ack()
