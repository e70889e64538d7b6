"""kombu's Redis transport with two repairs.

A message's visibility is judged by Redis's clock. kombu stamps an unacknowledged message with the time of
the worker that took it, and any worker restores (hands out again) those stamped more than the visibility
timeout before its own time. A worker whose clock runs ten minutes slow stamped its messages ten minutes in
the past, so the next worker to start handed them out again while they ran. Both the stamp and the restore's
cut-off now come from Redis's TIME.

A channel whose connection was already closed says so with a connection error, which every caller is written
to expect, instead of an AttributeError that stops the worker.

When a worker loses Redis, Celery 5.7 collects the connection (its transport lets go of its settings) and
then closes it. Closing a channel that holds unacknowledged messages first restores them, and a thread that
finishes a task afterwards acknowledges on the same channel: both ask the channel for a new client, built
from settings that are gone. kombu raised AttributeError there, which Celery takes for an unrecoverable
error, so the worker exited. With a connection error instead, the restore and the late acknowledgement are
given up as on any lost connection: Redis keeps the messages under their visibility timeout, or lost them
with its restart, and the database's records (the sweeper, the outbox) resend whatever was lost.
"""

from __future__ import annotations

from contextlib import suppress

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

#: The URL schemes this transport serves; others (amqp://, filesystem://) keep kombu's own.
SCHEMES = ("redis", "rediss")


def broker_time(client: redis.Redis) -> float:
    """Redis's clock, in seconds since the epoch."""
    seconds, microseconds = client.time()
    return seconds + microseconds / 1_000_000


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag) -> None:
        delivery = message.delivery_info
        with self.channel.conn_or_acquire() as client:
            stamp = broker_time(client)
            raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            client.pipeline().zadd(self.unacked_index_key, {delivery_tag: stamp}).hset(
                self.unacked_key, delivery_tag, raw
            ).execute()
        # kombu's own bookkeeping of what this channel delivered (virtual.QoS, not the Redis QoS's append).
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        with self.channel.conn_or_acquire() as client:
            ceil = broker_time(client) - self.visibility_timeout
            mutex = kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire)
            with suppress(kombu_redis.MutexHeld), mutex:
                visible = client.zrange(
                    self.unacked_index_key,
                    ceil,
                    0,
                    desc=True,
                    byscore=True,
                    offset=num and start,
                    num=num,
                    withscores=True,
                )
                for tag, _ in visible or []:
                    self.restore_by_tag(tag, client)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """This transport's import path when every URL of ``broker_url`` (failover URLs are separated by ';') is
    one of Redis's; else None, kombu's choice by scheme."""
    schemes = {url.strip().split("://", 1)[0] for url in broker_url.split(";") if url.strip()}
    return f"{__name__}:Transport" if schemes and schemes <= set(SCHEMES) else None
