"""What status pages cost an API process: the pages it keeps stay within STATUS_CACHE_BYTES, whatever is asked."""

from __future__ import annotations

import uuid

import pytest
import requests
from support.api import csv_of, upload
from support.services import ApiServer

pytestmark = [pytest.mark.integration]

MiB = 1 << 20
CACHE_BYTES = 32 * MiB  # STATUS_CACHE_BYTES's default
#: What the API process may grow by over 30 big pages: its cache's budget, and room for one render and the
#: allocator's slack.
RSS_GROWTH_BOUND = CACHE_BYTES + 64 * MiB


def rss() -> int:
    """The test process's resident memory: the API serves from a thread of it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def long_urls(product: int, count: int) -> list[str]:
    """URLs of about 400 characters that no worker fetches: the quiet service's queue has no reader."""
    padding = "p" * 340
    return [f"http://127.0.0.2:9/{uuid.uuid4().hex}/{padding}/{product}-{n}.jpg" for n in range(count)]


@pytest.mark.usefixtures("clean_quiet_tables")
def test_thirty_page_sizes_of_a_big_request_keep_the_api_within_its_cache_budget(quiet_service):
    # Stored at once (no import task, which nobody would run here): 1,000 products of 20 images.
    server = ApiServer.serving(**quiet_service.overrides, import_after_urls=10**6)
    try:
        rows = [(n, f"Product {n}", long_urls(n, 20)) for n in range(1, 1001)]
        created = upload(server.base_url, csv_of(rows))
        assert created.status_code == 202, created.text
        url = f"{server.base_url}/api/status/{created.json()['request_id']}"
        assert requests.get(url, params={"per_page": 5}, timeout=60).status_code == 200  # warm the code paths
        before = rss()

        sizes = []
        for per_page in range(971, 1001):
            page = requests.get(url, params={"per_page": per_page}, timeout=120)
            assert page.status_code == 200, page.text[:500]
            assert page.headers["ETag"]
            sizes.append(len(page.content))
        growth = rss() - before

        last = page.json()
        assert len(last["products"]) == 1000 and len(last["products"][-1]["images"]) == 20
        assert last["pagination"] == {"page": 1, "per_page": 1000, "total": 1000, "pages": 1}
        assert min(sizes) > CACHE_BYTES // 4  # each page is too big to keep: streamed as it renders
        assert growth < RSS_GROWTH_BOUND, f"the API grew by {growth / MiB:.0f} MiB over 30 pages of {sizes[-1]:,} B"
        assert server.server.app.extensions["rendered_pages"].kept_bytes <= CACHE_BYTES
        # A page small enough is still kept, and answers 304 to its ETag.
        small = requests.get(url, params={"per_page": 10}, timeout=60)
        again = requests.get(url, params={"per_page": 10}, headers={"If-None-Match": small.headers["ETag"]}, timeout=60)
        assert again.status_code == 304
        assert 0 < server.server.app.extensions["rendered_pages"].kept_bytes <= CACHE_BYTES
    finally:
        server.stop()
