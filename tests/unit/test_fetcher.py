"""Live tests for fetcher, on loopback only.

The image server listens on 127.0.0.2 and FetchLimits allow only 127.0.0.2/32,
so 127.0.0.1 and ::1 stay forbidden and play the victim: canary listeners there
count accepted connections, which must stay at 0. Host names are ``localhost``
or answered by a patched ``socket.getaddrinfo`` that never asks a resolver.
"""

from __future__ import annotations

import email.utils
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from support.canaries import CanaryPair, CanaryServer, canaries
from support.handlers import drip, endless_body, hang, redirect, respond
from support.loopback import LoopbackHTTPServer, RequestHandler, ipv6_loopback_available, unused_port
from support.resolver import fake_dns

from fetching import address_guard
from fetching.fetcher import (
    MAX_VALIDATOR_LENGTH,
    FetchedImage,
    FetchError,
    FetchLimits,
    Validators,
    fetch_image,
    fetch_image_revalidated,
    parse_retry_after,
)
from fetching.webhook_post import PostResult, post_json
from network_policy.addresses import parse_networks
from network_policy.urls import MAX_URL_LENGTH

pytestmark = pytest.mark.timeout(30)

SERVER_HOST = "127.0.0.2"
ALLOWED = parse_networks(f"{SERVER_HOST}/32")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
QUICK_S = 1.0  # a refused request must not wait on any timeout


def limits(**overrides: object) -> FetchLimits:
    values: dict[str, object] = {
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "total_timeout_s": 3.0,
        "max_bytes": 1_000_000,
        "max_redirects": 3,
        "allowed_networks": ALLOWED,
    }
    values.update(overrides)
    return FetchLimits(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def victims() -> Iterator[CanaryPair]:
    with canaries() as pair:
        yield pair


@pytest.fixture(autouse=True)
def victims_stay_untouched(victims: CanaryPair) -> Iterator[None]:
    yield
    assert victims.accepted == 0, "a forbidden loopback listener accepted a connection"


@pytest.fixture
def server() -> Iterator[LoopbackHTTPServer]:
    with LoopbackHTTPServer(SERVER_HOST) as running:
        yield running


def expect_error(code: str, call: Callable[[], object]) -> tuple[FetchError, float]:
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        call()
    elapsed = time.monotonic() - started
    assert caught.value.code == code, caught.value
    return caught.value, elapsed


# Each spelling denotes 127.0.0.1 (or ::1 for the second list) and nothing off the machine,
# so even a broken guard could only ever reach a canary.
V4_VICTIM_SPELLINGS = [
    "http://127.0.0.1:{p}/",
    "http://localhost:{p}/",
    "http://2130706433:{p}/",
    "http://0x7f000001:{p}/",
    "http://0X7F000001:{p}/",
    "http://0177.0.0.1:{p}/",
    "http://127.1:{p}/",
    "http://127.0.1:{p}/",
    "http://0x7f.1:{p}/",
    "http://0x7f.0.0.0x1:{p}/",
    "http://127.0.0.1.:{p}/",
    "http://[::ffff:127.0.0.1]:{p}/",
    "http://[::ffff:7f00:1]:{p}/",
    "http://127.0.0.2@127.0.0.1:{p}/",
    "http://user:pw@localhost:{p}/img.png?x=1#frag",
    "https://127.0.0.1:{p}/",
    "https://localhost:{p}/",
]
V6_VICTIM_SPELLINGS = [
    "http://[::1]:{p6}/",
    "http://[0:0:0:0:0:0:0:1]:{p6}/",
    "https://[::1]:{p6}/",
]


def victim_url(template: str, victims: CanaryPair) -> str:
    if "{p6}" in template:
        if victims.v6 is None:
            pytest.skip("no IPv6 loopback on this machine")
        return template.format(p6=victims.v6.port)
    return template.format(p=victims.v4.port)


ALL_SPELLINGS = V4_VICTIM_SPELLINGS + V6_VICTIM_SPELLINGS


# --- the address guard ---------------------------------------------------------


@pytest.mark.parametrize("template", ALL_SPELLINGS)
def test_fetch_refuses_every_spelling_of_loopback(template: str, victims: CanaryPair) -> None:
    url = victim_url(template, victims)
    error, elapsed = expect_error("blocked_address", lambda: fetch_image(url, limits()))
    assert elapsed < QUICK_S
    assert not error.transient
    assert victims.accepted == 0


@pytest.mark.parametrize("template", ALL_SPELLINGS)
def test_post_refuses_every_spelling_of_loopback(template: str, victims: CanaryPair) -> None:
    url = victim_url(template, victims)
    _, elapsed = expect_error("blocked_address", lambda: post_json(url, b"{}", {}, limits()))
    assert elapsed < QUICK_S
    assert victims.accepted == 0


@pytest.mark.parametrize("template", ALL_SPELLINGS)
def test_redirect_to_loopback_is_refused(template: str, victims: CanaryPair, server: LoopbackHTTPServer) -> None:
    server.route("/go", redirect(victim_url(template, victims)))
    _, elapsed = expect_error("blocked_address", lambda: fetch_image(server.url("/go"), limits()))
    assert elapsed < QUICK_S
    assert server.hits("/go") == 1
    assert victims.accepted == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_checked(status: int, victims: CanaryPair, server: LoopbackHTTPServer) -> None:
    server.route("/go", redirect(f"/relative-is-fine-but-next-hop-is-not?{status}", status))
    server.route("/relative-is-fine-but-next-hop-is-not", redirect(f"http://0x7f.1:{victims.port}/img.png", status))
    expect_error("blocked_address", lambda: fetch_image(server.url("/go"), limits()))
    assert server.hits() == 2


LOOKALIKES = ["\u24dbocalhost", "\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127\u30020\u30020\u30021"]


@pytest.mark.parametrize("host", LOOKALIKES)
def test_unicode_lookalike_hosts_are_refused(host: str, victims: CanaryPair) -> None:
    expect_error("invalid_url", lambda: fetch_image(f"http://{host}:{victims.port}/", limits()))


def test_allowed_network_does_not_open_the_rest_of_loopback(victims: CanaryPair) -> None:
    with CanaryServer("127.0.0.3") as neighbour:
        expect_error("blocked_address", lambda: fetch_image(neighbour.url(), limits()))
        assert neighbour.accepted == 0


def test_without_allowed_networks_even_the_image_server_is_refused(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG))
    expect_error("blocked_address", lambda: fetch_image(server.url("/img.png"), limits(allowed_networks=())))
    assert server.hits() == 0


