"""The broker restarted under traffic: every worker reconnects and goes on, and nothing is stuck.

On Redis (keeping nothing) the attempt's message dies with it while a thread of the webhook worker is
still waiting on the receiver; when the answer comes, that thread acknowledges on a connection that is
gone. The worker must live through it, record the answer once, and deliver the next request's webhook.
On RabbitMQ (durable queues, persistent messages) the node's application is stopped and started while
images are downloading and a webhook attempt waits: every connection is cut, unacknowledged messages go
back to their queues, and the requests still complete with every image once and one webhook each.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from harness import wait_for
from scenario import check_complete, deliveries_for, start_request, wait_final

pytestmark = pytest.mark.timeout(180)


def test_redis_restarted_while_a_webhook_attempt_waits_on_its_receiver(
    service, database, redis_server, slow_source, receiver, report
):
    service.start_all()
    webhooks = service.processes["webhooks"]
    receiver.answer_delay_s = 2.5
    first_id, _ = start_request(service, slow_source, receiver, images=4)
    wait_final(service, first_id)
    wait_for(lambda: deliveries_for(receiver, first_id), 30, "the first attempt to reach the receiver")

    redis_server.stop()
    time.sleep(1)
    redis_server.start()
    restarted_at = time.monotonic()
    time.sleep(receiver.answer_delay_s + 3)
    assert webhooks.process.poll() is None, webhooks.log()[-4000:]

    receiver.answer_delay_s = 0.0
    second_id, _ = start_request(service, slow_source, receiver, images=4)
    wait_final(service, second_id)
    wait_for(lambda: deliveries_for(receiver, second_id), 60, "the second request's webhook")
    report["second_webhook_after_restart_s"] = round(time.monotonic() - restarted_at, 1)
    time.sleep(2)
    assert len(deliveries_for(receiver, first_id)) == 1
    assert len(deliveries_for(receiver, second_id)) == 1
    assert webhooks.process.poll() is None, webhooks.log()[-4000:]
    report["fault"] = "Redis killed and restarted empty while a webhook attempt waited on its receiver"


def restart_rabbitmq() -> float:
    """Stop and start the RabbitMQ node's application (every connection cut); returns when it was back."""
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    time.sleep(1)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=60)
    return time.monotonic()


def test_rabbitmq_restarted_while_images_download_and_a_webhook_attempt_waits(
    rabbitmq_env, service, database, slow_source, receiver, report
):
    service.start_all()
    receiver.answer_delay_s = 2.5  # under WEBHOOK_TIMEOUT_S: the attempt succeeds, after the broker went
    first_id, _ = start_request(service, slow_source, receiver, images=4)
    wait_final(service, first_id)
    slow_source.delay_s = 0.4
    second_id, second_urls = start_request(service, slow_source, receiver, images=16)
    wait_for(lambda: deliveries_for(receiver, first_id), 30, "the first attempt to reach the receiver")

    restarted_at = restart_rabbitmq()
    report["rabbitmq_back_after_s"] = round(time.monotonic() - restarted_at, 1)
    receiver.answer_delay_s = 0.0
    check_complete(service, database, slow_source, receiver, second_id, second_urls, report)
    report["second_request_final_after_restart_s"] = round(time.monotonic() - restarted_at, 1)
    assert len(deliveries_for(receiver, first_id)) == 1
    for name, process in service.processes.items():
        assert process.process.poll() is None, f"{name} died: " + process.log()[-4000:]
    report["fault"] = "RabbitMQ's application stopped and started with images downloading and a webhook attempt waiting"
