"""kombu's Redis transport with one repair: a channel whose connection was already closed says so with a
connection error, which every caller is written to expect, instead of an AttributeError that stops the worker.

When a worker loses Redis, Celery 5.7 collects the connection (its transport lets go of its settings) and
then closes it. Closing a channel that holds unacknowledged messages first restores them, and a thread that
finishes a task afterwards acknowledges on the same channel: both ask the channel for a new client, built
from settings that are gone. kombu raised AttributeError there, which Celery takes for an unrecoverable
error, so the worker exited. With a connection error instead, the restore and the late acknowledgement are
given up as on any lost connection: Redis keeps the messages under their visibility timeout, or lost them
with its restart, and the database's records (the sweeper, the outbox) resend whatever was lost.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis

#: The URL schemes this transport serves; others (amqp://, filesystem://) keep kombu's own.
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
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