def test_name_resolving_to_loopback_is_refused(monkeypatch: pytest.MonkeyPatch, victims: CanaryPair) -> None:
    fake_dns(monkeypatch, {"victim.test": lambda: ["127.0.0.1"], "victim6.test": lambda: ["::1"]})
    expect_error("blocked_address", lambda: fetch_image(f"http://victim.test:{victims.port}/", limits()))
    expect_error("blocked_address", lambda: post_json(f"http://victim6.test:{victims.port}/", b"{}", {}, limits()))


def test_any_blocked_answer_refuses_the_name(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer, victims: CanaryPair
) -> None:
    server.route("/img.png", respond(200, PNG))
    fake_dns(monkeypatch, {"mixed.test": lambda: [SERVER_HOST, "127.0.0.1"]})
    expect_error("blocked_address", lambda: fetch_image(f"http://mixed.test:{server.port}/img.png", limits()))
    assert server.hits() == 0


def test_connection_is_pinned_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer, victims: CanaryPair
) -> None:
    answers = iter([[SERVER_HOST], ["127.0.0.1"]])
    asked = fake_dns(monkeypatch, {"rebind.test": lambda: next(answers)})
    server.route("/img.png", respond(200, PNG))
    url = f"http://rebind.test:{server.port}/img.png"

    assert fetch_image(url, limits()) == PNG
    assert asked == ["rebind.test"]  # resolved once, then connected to the pinned IP
    assert server.requests[-1].headers["Host"] == f"rebind.test:{server.port}"

    expect_error("blocked_address", lambda: fetch_image(url, limits()))  # the second answer is checked too


def test_redirect_hop_through_a_name_is_checked(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer, victims: CanaryPair
) -> None:
    fake_dns(monkeypatch, {"internal.test": lambda: ["127.0.0.1"]})
    server.route("/go", redirect(f"http://internal.test:{victims.port}/"))
    expect_error("blocked_address", lambda: fetch_image(server.url("/go"), limits()))


def test_pinned_ipv6_address_is_bracketed(monkeypatch: pytest.MonkeyPatch) -> None:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback on this machine")
    fake_dns(monkeypatch, {"v6.test": lambda: ["::1"]})
    with LoopbackHTTPServer("::1") as v6_server:
        v6_server.route("/img.png", respond(200, PNG))
        allowed = parse_networks("::1/128")
        assert fetch_image(f"http://v6.test:{v6_server.port}/img.png", limits(allowed_networks=allowed)) == PNG
        assert v6_server.requests[-1].headers["Host"] == f"v6.test:{v6_server.port}"


def test_https_pool_keeps_the_name_for_certificate_and_sni(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"images.test": lambda: [SERVER_HOST]})
    adapter = address_guard.GuardedAdapter(is_https=True, allowed=ALLOWED)
    request = requests.Request("GET", "https://images.test/a.png").prepare()
    host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(request, verify=True)
    assert host_params["host"] == SERVER_HOST
    assert pool_kwargs["assert_hostname"] == "images.test"
    assert pool_kwargs["server_hostname"] == "images.test"
    assert request.headers["Host"] == "images.test"


