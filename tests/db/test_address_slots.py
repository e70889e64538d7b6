"""The per-address download limit as fetches meet it: keyed by the address each request connects to.

With a limit of 1, the image server (on 127.0.0.2) must never answer two requests at once, however
its address is spelled or reached: literal spellings, names resolving to it, redirects from another
host (on 127.0.0.3). On both stores of the slots.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.handlers import InFlight, redirect
from support.loopback import LoopbackHTTPServer, ipv6_loopback_available, serve
from support.resolver import fake_dns

from fetching.fetcher import FetchError, FetchLimits, fetch_image
from fetching.host_slots import FileHostSlots, HostSlots
from network_policy.addresses import parse_networks

SOURCE = "127.0.0.2"
REDIRECTOR = "127.0.0.3"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LIMITS = FetchLimits(
    connect_timeout_s=2.0,
    read_timeout_s=5.0,
    total_timeout_s=20.0,
    max_redirects=2,
    allowed_networks=parse_networks(f"{SOURCE}/32 {REDIRECTOR}/32"),
)
# Each spelling denotes the image server's address; the name is answered by fake_dns.
SPELLINGS = ["127.0.0.2", "127.0.0.2.", "2130706434", "0x7f000002", "[::ffff:127.0.0.2]", "images.test"]


def fetch_together(urls: list[str], slots: HostSlots) -> list[bytes]:
    """Fetch every URL at once, each on a thread of its own; the bodies in order."""
    start = threading.Barrier(len(urls))

    def fetch(url: str) -> bytes:
        start.wait()
        return fetch_image(url, LIMITS, slots)

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(fetch, urls))


def test_every_spelling_of_an_address_shares_its_slots(make_slots, source_server, monkeypatch) -> None:
    fake_dns(monkeypatch, {"images.test": lambda: [SOURCE]})
    target = InFlight(PNG, 0.25, "image/png")
    image = serve(source_server, target, "image/png", "img.png")
    spellings = [spelling for spelling in SPELLINGS if ":" not in spelling or ipv6_loopback_available()]
    urls = [image.replace(SOURCE, spelling, 1) for spelling in spellings]

    assert fetch_together(urls, make_slots(1)) == [PNG] * len(urls)
    assert target.served == len(urls)
    assert target.peak == 1


def test_every_redirect_hop_takes_a_slot_of_the_address_it_reaches(make_slots, source_server, monkeypatch) -> None:
    names = [f"short-{n}.test" for n in range(4)]
    fake_dns(monkeypatch, dict.fromkeys(names, lambda: [REDIRECTOR]))
    target = InFlight(PNG, 0.25, "image/png")
    image = serve(source_server, target, "image/png", "img.png")
    with LoopbackHTTPServer(REDIRECTOR) as redirector:
        redirector.route("/go", redirect(image))
        urls = [f"http://{name}:{redirector.port}/go" for name in names]

        assert fetch_together(urls, make_slots(1)) == [PNG] * len(urls)
    assert redirector.hits("/go") == len(urls)
    assert target.served == len(urls)
    assert target.peak == 1


def test_downloads_leave_no_lock_files_behind(tmp_path: Path, source_server) -> None:
    folder = tmp_path / "host-slots"
    image = serve(source_server, PNG, "image/png", "img.png")
    urls = [image.replace(SOURCE, spelling, 1) for spelling in SPELLINGS[:4]]
    assert fetch_together(urls, FileHostSlots(folder, 2)) == [PNG] * len(urls)
    assert list(folder.iterdir()) == []


def test_a_download_waits_for_a_slot_of_its_address_no_longer_than_its_deadline(make_slots, source_server) -> None:
    slots = make_slots(1)
    held = slots.acquire(SOURCE, 0, 30)
    image = serve(source_server, PNG, "image/png", "img.png")
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_image(image.replace(SOURCE, "0x7f000002", 1), replace(LIMITS, total_timeout_s=0.5), slots)
    assert time.monotonic() - started < 1.5
    assert caught.value.code == "host_busy"
    assert caught.value.transient
    assert caught.value.message.startswith("0x7f000002 (127.0.0.2) already had 1 downloads in progress")
    assert source_server.hits(urlsplit(image).path) == 0
    slots.release(held)
