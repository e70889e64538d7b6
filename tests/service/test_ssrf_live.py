"""The SSRF guard, live and end to end: uploads through the real API, fetches and webhook POSTs by the
real Celery worker, and loopback victims that count every connection they accept.

The victims are raw TCP canaries on 127.0.0.1 and ::1 (``canaries()``). The only address the service may
reach in these tests is 127.0.0.2 (``FETCH_ALLOWED_NETWORKS=127.0.0.2/32``), where the image sources,
redirectors and webhook receivers live. Whatever the spelling of a victim's address, and whether it
arrives in the CSV, in a redirect or as the webhook URL, the service must either refuse the upload
(``422 blocked_address``) or fail the fetch with ``blocked_address`` at once (not retried), and the
canaries must never see a connection.

Safety: no test here may cause traffic off this machine. The only host name used is ``localhost``
(which /etc/hosts answers); every other victim spelling is an IP literal, and before it is handed to
the service the test checks that the service's own parser reads it as a loopback or unspecified
address, so the worker can never pass it to the resolver.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.canaries import CanaryPair, canaries
from support.handlers import redirect
from support.images import jpeg_bytes
from support.loopback import serve, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

URLS = "Input Image Urls"
# "Fails quickly": well under what one retry's back-off would add, never mind a timeout.
QUICK_S = 10.0
REFUSED, FAILED_AT_FETCH = "refused at upload (422)", "accepted, FAILED at fetch"

# Victim spellings: {v4} is the 127.0.0.1 canary's port, {v6} the ::1 canary's.
SPELLINGS: dict[str, str] = {
    "dotted": "http://127.0.0.1:{v4}/x.jpg",
    "localhost": "http://localhost:{v4}/x.jpg",
    "decimal": "http://2130706433:{v4}/x.jpg",
    "hex": "http://0x7f000001:{v4}/x.jpg",
    "octal": "http://0177.0.0.1:{v4}/x.jpg",
    "short": "http://127.1:{v4}/x.jpg",
    "ipv6": "http://[::1]:{v6}/x.jpg",
    "ipv4-mapped-dotted": "http://[::ffff:127.0.0.1]:{v4}/x.jpg",
    "ipv4-mapped-hex": "http://[::ffff:7f00:1]:{v4}/x.jpg",
    "hex-short": "http://0x7f.1:{v4}/x.jpg",
    "trailing-dot": "http://127.0.0.1.:{v4}/x.jpg",
    "ipv6-long": "http://[0:0:0:0:0:0:0:1]:{v6}/x.jpg",
    # A few more of the same kind.
    "ipv6-zone": "http://[::1%25lo]:{v6}/x.jpg",
    "octal-padded": "http://0177.0000.0000.0001:{v4}/x.jpg",
    "hex-upper-dotted": "http://0X7F.0X0.0X0.0X1:{v4}/x.jpg",
    "other-loopback": "http://127.255.255.254:{v4}/x.jpg",
    "unspecified": "http://0.0.0.0:{v4}/x.jpg",  # Linux connects 0.0.0.0 to this host
    "zero": "http://0:{v4}/x.jpg",
    "https-dotted": "https://127.0.0.1:{v4}/x.jpg",
}
HOST_NAME_SPELLINGS = {"localhost"}
EXPECTED = {name: FAILED_AT_FETCH if name in HOST_NAME_SPELLINGS else REFUSED for name in SPELLINGS}

# Redirect targets (the Location a 127.0.0.2 source answers with) and the redirect status.
REDIRECTS: dict[str, tuple[str, int]] = {
    "dotted": ("http://127.0.0.1:{v4}/", 302),
    "ipv6": ("http://[::1]:{v6}/", 302),
    "localhost": ("http://localhost:{v4}/", 302),
    "ipv4-mapped": ("http://[::ffff:127.0.0.1]:{v4}/", 302),
    "decimal": ("http://2130706433:{v4}/", 302),
    "ipv6-zone": ("http://[::1%25lo]:{v6}/", 302),
    "unspecified": ("http://0.0.0.0:{v4}/", 302),
    "scheme-relative": ("//127.0.0.1:{v4}/x.jpg", 302),
    "https-dotted": ("https://127.0.0.1:{v4}/", 302),
    # The allowed address as user name: the host is still the victim.
    "userinfo": ("http://127.0.0.2@127.0.0.1:{v4}/", 302),
    "dotted-301": ("http://127.0.0.1:{v4}/", 301),
    "dotted-303": ("http://127.0.0.1:{v4}/", 303),
    "dotted-307": ("http://127.0.0.1:{v4}/", 307),
    "localhost-308": ("http://localhost:{v4}/", 308),
}


# --- fixtures and helpers ----------------------------------------------------


@pytest.fixture(scope="module")
def victims() -> Iterator[CanaryPair]:
    """The canaries for the whole module; at the end they must have accepted nothing at all."""
    with canaries() as pair:
        yield pair
        time.sleep(0.3)  # a late connection would be counted by now
        assert pair.accepted == 0, f"a canary accepted {pair.accepted} connection(s)"


def victim_url(template: str, victims: CanaryPair) -> str:
    if "{v6}" in template and victims.v6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    v6_port = victims.v6.port if victims.v6 is not None else 0
    url = template.format(v4=victims.v4.port, v6=v6_port)
    assert_stays_on_this_machine(url)
    return url


def assert_stays_on_this_machine(url: str) -> None:
    """Refuse to hand the service a URL whose host could reach a resolver, or anything off loopback.

    ``localhost`` is answered by /etc/hosts. Every other host must be read by the service's own
    literal parser (the one its fetcher applies before it would ever call getaddrinfo) as a loopback
    or unspecified address, i.e. one of the canaries: both as written and as requests prepares it
    (the form the fetcher's adapter sees). A relative redirect target is joined to a 127.0.0.2 URL first.
    """
    from network_policy.addresses import literal_address

    absolute = urljoin("http://127.0.0.2/", url)
    prepared = requests.Request("GET", absolute).prepare().url or ""
    for host in {urlsplit(absolute).hostname or "", urlsplit(prepared).hostname or ""}:
        if host == "localhost":
            continue
        address = literal_address(host)
        if address is None:
            pytest.fail(f"safety: {host!r} is not an IP literal to the service; it would go to DNS", pytrace=False)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not (address.is_loopback or address.is_unspecified):
            pytest.fail(f"safety: {host!r} is {address}, not a loopback victim", pytrace=False)


def only_image(status: dict[str, Any]) -> dict[str, Any]:
    images = [image for product in status["products"] for image in product["images"]]
    assert len(images) == 1, status
    return images[0]


def nothing_stored(service) -> bool:
    listing = requests.get(f"{service.base_url}/api/requests", timeout=10).json()
    return listing["pagination"]["total"] == 0


def deliveries_log(service, request_id: str) -> dict[str, Any]:
    response = requests.get(f"{service.base_url}/api/requests/{request_id}/webhook-deliveries", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_event_final(service, request_id: str, timeout_s: float = 30) -> dict[str, Any]:
    def final() -> bool:
        events = deliveries_log(service, request_id)["events"]
        return bool(events) and events[0]["status"] in {"DELIVERED", "FAILED"}

    wait_until(final, timeout_s)
    log = deliveries_log(service, request_id)
    assert len(log["events"]) == 1, log
    assert log["events"][0]["status"] in {"DELIVERED", "FAILED"}, log
    return log["events"][0]


def assert_blocked_fetch(status: dict[str, Any], elapsed: float) -> dict[str, Any]:
    image = only_image(status)
    assert status["status"] == "FAILED", status
    assert image["status"] == "FAILED" and image["error"]["code"] == "blocked_address", image
    assert image["output_url"] is None
    # blocked_address is not transient: one attempt, and over within seconds.
    assert image["attempts"] == 1, image
    assert elapsed < QUICK_S, f"a blocked fetch took {elapsed:.1f}s"
    return image


# --- image URLs in the CSV ---------------------------------------------------------


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_victim_in_csv(service, victims, name):
    url = victim_url(SPELLINGS[name], victims)
    started = time.monotonic()

    response = upload(service.base_url, csv_of([(1, "SKU1", [url])]))

    if response.status_code == 422:
        outcome = REFUSED
        error = response.json()["error"]
        assert error["code"] == "blocked_address", error
        assert error["details"] == [{"row": 2, "column": URLS, "message": f"address not allowed: {url!r}"}], error
        assert nothing_stored(service)
    else:
        assert response.status_code == 202, response.text
        outcome = FAILED_AT_FETCH
        status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)
        image = assert_blocked_fetch(status, time.monotonic() - started)
        assert image["input_url"] == url
    print(f"\n[ssrf] csv {name:18} {url:45} -> {outcome}")
    assert outcome == EXPECTED[name]
    time.sleep(0.1)
    assert victims.accepted == 0


def test_blocked_rows_are_all_reported_and_nothing_is_saved(service, source_server, victims):
    good = serve(source_server, jpeg_bytes((64, 48)))
    rows = [
        (1, "Fine", [good]),
        (2, "Loop", [good, victim_url(SPELLINGS["decimal"], victims)]),
        (3, "Fine2", [good]),
        (4, "Loop6", [victim_url(SPELLINGS["ipv6-long"], victims)]),
    ]

    response = upload(service.base_url, csv_of(rows))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "blocked_address"
    assert [(d["row"], d["column"]) for d in error["details"]] == [(3, URLS), (5, URLS)]
    assert nothing_stored(service)
    assert source_server.hits(urlsplit(good).path) == 0
    assert victims.accepted == 0


# --- redirects to the victims --------------------------------------------------------


@pytest.mark.parametrize("name", list(REDIRECTS))
def test_redirect_to_victim(service, source_server, victims, name):
    template, code = REDIRECTS[name]
    target = victim_url(template, victims)
    path = f"/ssrf/{uuid.uuid4().hex}/moved.jpg"
    source_server.route(path, redirect(target, code))
    started = time.monotonic()

    response = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(path)])]))

    assert response.status_code == 202, response.text
    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)
    assert_blocked_fetch(status, time.monotonic() - started)
    assert source_server.hits(path) == 1  # the first hop was made, on the allowed address
    time.sleep(0.1)
    assert victims.accepted == 0
    print(f"\n[ssrf] {code} redirect to {target} -> FAILED blocked_address in {time.monotonic() - started:.2f}s")


def test_second_hop_redirect_to_victim(service, source_server, victims):
    """Every hop is checked, not only the first: 127.0.0.2 -> 127.0.0.2 -> 127.0.0.1."""
    second = f"/ssrf/{uuid.uuid4().hex}/second.jpg"
    first = f"/ssrf/{uuid.uuid4().hex}/first.jpg"
    source_server.route(second, redirect(victim_url("http://127.0.0.1:{v4}/x.jpg", victims)))
    source_server.route(first, redirect(source_server.url(second)))
    started = time.monotonic()

    response = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(first)])]))

    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)
    assert_blocked_fetch(status, time.monotonic() - started)
    assert (source_server.hits(first), source_server.hits(second)) == (1, 1)
    time.sleep(0.1)
    assert victims.accepted == 0


# --- webhook URLs ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_victim_as_webhook_url(service, source_server, victims, name):
    webhook_url = victim_url(SPELLINGS[name].replace("/x.jpg", "/hook"), victims)
    good = serve(source_server, jpeg_bytes((64, 48)))

    response = upload(service.base_url, csv_of([(1, "SKU1", [good])]), webhook_url=webhook_url)

    if response.status_code == 422:
        outcome = REFUSED
        error = response.json()["error"]
        assert error["code"] == "blocked_address", error
        assert [d["field"] for d in error["details"]] == ["webhook_url"], error
        assert nothing_stored(service)
        assert source_server.hits(urlsplit(good).path) == 0
    else:
        assert response.status_code == 202, response.text
        outcome = FAILED_AT_FETCH
        request_id = response.json()["request_id"]
        status = wait_final(service.base_url, request_id, timeout_s=60)
        assert status["status"] == "COMPLETED"
        event = wait_event_final(service, request_id)
        assert event["status"] == "FAILED", event
        assert len(event["attempts"]) == 1, event
        attempt = event["attempts"][0]
        assert attempt["status_code"] is None and attempt["error"].startswith("blocked_address"), attempt
        # Not retried: the schedule (0,1,1,1) would have made a second attempt within about a second.
        time.sleep(2.5)
        later = deliveries_log(service, request_id)["events"][0]
        assert later["status"] == "FAILED" and len(later["attempts"]) == 1, later
        assert later["next_attempt_at"] is None
    print(f"\n[ssrf] webhook {name:18} {webhook_url:45} -> {outcome}")
    assert outcome == EXPECTED[name]
    time.sleep(0.1)
    assert victims.accepted == 0


@pytest.mark.parametrize("name", ["dotted", "ipv6", "localhost"])
def test_webhook_redirect_to_victim_is_not_followed(service, source_server, victims, name):
    target = victim_url(REDIRECTS[name][0], victims)
    hook_path = f"/ssrf/{uuid.uuid4().hex}/hook"
    source_server.route(hook_path, redirect(target, 302))
    good = serve(source_server, jpeg_bytes((64, 48)))
    schedule = service.env["WEBHOOK_RETRY_SCHEDULE"].split(",")

    response = upload(service.base_url, csv_of([(1, "SKU1", [good])]), webhook_url=source_server.url(hook_path))

    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    assert wait_final(service.base_url, request_id, timeout_s=60)["status"] == "COMPLETED"
    event = wait_event_final(service, request_id)
    # A redirect is a non-2xx answer: recorded as such, retried on the schedule, never followed.
    assert event["status"] == "FAILED", event
    assert [(a["status_code"], a["error"]) for a in event["attempts"]] == [(302, None)] * len(schedule), event
    posts = [r for r in source_server.requests if urlsplit(r.path).path == hook_path]
    assert [r.method for r in posts] == ["POST"] * len(schedule)
    time.sleep(0.1)
    assert victims.accepted == 0


# --- positive controls: the same machinery, pointed at what is allowed ------------------


def test_control_redirect_within_allowed_network_is_followed(service, source_server, victims):
    """Redirects are followed when they stay on 127.0.0.2, so the blocked hops above are the guard's work."""
    final = serve(source_server, jpeg_bytes((64, 48)))
    path = f"/ssrf/{uuid.uuid4().hex}/moved.jpg"
    source_server.route(path, redirect(final, 302))

    response = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(path)])]))

    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)
    assert status["status"] == "COMPLETED", status
    assert (source_server.hits(path), source_server.hits(urlsplit(final).path)) == (1, 1)
    assert victims.accepted == 0