def test_environment_proxies_are_ignored(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer, victims: CanaryPair
) -> None:
    proxy = f"http://127.0.0.1:{victims.port}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    server.route("/img.png", respond(200, PNG))
    assert fetch_image(server.url("/img.png"), limits()) == PNG


def test_dns_failure_is_a_transient_dns_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host() -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_dns(monkeypatch, {"nowhere.test": no_such_host})
    error, _ = expect_error("dns_error", lambda: fetch_image("http://nowhere.test/img.png", limits()))
    assert error.transient


def test_a_slow_resolver_cannot_hold_a_fetch_past_its_deadline(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer
) -> None:
    server.route("/img.png", respond(200, PNG, {"Content-Type": "image/png"}))
    answered = threading.Event()

    def slow_resolver() -> list[str]:
        answered.wait(10)  # far past the deadline; set at the end so the lookup thread ends too
        return [SERVER_HOST]

    fake_dns(monkeypatch, {"slow.test": slow_resolver})
    try:
        error, elapsed = expect_error(
            "dns_error", lambda: fetch_image(f"http://slow.test:{server.port}/img.png", limits(total_timeout_s=1.0))
        )
    finally:
        answered.set()
    assert error.transient
    assert "time limit" in error.message
    assert elapsed < 1.5
    assert server.hits() == 0


# --- success paths -------------------------------------------------------------


def test_fetch_returns_the_body(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG, {"Content-Type": "image/png"}))
    assert fetch_image(server.url("/img.png"), limits()) == PNG
    sent = server.requests[-1].headers
    assert sent["Accept-Encoding"] == "identity"
    assert sent["User-Agent"] == "catalog-image-service/1.0"
    assert sent["Host"] == f"{SERVER_HOST}:{server.port}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_relative_and_absolute_redirects_are_followed(status: int, server: LoopbackHTTPServer) -> None:
    server.route("/a", redirect("/b?x=1", status))
    server.route("/b", redirect(server.url("/img.png"), status))
    server.route("/img.png", respond(200, PNG))
    assert fetch_image(server.url("/a"), limits()) == PNG
    assert [r.path for r in server.requests] == ["/a", "/b?x=1", "/img.png"]


def test_body_of_exactly_max_bytes_is_accepted(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, b"x" * 1000))
    assert len(fetch_image(server.url("/img.png"), limits(max_bytes=1000))) == 1000


def test_lying_short_content_length_reads_no_further(server: LoopbackHTTPServer) -> None:
    def lying(request: RequestHandler) -> None:
        request.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + b"y" * 100_000)
        request.close_connection = True

    server.route("/img.png", lying)
    assert fetch_image(server.url("/img.png"), limits(max_bytes=1000)) == b"yyyyy"


def test_compressed_body_sent_anyway_is_decoded(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, gzip.compress(PNG), {"Content-Encoding": "gzip"}))
    assert fetch_image(server.url("/img.png"), limits()) == PNG


# --- size cap ------------------------------------------------------------------


def test_declared_content_length_over_the_cap_is_refused_before_reading(server: LoopbackHTTPServer) -> None:
    def huge(request: RequestHandler) -> None:
        request.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
        request.close_connection = True
        hang(request)

    server.route("/img.png", huge)
    error, elapsed = expect_error("too_large", lambda: fetch_image(server.url("/img.png"), limits(max_bytes=1000)))
    assert elapsed < QUICK_S
    assert not error.transient


def test_one_byte_over_the_cap_is_too_large(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, b"x" * 1001))
    expect_error("too_large", lambda: fetch_image(server.url("/img.png"), limits(max_bytes=1000)))


