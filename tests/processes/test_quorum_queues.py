"""An image worker on RabbitMQ with ``BROKER_QUEUE_TYPE=quorum``, started alone, as on a host of its own.

It declares the four queues as quorum queues, and binds every one of them to kombu's native delayed
delivery without an error, though no webhook or maintenance worker has declared theirs yet.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.backing import REQUIRE_SERVICES, TEST_BROKER_MANAGEMENT_URL, RabbitMQVhost
from support.launched import as_from_a_terminal, launch_environment
from support.loopback import wait_until

from queueing.broker import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def vhost():
    try:
        made = RabbitMQVhost(RABBITMQ_URL, TEST_BROKER_MANAGEMENT_URL)
    except RuntimeError as error:
        if REQUIRE_SERVICES:
            pytest.fail(f"RabbitMQ: {error}", pytrace=False)
        pytest.skip(f"RabbitMQ: {error}")
    yield made
    made.drop()


def queue_types(vhost: RabbitMQVhost) -> dict[str, str]:
    answer = requests.get(f"{vhost.api}/api/queues/{vhost.name}", auth=vhost.auth, timeout=10)
    answer.raise_for_status()
    return {queue["name"]: queue.get("type", "classic") for queue in answer.json()}


def test_an_image_worker_alone_declares_quorum_queues_and_binds_them_all_to_delayed_delivery(vhost, tmp_path):
    env = launch_environment(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.db'}",
        CELERY_BROKER_URL=vhost.url,
        BROKER_QUEUE_TYPE="quorum",
        WEBHOOK_SECRET="whsec_" + "A" * 43 + "=",
        API_KEYS="k1",
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            as_from_a_terminal([sys.executable, str(ROOT / "launcher.py"), "worker"]),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: "ready." in log_path.read_text(errors="replace") or worker.poll() is not None, 60)
        assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
        time.sleep(1)  # delayed delivery is set up as the consumer starts, beside "ready."
        types = queue_types(vhost)
        assert {name: types.get(name) for name in ALL_QUEUES} == dict.fromkeys(ALL_QUEUES, "quorum")
        written = log_path.read_text(errors="replace")
        assert "Failed to bind" not in written and "delayed delivery will not be available" not in written, written
    finally:
        worker.terminate()
        worker.wait(timeout=30)
