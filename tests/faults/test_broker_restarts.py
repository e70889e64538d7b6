"""Redis lost and restarted while a webhook attempt is in flight: the webhook worker reconnects and goes on.

The attempt's message dies with Redis (no persistence) while a thread of the webhook worker is still
waiting on the receiver; when the answer comes, that thread acknowledges on a connection that is gone.
The worker must live through it, record the answer once, and deliver the next request's webhook.
"""

from __future__ import annotations

import time

import pytest
from harness import wait_for
from scenario import deliveries_for, start_request, wait_final

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