@pytest.mark.parametrize("chunked", [False, True], ids=["no-content-length", "chunked"])
def test_endless_body_stops_at_the_cap(chunked: bool, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", endless_body(chunked=chunked))
    _, elapsed = expect_error("too_large", lambda: fetch_image(server.url("/img.png"), limits(max_bytes=500_000)))
    assert elapsed < 2.0


def test_gzip_bomb_is_capped_on_decoded_bytes(server: LoopbackHTTPServer) -> None:
    bomb = gzip.compress(b"\0" * 20_000_000, compresslevel=9)
    assert len(bomb) < 100_000
    server.route("/img.png", respond(200, bomb, {"Content-Encoding": "gzip"}))
    expect_error("too_large", lambda: fetch_image(server.url("/img.png"), limits(max_bytes=1_000_000)))


# --- time limits -----------------------------------------------------------------


def test_server_that_accepts_and_never_answers_times_out() -> None:
    with CanaryServer(SERVER_HOST, hold_open=True) as silent:
        error, elapsed = expect_error(
            "download_timeout", lambda: fetch_image(silent.url("/img.png"), limits(read_timeout_s=0.5))
        )
        assert silent.accepted == 1
    assert error.transient
    assert 0.4 < elapsed < 1.5


def test_downloads_from_one_host_reuse_a_kept_alive_connection(server: LoopbackHTTPServer) -> None:
    for n in range(3):
        server.route(f"/k{n}.png", respond(200, PNG, {"Content-Type": "image/png"}))
    fetch_limits = limits(user_agent=f"keep-alive-test-{time.monotonic_ns()}")
    assert [fetch_image(server.url(f"/k{n}.png"), fetch_limits) for n in range(3)] == [PNG] * 3
    assert len({r.client for r in server.requests}) == 1


def test_a_kept_alive_connection_is_still_cut_at_the_deadline(server: LoopbackHTTPServer) -> None:
    server.route("/first.png", respond(200, PNG, {"Content-Type": "image/png"}))
    server.route("/drip.png", drip(b"z" * 200, interval_s=0.05))
    fetch_limits = limits(read_timeout_s=1.0, total_timeout_s=0.7, user_agent=f"reuse-{time.monotonic_ns()}")
    assert fetch_image(server.url("/first.png"), fetch_limits) == PNG
    _, elapsed = expect_error("download_timeout", lambda: fetch_image(server.url("/drip.png"), fetch_limits))
    assert len({r.client for r in server.requests}) == 1  # the second download reused the connection
    assert 0.6 < elapsed < 1.3


def test_slow_drip_body_hits_the_total_deadline(server: LoopbackHTTPServer) -> None:
    # Every byte arrives well inside the read timeout; only the whole-download deadline can stop it.
    server.route("/img.png", drip(b"z" * 200, interval_s=0.05))
    _, elapsed = expect_error(
        "download_timeout",
        lambda: fetch_image(server.url("/img.png"), limits(read_timeout_s=1.0, total_timeout_s=0.7)),
    )
    assert 0.6 < elapsed < 1.3


def test_slow_drip_headers_hit_the_total_deadline(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", drip(b"z" * 10, interval_s=0.05, drip_headers=True, headers={"X-Pad": "p" * 200}))
    _, elapsed = expect_error(
        "download_timeout",
        lambda: fetch_image(server.url("/img.png"), limits(read_timeout_s=1.0, total_timeout_s=0.7)),
    )
    assert 0.6 < elapsed < 1.3


def test_connection_refused_is_a_transient_connection_error() -> None:
    port = unused_port(SERVER_HOST)
    error, _ = expect_error("connection_error", lambda: fetch_image(f"http://{SERVER_HOST}:{port}/", limits()))
    assert error.transient


# --- HTTP errors and redirects ---------------------------------------------------


def test_404_is_permanent(server: LoopbackHTTPServer) -> None:
    error, _ = expect_error("http_404", lambda: fetch_image(server.url("/missing.png"), limits()))
    assert not error.transient
    assert error.retry_after is None
    assert error.status_code == 404


def test_503_with_retry_after_seconds_is_transient(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(503, b"busy", {"Retry-After": "2"}))
    error, _ = expect_error("http_503", lambda: fetch_image(server.url("/img.png"), limits()))
    assert error.transient
    assert error.retry_after == 2


def test_429_with_retry_after_date_is_transient_and_bounded(server: LoopbackHTTPServer) -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    server.route("/img.png", respond(429, b"", {"Retry-After": later}))
    error, _ = expect_error("http_429", lambda: fetch_image(server.url("/img.png"), limits()))
    assert error.transient
    assert error.retry_after == 60


@pytest.mark.parametrize(("status", "transient"), [(400, False), (403, False), (408, True), (410, False), (500, True)])
def test_status_codes_map_to_http_codes(status: int, transient: bool, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(status))
    error, _ = expect_error(f"http_{status}", lambda: fetch_image(server.url("/img.png"), limits()))
    assert error.transient is transient


def test_redirect_loop_is_too_many_redirects(server: LoopbackHTTPServer) -> None:
    server.route("/loop", redirect("/loop"))
    error, _ = expect_error("too_many_redirects", lambda: fetch_image(server.url("/loop"), limits(max_redirects=3)))
    assert not error.transient
    assert server.hits("/loop") == 4


def test_max_redirects_zero_refuses_the_first_redirect(server: LoopbackHTTPServer) -> None:
    server.route("/a", redirect("/img.png"))
    server.route("/img.png", respond(200, PNG))
    expect_error("too_many_redirects", lambda: fetch_image(server.url("/a"), limits(max_redirects=0)))
    assert server.hits("/img.png") == 0


def test_redirect_without_location_is_an_http_error(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(302))
    expect_error("http_302", lambda: fetch_image(server.url("/img.png"), limits()))


@pytest.mark.parametrize("location", ["ftp://127.0.0.2/img.png", "file:///etc/passwd", "gopher://127.0.0.2:70/"])
def test_redirect_to_another_scheme_is_invalid(location: str, server: LoopbackHTTPServer) -> None:
    server.route("/go", redirect(location))
    expect_error("invalid_url", lambda: fetch_image(server.url("/go"), limits()))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.2/img.png",
        "file:///etc/passwd",
        "gopher://127.0.0.2:70/",
        "dict://127.0.0.2:11211/stat",
        "javascript:alert(1)",
        "//127.0.0.2/img.png",
        "127.0.0.2/img.png",
        "",
        "http://",
        "http:///img.png",
        "http://127.0.0.2:99999/",
        "http://[::1/",
        "http://" + "a" * 9000 + ".test/",
    ],
)
def test_invalid_urls_are_refused(url: str) -> None:
    error, elapsed = expect_error("invalid_url", lambda: fetch_image(url, limits()))
    assert not error.transient
    assert elapsed < QUICK_S
    expect_error("invalid_url", lambda: post_json(url, b"{}", {}, limits()))


