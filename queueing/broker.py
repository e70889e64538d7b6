"""Talking to the broker: the queues, sending a task by name, and how many messages a queue holds.

Four queues, so that no kind of work waits behind another: images (the bulk), imports (writing the
rows of a big upload, served by the image workers), webhooks (each due within a second of a final
status, served by webhook workers) and maintenance (the dispatcher's tick, the sweeper and retention,
served by maintenance workers, whose pool no webhook attempt can fill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from urllib.parse import quote, unquote, urlsplit

import requests
from flask import current_app
from kombu import Exchange, Queue

from config import is_amqp
from queueing import task_names

log = logging.getLogger(__name__)

IMAGES_QUEUE = "images"
WEBHOOKS_QUEUE = "webhooks"
MAINTENANCE_QUEUE = "maintenance"
IMPORTS_QUEUE = "imports"
ALL_QUEUES = (IMAGES_QUEUE, IMPORTS_QUEUE, WEBHOOKS_QUEUE, MAINTENANCE_QUEUE)

TASK_ROUTES = {
    task_names.PROCESS_IMAGE_TASK: {"queue": IMAGES_QUEUE},
    task_names.IMPORT_TASK: {"queue": IMPORTS_QUEUE},
    task_names.DELIVER_TASK: {"queue": WEBHOOKS_QUEUE},
    task_names.DISPATCH_TASK: {"queue": MAINTENANCE_QUEUE},
    task_names.SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
    task_names.RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
}


def rabbitmq_queues(queue_type: str) -> list[Queue]:
    """The four queues as RabbitMQ declares them: durable, each on a topic exchange of its own name.

    Topic exchanges, so that a task retried with a countdown on quorum queues goes through kombu's native
    delayed delivery (a chain of TTL queues in RabbitMQ) and never waits in a worker's memory, where it would
    hold a prefetch slot: quorum queues have no global QoS for Celery to raise it with.
    """
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    return [
        Queue(
            name, Exchange(name, type="topic", durable=True), routing_key=name, durable=True, queue_arguments=arguments
        )
        for name in ALL_QUEUES
    ]


def declare_queues(celery_app) -> None:
    """Declare every queue (and its exchange), once, as an image, webhook or maintenance worker starts on quorum
    queues.

    Such a worker binds every queue of the app to kombu's native delayed delivery, and a queue that no worker
    serving it has declared yet (a role not started) failed that binding: an ERROR for each, and a CRITICAL
    "Native delayed delivery will not be available" though the worker's own queues were bound. Declaring a
    durable queue that exists changes nothing; with the broker away, the worker's own retries take over.
    """
    with celery_app.connection_for_write() as connection:
        try:
            connection.connect()
            with connection.channel() as channel:
                for queue in celery_app.amqp.queues.values():
                    queue(channel).declare()
        except (*connection.connection_errors, *connection.channel_errors) as error:
            log.warning("queues: they could not be declared before delayed delivery binds them: %s", error)


def with_host(url: str) -> str:
    """``url``, a bare ``filesystem://`` given a host: the transport ignores it, but kombu warns of its absence."""
    return "filesystem://localhost/" if url == "filesystem://" else url


def send(task_name: str, *args: object, **options: object) -> bool:
    """Hand a task to the broker; False (logged) if the broker is unreachable."""
    celery = current_app.extensions["celery"]
    try:
        celery.send_task(task_name, args=args, **options)
        return True
    except Exception:  # kombu raises many kinds; whatever this drops, the database still holds
        log.warning("broker unreachable: %s%r not sent now", task_name, args, exc_info=True)
        return False