def test_control_ipv4_mapped_spelling_of_allowed_address_is_fetched(service, source_server, victims):
    """``[::ffff:127.0.0.2]`` is the allowed host: the mapped spellings above fail for their address, not their form."""
    path = urlsplit(serve(source_server, jpeg_bytes((64, 48)))).path
    url = f"http://[::ffff:127.0.0.2]:{source_server.port}{path}"

    response = upload(service.base_url, csv_of([(1, "SKU1", [url])]))

    assert response.status_code == 202, response.text
    status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)
    assert status["status"] == "COMPLETED", status
    assert source_server.hits(path) == 1
    assert victims.accepted == 0


def test_control_canary_counts_the_workers_connections(service, victims):
    """A canary on the allowed address does see the worker connect, so the victims' 0 means something."""
    from support.canaries import CanaryServer

    with CanaryServer("127.0.0.2") as reachable:
        response = upload(service.base_url, csv_of([(1, "SKU1", [reachable.url("/x.jpg")])]))
        status = wait_final(service.base_url, response.json()["request_id"], timeout_s=60)

        image = only_image(status)
        # The canary hangs up at once: a transient connection error, tried 1 + FETCH_MAX_RETRIES times.
        assert image["status"] == "FAILED" and image["error"]["code"] == "connection_error", image
        assert reachable.accepted == image["attempts"] == 4
    assert victims.accepted == 0