# --- the URL rule, on the first URL and on every redirect hop -------------------------------

# A name that no real host has, answered by fake_dns with the image server: a hop to it that got
# past the rule would fetch the image, and nothing can go to a real resolver.
ODD_HOST = "img$host.test"


def padded(url: str, length: int) -> str:
    """``url`` with a query that makes it exactly ``length`` characters long."""
    base = f"{url}?pad="
    return base + "x" * (length - len(base))


def rule_breaker(name: str, server: LoopbackHTTPServer) -> str:
    """A URL to the image on the allowed server that only the URL rule refuses."""
    return {
        "userinfo": f"http://user:pw@{SERVER_HOST}:{server.port}/img.png",
        "too-long": padded(server.url("/img.png"), MAX_URL_LENGTH + 1),
        "bad-host-characters": f"http://{ODD_HOST}:{server.port}/img.png",
    }[name]


RULE_BREAKERS = ["userinfo", "too-long", "bad-host-characters"]


@pytest.fixture
def image_server(monkeypatch: pytest.MonkeyPatch, server: LoopbackHTTPServer) -> LoopbackHTTPServer:
    fake_dns(monkeypatch, {ODD_HOST: lambda: [SERVER_HOST], "img-host.test": lambda: [SERVER_HOST]})
    server.route("/img.png", respond(200, PNG, {"Content-Type": "image/png"}))
    return server


@pytest.mark.parametrize("name", RULE_BREAKERS)
def test_a_redirect_hop_that_breaks_the_url_rule_is_refused(name: str, image_server: LoopbackHTTPServer) -> None:
    image_server.route("/go", redirect(rule_breaker(name, image_server)))
    error, elapsed = expect_error("invalid_url", lambda: fetch_image(image_server.url("/go"), limits()))
    assert not error.transient
    assert elapsed < QUICK_S
    assert (image_server.hits("/go"), image_server.hits("/img.png")) == (1, 0)


@pytest.mark.parametrize("name", RULE_BREAKERS)
def test_a_later_redirect_hop_that_breaks_the_url_rule_is_refused(name: str, image_server: LoopbackHTTPServer) -> None:
    image_server.route("/second", redirect(rule_breaker(name, image_server)))
    image_server.route("/first", redirect("/second", 301))
    expect_error("invalid_url", lambda: fetch_image(image_server.url("/first"), limits()))
    assert (image_server.hits("/first"), image_server.hits("/second"), image_server.hits("/img.png")) == (1, 1, 0)


@pytest.mark.parametrize("name", RULE_BREAKERS)
def test_a_first_url_that_breaks_the_url_rule_is_refused(name: str, image_server: LoopbackHTTPServer) -> None:
    url = rule_breaker(name, image_server)
    error, elapsed = expect_error("invalid_url", lambda: fetch_image(url, limits()))
    assert not error.transient
    assert elapsed < QUICK_S
    expect_error("invalid_url", lambda: post_json(url, b"{}", {}, limits()))
    assert image_server.hits() == 0


@pytest.mark.parametrize(
    "target",
    [
        lambda server: padded(server.url("/img.png"), MAX_URL_LENGTH),
        lambda server: f"http://img-host.test:{server.port}/img.png",
        lambda server: f"http://{SERVER_HOST}:{server.port}/img.png",
    ],
    ids=["at-the-length-limit", "plain-host-name", "no-userinfo"],
)
def test_control_hops_within_the_url_rule_are_followed(
    target: Callable[[LoopbackHTTPServer], str], image_server: LoopbackHTTPServer
) -> None:
    """The same hops, each just inside the rule, reach the image: the refusals above are the rule's doing."""
    image_server.route("/go", redirect(target(image_server)))
    assert fetch_image(image_server.url("/go"), limits()) == PNG
    assert image_server.hits("/img.png") == 1


