"""RabbitMQ as the broker: its settings, and the queues and Celery options the service declares on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import celery_settings
from config import Settings, SettingsError

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/imgsvc"


def from_env(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"INSTANCE_DIR": str(tmp_path), **env})


def test_a_task_must_end_well_within_rabbitmqs_consumer_timeout(tmp_path) -> None:
    assert from_env(tmp_path, CELERY_BROKER_URL=RABBITMQ).broker_consumer_timeout_s == 1800
    with pytest.raises(SettingsError, match="BROKER_CONSUMER_TIMEOUT_S=1000"):
        from_env(tmp_path, CELERY_BROKER_URL=RABBITMQ, TASK_TIME_LIMIT_S="600", BROKER_CONSUMER_TIMEOUT_S="1000")
    # Redis has no consumer timeout: the same limits pass there.
    redis = from_env(
        tmp_path,
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        TASK_TIME_LIMIT_S="600",
        BROKER_CONSUMER_TIMEOUT_S="1000",
    )
    assert redis.task_time_limit_s == 600


def test_the_queue_type_is_classic_or_quorum(tmp_path) -> None:
    assert from_env(tmp_path).broker_queue_type == "classic"
    assert from_env(tmp_path, BROKER_QUEUE_TYPE="Quorum").broker_queue_type == "quorum"
    with pytest.raises(SettingsError, match="BROKER_QUEUE_TYPE"):
        from_env(tmp_path, BROKER_QUEUE_TYPE="stream")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_rabbitmq_queues_are_durable_on_topic_exchanges(tmp_path, queue_type) -> None:
    config = celery_settings(from_env(tmp_path, CELERY_BROKER_URL=RABBITMQ, BROKER_QUEUE_TYPE=queue_type))
    queues = {queue.name: queue for queue in config["task_queues"]}
    assert set(queues) == {"images", "imports", "webhooks", "maintenance"}
    for name, queue in queues.items():
        assert queue.durable and queue.exchange.type == "topic" and queue.routing_key == name
        expected = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
        assert queue.queue_arguments == expected
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_default_queue_type"] == queue_type


def test_redis_keeps_its_visibility_timeout_and_no_declared_queues(tmp_path) -> None:
    config = celery_settings(from_env(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/0"))
    assert "task_queues" not in config
    assert config["broker_transport_options"]["visibility_timeout"] == config["visibility_timeout"]