def messages_held(queue: str) -> int | None:
    """Messages in ``queue`` plus those workers have reserved and not acknowledged; None if unknown.

    Reserved messages are counted over every queue (the broker keeps them together), which can
    only overstate what ``queue`` holds.
    """
    settings = current_app.config["SETTINGS"]
    if is_amqp(settings.broker_url):
        return _rabbitmq_messages(settings.broker_url, settings.broker_management_url, queue)
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            channel = connection.default_channel
            # Not passive: Redis keeps no empty lists, so a passive declare of an empty queue fails.
            waiting = channel.queue_declare(queue=queue, durable=True, auto_delete=False).message_count
            reserved = 0
            client = getattr(channel, "client", None)
            unacked_key = getattr(channel, "unacked_key", None)
            if client is not None and unacked_key:
                reserved = int(client.hlen(unacked_key))
            return int(waiting) + reserved
    except Exception:
        log.warning("could not read the length of queue %s", queue, exc_info=True)
        return None


def _rabbitmq_messages(broker_url: str, management_url: str, queue: str) -> int | None:
    """Ready and unacknowledged messages of ``queue``, from RabbitMQ's management API; None without one.

    AMQP itself counts only the ready messages, and those workers hold unacknowledged are what the
    dispatcher must not take for lost.
    """
    if not management_url:
        return None
    vhost = urlsplit(broker_url).path[1:] or "/"
    parts = urlsplit(management_url)
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    base = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
    try:
        answer = requests.get(f"{base}/api/queues/{quote(unquote(vhost), safe='')}/{queue}", auth=auth, timeout=3)
        if answer.status_code == 404:
            return 0  # not declared yet: no worker has started on it
        answer.raise_for_status()
        return int(answer.json().get("messages", 0))
    except (requests.RequestException, ValueError):
        log.warning("could not read the length of queue %s from RabbitMQ's management API", queue, exc_info=True)
        return None


def publish_filesystem_messages_atomically() -> None:
    """Make the filesystem transport (the single-machine default) write each message whole, then rename it.

    kombu creates the message file and then writes it, so a consumer polling the folder can take the
    file while it is still empty: the message is lost and the worker dies of a ``JSONDecodeError``
    (seen here, with the API, two workers and beat publishing at once). A file renamed into place is
    complete when it appears; its temporary name matches no queue.
    """
    from kombu.transport import filesystem
    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    if getattr(filesystem.Channel._put, "publishes_atomically", False):
        return

    def _put(self, queue, payload, **kwargs) -> None:
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from error

    _put.publishes_atomically = True  # type: ignore[attr-defined]
    filesystem.Channel._put = _put


def bind_filesystem_queues_safely() -> None:
    """Make the filesystem transport's exchange tables safe for processes that start at once.

    kombu creates a table's file and only then locks and writes it, so a second process binding a queue in
    between reads an empty file and dies of a ``JSONDecodeError`` (seen here: the webhook worker of
    ``make run`` exited at start). The file is opened without truncating, under the lock, and an empty one
    is an empty table.
    """
    from kombu.transport import filesystem
    from kombu.utils.encoding import bytes_to_str, str_to_bytes
    from kombu.utils.json import dumps, loads

    if getattr(filesystem.Channel._queue_bind, "binds_safely", False):
        return

    def table_of(handle) -> list:
        handle.seek(0)
        text = bytes_to_str(handle.read())
        return [filesystem.exchange_queue_t(*entry) for entry in loads(text)] if text.strip() else []

    def _queue_bind(self, exchange, routing_key, pattern, queue) -> None:
        path = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(path, "a+b", buffering=0) as handle:
                filesystem.lock(handle, filesystem.LOCK_EX)
                try:
                    queues = table_of(handle)
                    if entry not in queues:
                        queues.insert(0, entry)
                        handle.truncate(0)
                        handle.write(str_to_bytes(dumps(queues)))
                finally:
                    filesystem.unlock(handle)
        except OSError as error:
            raise filesystem.ChannelError(f"Cannot open {path}") from error

    def get_table(self, exchange) -> list:
        path = self._exchange_file(exchange)
        try:
            with open(path, "rb") as handle:
                filesystem.lock(handle, filesystem.LOCK_SH)
                try:
                    return table_of(handle)
                finally:
                    filesystem.unlock(handle)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise filesystem.ChannelError(f"Cannot open {path}") from error

    _queue_bind.binds_safely = True  # type: ignore[attr-defined]
    filesystem.Channel._queue_bind = _queue_bind
    filesystem.Channel.get_table = get_table