def test_the_length_limit_is_the_one_the_limits_give(image_server: LoopbackHTTPServer) -> None:
    image_server.route("/go", redirect(padded(image_server.url("/img.png"), 101)))
    expect_error("invalid_url", lambda: fetch_image(image_server.url("/go"), limits(max_url_length=100)))
    assert fetch_image(image_server.url("/go"), limits(max_url_length=101)) == PNG


def test_a_blocked_host_behind_a_user_name_is_refused_for_its_address(victims: CanaryPair) -> None:
    """The user name breaks the rule, but the verdict on where the URL leads comes first."""
    url = f"http://{SERVER_HOST}@127.0.0.1:{victims.port}/"
    error, _ = expect_error("blocked_address", lambda: fetch_image(url, limits()))
    assert "127.0.0.1" in error.message


# --- conditional revalidation ------------------------------------------------------

ETAG = '"v1-5f3a"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
STORED = Validators(etag=ETAG, last_modified=LAST_MODIFIED)


def revalidating(
    etag: str | None, on_change: Callable[[RequestHandler], None], headers_304: dict[str, str] | None = None
) -> Callable[[RequestHandler], None]:
    """Answers 304 (no body) when If-None-Match is etag, else hands over to on_change."""

    def handler(request: RequestHandler) -> None:
        if etag is not None and request.headers.get("If-None-Match") == etag:
            request.send(304, b"", headers_304)
        else:
            on_change(request)

    return handler


def conditional_headers_sent(server: LoopbackHTTPServer) -> list[tuple[str | None, str | None]]:
    return [(r.headers.get("If-None-Match"), r.headers.get("If-Modified-Since")) for r in server.requests]


def test_revalidation_sends_the_stored_validators_exactly(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(304))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert fetched == FetchedImage(data=None, validators=STORED, not_modified=True)
    assert conditional_headers_sent(server) == [(ETAG, LAST_MODIFIED)]
    assert server.requests[-1].headers["Accept"] == "image/*,*/*;q=0.8"


@pytest.mark.parametrize(
    "validators",
    [Validators(etag=ETAG), Validators(last_modified=LAST_MODIFIED)],
    ids=["etag-only", "last-modified-only"],
)
def test_only_the_validators_given_are_sent(validators: Validators, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(304))
    assert fetch_image_revalidated(server.url("/img.png"), limits(), validators=validators).not_modified
    assert conditional_headers_sent(server) == [(validators.etag, validators.last_modified)]


@pytest.mark.parametrize("validators", [None, Validators(), Validators(etag="", last_modified="")])
def test_without_validators_the_get_is_unconditional(validators: Validators | None, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=validators)
    assert fetched == FetchedImage(data=PNG, validators=Validators(), not_modified=False)
    assert fetch_image(server.url("/img.png"), limits()) == PNG
    assert conditional_headers_sent(server) == [(None, None)] * 2


def test_not_modified_never_asks_for_the_endless_body(server: LoopbackHTTPServer) -> None:
    full_answers = []

    def endless(request: RequestHandler) -> None:
        full_answers.append(request.path)
        endless_body()(request)

    server.route("/img.png", revalidating(ETAG, endless))
    started = time.monotonic()
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert time.monotonic() - started < QUICK_S
    assert fetched.not_modified
    assert fetched.data is None
    assert full_answers == []
    assert server.hits() == 1


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_bytes_a_server_sends_after_a_304_are_not_read(framing: str, server: LoopbackHTTPServer) -> None:
    # http.client reads no body after a 304 unless it claims to be chunked; it must not be asked to.
    def body_after_304(request: RequestHandler) -> None:
        request.send_response(304)
        if framing == "chunked":
            request.send_header("Transfer-Encoding", "chunked")
        else:
            request.send_header("Content-Length", "100000000")
        request.end_headers()
        request.close_connection = True
        chunk = b"\0" * 65536
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if framing == "chunked" else chunk
        while not request.stopping.is_set():
            request.wfile.write(framed)

    server.route("/img.png", body_after_304)
    started = time.monotonic()
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(max_bytes=1000), validators=STORED)
    assert time.monotonic() - started < QUICK_S
    assert fetched == FetchedImage(data=None, validators=STORED, not_modified=True)


