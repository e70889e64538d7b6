"""The filesystem transport (``make run``'s broker) with processes starting at once: an exchange table's file
that another process has created and not yet written is an empty table, not a crash."""

from __future__ import annotations

from kombu import Connection

from queueing import broker


def channel_in(folder):
    broker.bind_filesystem_queues_safely()
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
    }
    (folder / "queue").mkdir()
    connection = Connection("filesystem://localhost/", transport_options=options)
    return connection, connection.default_channel


def test_a_queue_bound_while_its_exchange_file_is_still_empty_is_added_to_the_table(tmp_path) -> None:
    connection, channel = channel_in(tmp_path)
    try:
        (tmp_path / "control").mkdir()
        empty = channel._exchange_file("celery.pidbox")
        empty.write_bytes(b"")  # created by another process, which has not written it yet
        assert channel.get_table("celery.pidbox") == []

        channel._queue_bind("celery.pidbox", "", "", "worker-a.celery.pidbox")
        channel._queue_bind("celery.pidbox", "", "", "worker-b.celery.pidbox")
        channel._queue_bind("celery.pidbox", "", "", "worker-a.celery.pidbox")
        assert [entry.queue for entry in channel.get_table("celery.pidbox")] == [
            "worker-b.celery.pidbox",
            "worker-a.celery.pidbox",
        ]
    finally:
        connection.release()