def test_changed_content_returns_the_new_data_and_validators(server: LoopbackHTTPServer) -> None:
    new_png = PNG + b"v2"
    new_headers = {"ETag": '"v2"', "Last-Modified": "Thu, 22 Oct 2015 08:00:00 GMT"}
    server.route("/img.png", revalidating('"v2"', respond(200, new_png, new_headers)))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert fetched == FetchedImage(
        data=new_png,
        validators=Validators(etag='"v2"', last_modified="Thu, 22 Oct 2015 08:00:00 GMT"),
        not_modified=False,
    )
    again = fetch_image_revalidated(server.url("/img.png"), limits(), validators=fetched.validators)
    assert again == FetchedImage(data=None, validators=fetched.validators, not_modified=True)
    assert conditional_headers_sent(server) == [(ETAG, LAST_MODIFIED), ('"v2"', "Thu, 22 Oct 2015 08:00:00 GMT")]


def test_changed_content_without_validators_forgets_the_old_ones(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert fetched == FetchedImage(data=PNG, validators=Validators(), not_modified=False)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"ETag": ETAG, "Last-Modified": LAST_MODIFIED}, STORED),
        ({"ETag": ETAG}, Validators(etag=ETAG)),
        ({"Last-Modified": LAST_MODIFIED}, Validators(last_modified=LAST_MODIFIED)),
        ({}, Validators()),
        ({"ETag": ""}, Validators()),
    ],
    ids=["both", "etag", "last-modified", "none", "empty"],
)
def test_validators_are_taken_from_a_200(
    headers: dict[str, str], expected: Validators, server: LoopbackHTTPServer
) -> None:
    server.route("/img.png", respond(200, PNG, headers))
    assert fetch_image_revalidated(server.url("/img.png"), limits()).validators == expected


def test_whitespace_around_a_validator_is_no_part_of_it(server: LoopbackHTTPServer) -> None:
    def padded(request: RequestHandler) -> None:
        request.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nETag:   "x"  \t\r\nConnection: close\r\n\r\nx')
        request.close_connection = True

    server.route("/img.png", padded)
    assert fetch_image_revalidated(server.url("/img.png"), limits()).validators == Validators(etag='"x"')


def test_a_weak_etag_round_trips(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", revalidating('W/"x"', respond(200, PNG, {"ETag": 'W/"x"'})))
    first = fetch_image_revalidated(server.url("/img.png"), limits())
    assert first == FetchedImage(data=PNG, validators=Validators(etag='W/"x"'), not_modified=False)
    second = fetch_image_revalidated(server.url("/img.png"), limits(), validators=first.validators)
    assert second == FetchedImage(data=None, validators=Validators(etag='W/"x"'), not_modified=True)
    assert conditional_headers_sent(server) == [(None, None), ('W/"x"', None)]


HOSTILE_VALIDATORS = [
    '"a\x00b"',
    '"a\x1b[31mb"',
    '"a\x7fb"',
    '"a\tb"',
    '"caf\xe9"',
    '"' + "a" * (MAX_VALIDATOR_LENGTH - 1) + '"',
]


@pytest.mark.parametrize("value", HOSTILE_VALIDATORS, ids=["nul", "escape", "del", "tab", "latin-1", "too-long"])
def test_hostile_validators_from_a_server_are_dropped(value: str, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG, {"ETag": value, "Last-Modified": value}))
    assert fetch_image_revalidated(server.url("/img.png"), limits()).validators == Validators()


def test_a_validator_of_exactly_the_maximum_length_is_kept(server: LoopbackHTTPServer) -> None:
    longest = '"' + "a" * (MAX_VALIDATOR_LENGTH - 2) + '"'
    server.route("/img.png", revalidating(longest, respond(200, PNG, {"ETag": longest})))
    first = fetch_image_revalidated(server.url("/img.png"), limits())
    assert first.validators == Validators(etag=longest)
    assert fetch_image_revalidated(server.url("/img.png"), limits(), validators=first.validators).not_modified


@pytest.mark.parametrize(
    "value", [*HOSTILE_VALIDATORS, '"a"\r\nX-Injected: 1', '"a"\nX-Injected: 1'], ids=lambda v: repr(v[:12])
)
def test_hostile_stored_validators_are_not_sent(value: str, server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(200, PNG))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=Validators(value, value))
    assert fetched == FetchedImage(data=PNG, validators=Validators(), not_modified=False)
    assert conditional_headers_sent(server) == [(None, None)]
    assert "X-Injected" not in server.requests[-1].headers


@pytest.mark.parametrize("validators", [None, Validators(), Validators(etag="\x00")], ids=["none", "empty", "dropped"])
def test_a_304_to_an_unconditional_get_is_an_http_304_error(
    validators: Validators | None, server: LoopbackHTTPServer
) -> None:
    server.route("/img.png", respond(304))
    url = server.url("/img.png")
    error, _ = expect_error("http_304", lambda: fetch_image_revalidated(url, limits(), validators=validators))
    assert not error.transient
    assert error.status_code == 304
    error, _ = expect_error("http_304", lambda: fetch_image(url, limits()))
    assert not error.transient


def test_the_validators_of_a_304_replace_the_given_ones_field_by_field(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(304, b"", {"ETag": '"v1-renamed"'}))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert fetched == FetchedImage(
        data=None, validators=Validators(etag='"v1-renamed"', last_modified=LAST_MODIFIED), not_modified=True
    )


def test_hostile_validators_of_a_304_keep_the_given_ones(server: LoopbackHTTPServer) -> None:
    server.route("/img.png", respond(304, b"", {"ETag": '"a\x01"', "Last-Modified": "x" * 2000}))
    fetched = fetch_image_revalidated(server.url("/img.png"), limits(), validators=STORED)
    assert fetched == FetchedImage(data=None, validators=STORED, not_modified=True)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_validators_go_out_on_every_hop_and_a_redirect_then_304_is_not_modified(
    status: int, server: LoopbackHTTPServer
) -> None:
    server.route("/old", redirect("/moved", status))
    server.route("/moved", redirect(server.url("/img.png"), status))
    server.route("/img.png", revalidating(ETAG, endless_body()))
    fetched = fetch_image_revalidated(server.url("/old"), limits(), validators=STORED)
    assert fetched == FetchedImage(data=None, validators=STORED, not_modified=True)
    assert [r.path for r in server.requests] == ["/old", "/moved", "/img.png"]
    assert conditional_headers_sent(server) == [(ETAG, LAST_MODIFIED)] * 3


def test_revalidation_keeps_every_guard(server: LoopbackHTTPServer, victims: CanaryPair) -> None:
    server.route("/go", redirect(f"http://127.0.0.1:{victims.port}/img.png"))
    server.route("/big.png", respond(200, b"x" * 1001, {"ETag": '"big"'}))
    server.route("/loop", redirect("/loop"))
    expect_error("blocked_address", lambda: fetch_image_revalidated(server.url("/go"), limits(), validators=STORED))
    expect_error(
        "too_large",
        lambda: fetch_image_revalidated(server.url("/big.png"), limits(max_bytes=1000), validators=STORED),
    )
    expect_error(
        "too_many_redirects", lambda: fetch_image_revalidated(server.url("/loop"), limits(), validators=STORED)
    )
    assert victims.accepted == 0


# --- post_json -------------------------------------------------------------------


def test_post_sends_the_body_and_returns_the_status(server: LoopbackHTTPServer) -> None:
    server.route("/hook", respond(204))
    body = b'{"event": "done"}'
    result = post_json(server.url("/hook"), body, {"X-Signature": "sig"}, limits())
    assert isinstance(result, PostResult)
    assert result.status_code == 204
    assert result.duration_ms >= 0
    sent = server.requests[-1]
    assert (sent.method, sent.body) == ("POST", body)
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["X-Signature"] == "sig"
    assert sent.headers["User-Agent"] == "catalog-image-service/1.0"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_post_returns_a_redirect_without_following_it(
    status: int, server: LoopbackHTTPServer, victims: CanaryPair
) -> None:
    server.route("/hook", redirect(server.url("/target"), status))
    server.route("/hook-to-victim", redirect(f"http://127.0.0.1:{victims.port}/", status))
    assert post_json(server.url("/hook"), b"{}", {}, limits()).status_code == status
    assert post_json(server.url("/hook-to-victim"), b"{}", {}, limits()).status_code == status
    assert server.hits("/target") == 0


def test_post_returns_server_errors_as_status(server: LoopbackHTTPServer) -> None:
    server.route("/hook", endless_body())  # a 200 with a body that never ends is still just a 200
    assert post_json(server.url("/hook"), b"{}", {}, limits()).status_code == 200
    server.route("/hook", respond(500, b"oops"))
    assert post_json(server.url("/hook"), b"{}", {}, limits()).status_code == 500


def test_post_to_a_server_that_never_answers_times_out(server: LoopbackHTTPServer) -> None:
    server.route("/hook", hang)
    error, elapsed = expect_error("download_timeout", lambda: post_json(server.url("/hook"), b"{}", {}, limits(), 0.5))
    assert error.transient
    assert elapsed < 1.5


def test_post_connection_refused_is_transient() -> None:
    port = unused_port(SERVER_HOST)
    error, _ = expect_error("connection_error", lambda: post_json(f"http://{SERVER_HOST}:{port}/", b"{}", {}, limits()))
    assert error.transient


# --- Retry-After parsing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("2", 2.0), ("0", 0.0), ("1.5", 1.5), ("120", 60.0), ("-5", None), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_dates() -> None:
    now = time.time()
    soon = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert 28 <= parse_retry_after(soon) <= 30  # type: ignore[operator]
    assert parse_retry_after(past) == 0.0
