"""Unit tests for address_policy: the classifier as a pure function. No test here opens a connection."""

from __future__ import annotations

import ipaddress
import random
import re
import socket

import pytest

from network_policy.addresses import (
    blocked_reason,
    embedded_ipv4,
    is_blocked,
    is_blocked_host_literal,
    literal_address,
    parse_networks,
)

net = ipaddress.ip_network
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

BLOCKED_RANGES = [
    # IPv4
    ("0.0.0.0/8", None),  # 0.0.0.0 itself is "unspecified"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol-assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay-anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", None),  # 255.255.255.255 is "broadcast"
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "ipv4-compatible"),
    ("::ffff:0:0:0/96", "ipv4-translated"),
    ("::/8", None),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64-local-use"),
    ("100::/64", "discard-only"),
    ("2001::/32", "teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "orchid"),
    ("2001:20::/28", "orchid-v2"),
    ("2001::/23", None),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6-sid"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("4000::/2", "reserved"),
    ("::ffff:0.0.0.0/104", None),
    ("::ffff:127.0.0.0/104", "loopback (ipv4-mapped)"),
    ("::ffff:10.0.0.0/104", "private (ipv4-mapped)"),
    ("::ffff:169.254.0.0/112", "link-local (ipv4-mapped)"),
]


def _first_middle_last(cidr: str) -> list[str]:
    network = net(cidr)
    first, last = int(network.network_address), int(network.broadcast_address)
    kind = type(network.network_address)
    return [str(kind(first)), str(kind((first + last) // 2)), str(kind(last))]


@pytest.mark.parametrize(
    ("address", "cidr", "reason"),
    [(address, cidr, reason) for cidr, reason in BLOCKED_RANGES for address in _first_middle_last(cidr)],
)
def test_every_address_of_each_blocked_range_is_blocked(address: str, cidr: str, reason: str | None) -> None:
    assert is_blocked(address), f"{address} in {cidr} should be blocked"
    found = blocked_reason(address)
    assert found is not None
    if reason is not None and address not in ("::", "::1"):
        assert found.startswith(reason), f"{address}: {found!r}"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("0.1.2.3", "this-network"),
        ("240.0.0.1", "reserved"),
        ("169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fd00::2", "unique-local"),
        ("fe80::1%eth0", "link-local"),
        ("[::1]", "loopback"),
        ("100:0:0:1::1", "dummy-prefix"),
        ("2001:1::1", "ietf-protocol-assignment"),
        ("8000::1", "reserved"),
    ],
)
def test_reasons_name_the_range(address: str, reason: str) -> None:
    assert blocked_reason(address) == reason


# A table, as LOOPBACK_SPELLINGS below: one case a line, common public addresses and the ones just
# outside each blocked range.
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",
    "::ffff:93.184.216.34",
    # Just outside blocked ranges.
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.255",
    "192.0.3.0",
    "192.88.98.255",
    "192.88.100.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.255",
    "203.0.112.255",
    "203.0.114.0",
    "223.255.255.255",
    "2001:200::1",
    "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db9::",
    "2003::1",
    "3ffe:ffff::1",
    "3fff:1000::",
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(address) is None
    assert not is_blocked(ipaddress.ip_address(address))


def _mapped(v4: str) -> str:
    return str(V6(0xFFFF << 32 | int(V4(v4))))


def _compatible(v4: str) -> str:
    return str(V6(int(V4(v4))))


def _translated(v4: str) -> str:
    return str(V6(0xFFFF << 48 | int(V4(v4))))


def _sixtofour(v4: str) -> str:
    return str(V6(0x2002 << 112 | int(V4(v4)) << 80 | 1))


def _nat64(v4: str) -> str:
    return str(V6(int(V6("64:ff9b::")) | int(V4(v4))))


def _nat64_local(v4: str) -> str:
    return str(V6(int(V6("64:ff9b:1::")) | int(V4(v4))))


def _teredo_client(v4: str, server: str = "65.54.227.120") -> str:
    return str(V6(0x20010000 << 96 | int(V4(server)) << 64 | 0x8000 << 48 | (~int(V4(v4)) & 0xFFFFFFFF)))


def _teredo_server(v4: str, client: str = "8.8.8.8") -> str:
    return str(V6(0x20010000 << 96 | int(V4(v4)) << 64 | (~int(V4(client)) & 0xFFFFFFFF)))


EMBEDDINGS = {
    "ipv4-mapped": _mapped,
    "ipv4-compatible": _compatible,
    "ipv4-translated": _translated,
    "6to4": _sixtofour,
    "nat64": _nat64,
    "nat64-local-use": _nat64_local,
    "teredo-client": _teredo_client,
    "teredo-server": _teredo_server,
}

INTERNAL_V4 = {"127.0.0.1": "loopback", "10.0.0.1": "private", "169.254.169.254": "link-local"}


@pytest.mark.parametrize("form", sorted(EMBEDDINGS))
@pytest.mark.parametrize("v4", sorted(INTERNAL_V4))
def test_embedded_internal_ipv4_is_blocked_in_every_form(form: str, v4: str) -> None:
    address = EMBEDDINGS[form](v4)
    reason = blocked_reason(address)
    assert reason is not None, address
    assert INTERNAL_V4[v4] in reason, f"{address}: {reason!r}"


@pytest.mark.parametrize("form", sorted(EMBEDDINGS))
def test_embedded_ipv4_is_unwrapped(form: str) -> None:
    address = V6(EMBEDDINGS[form]("10.0.0.1"))
    found = embedded_ipv4(address)
    assert found is not None
    assert V4("10.0.0.1") in found[1]


@pytest.mark.parametrize("form", sorted(set(EMBEDDINGS) - {"ipv4-mapped"}))
def test_embedding_forms_other_than_mapped_are_blocked_whole(form: str) -> None:
    address = EMBEDDINGS[form]("8.8.8.8")
    assert is_blocked(address), address


def test_teredo_with_public_server_and_client_is_still_blocked() -> None:
    assert blocked_reason(_teredo_client("8.8.8.8", server="1.1.1.1")) == "teredo"


def test_known_teredo_example_unwraps_client_and_server() -> None:
    # RFC 4380 example: server 65.54.227.120, client 192.0.2.45 behind port 40000.
    form, (server, client) = embedded_ipv4(V6("2001:0:4136:e378:8000:63bf:3fff:fdd2"))  # type: ignore[misc]
    assert form == "teredo"
    assert (server, client) == (V4("65.54.227.120"), V4("192.0.2.45"))


def test_unspecified_and_loopback_are_not_treated_as_ipv4_compatible() -> None:
    assert embedded_ipv4(V6("::")) is None
    assert embedded_ipv4(V6("::1")) is None
    assert embedded_ipv4(V6("2606:4700:4700::1111")) is None


def test_mapped_loopback_is_blocked_without_relying_on_ipaddress_flags() -> None:
    assert blocked_reason("::ffff:127.0.0.1") == "loopback (ipv4-mapped)"
    assert blocked_reason(V6("::ffff:7f00:1")) == "loopback (ipv4-mapped)"


def test_everything_ipaddress_calls_non_global_is_blocked() -> None:
    rng = random.Random(1234)
    samples = [V4(rng.getrandbits(32)) for _ in range(20000)]
    samples += [V6(rng.getrandbits(128)) for _ in range(5000)]
    samples += [V6(rng.getrandbits(16) << 112 | rng.getrandbits(64)) for _ in range(5000)]
    for address in samples:
        flagged = (
            not address.is_global
            or address.is_multicast
            or address.is_private
            or address.is_reserved
            or address.is_link_local
            or address.is_loopback
        )
        if flagged:
            assert is_blocked(address), address


# --- allowed networks --------------------------------------------------------


def test_allowed_network_overrides_the_block() -> None:
    allowed = parse_networks("127.0.0.2/32")
    assert not is_blocked("127.0.0.2", allowed)
    assert is_blocked("127.0.0.1", allowed)
    assert is_blocked("127.0.0.3", allowed)
    assert is_blocked("::1", allowed)


def test_allowed_ipv4_also_opens_its_mapped_form_only() -> None:
    allowed = parse_networks("127.0.0.2/32")
    assert not is_blocked("::ffff:127.0.0.2", allowed)
    assert is_blocked(_sixtofour("127.0.0.2"), allowed)
    assert is_blocked(_nat64("127.0.0.2"), allowed)
    assert is_blocked(_teredo_client("127.0.0.2"), allowed)
    assert is_blocked(_compatible("127.0.0.2"), allowed)


def test_allowed_ipv6_prefix_opens_the_raw_address() -> None:
    assert not is_blocked(_sixtofour("127.0.0.2"), parse_networks("2002::/16"))
    assert not is_blocked("fd00::2", parse_networks("fd00::/64"))
    assert not is_blocked("fe80::1%eth0", parse_networks("fe80::/10"))
    assert not is_blocked("10.9.8.7", parse_networks("10.0.0.0/8, fd00::/8"))


def test_ipv6_network_does_not_match_ipv4_address() -> None:
    assert is_blocked("127.0.0.1", parse_networks("::/0"))
    assert not is_blocked("127.0.0.1", parse_networks("0.0.0.0/0"))


def test_is_blocked_rejects_a_non_ip_string() -> None:
    with pytest.raises(ValueError):
        is_blocked("localhost")


# --- parse_networks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("127.0.0.2/32", (net("127.0.0.2/32"),)),
        ("127.0.0.2/32, 10.0.0.0/8", (net("127.0.0.2/32"), net("10.0.0.0/8"))),
        ("127.0.0.2", (net("127.0.0.2/32"),)),
        ("::1, fc00::/7\n192.168.0.0/16", (net("::1/128"), net("fc00::/7"), net("192.168.0.0/16"))),
        (",10.0.0.0/8,,", (net("10.0.0.0/8"),)),
    ],
)
def test_parse_networks(spec: str, expected: tuple[object, ...]) -> None:
    assert parse_networks(spec) == expected


@pytest.mark.parametrize("bad", ["nonsense", "10.0.0.1/8", "10.0.0.0/33", "300.1.1.1", "fc00::/129", "localhost"])
def test_parse_networks_names_the_bad_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_networks(f"127.0.0.2/32, {bad}")


# --- literal_address ---------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0177.0.0.1",
    "0177.0000.0000.0001",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0x7f.0.0.0x1",
    "0x7f.0x0.0x0.0x1",
    "017700000001",
    "127.0.0.1.",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_literal_address_reads_every_ipv4_spelling(host: str) -> None:
    assert literal_address(host) == V4("127.0.0.1")
    assert is_blocked_host_literal(host)


@pytest.mark.parametrize("host", [h for h in LOOPBACK_SPELLINGS if not h.endswith(".")] + ["1.2.3", "10.1", "0"])
def test_literal_address_agrees_with_libc_inet_aton(host: str) -> None:
    assert literal_address(host) == V4(socket.inet_aton(host))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("[0:0:0:0:0:ffff:7f00:0001]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("2606:4700:4700::1111", "2606:4700:4700::1111"),
    ],
)
def test_literal_address_reads_ipv6(host: str, expected: str) -> None:
    assert literal_address(host) == V6(expected)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "example.com",
        "images.example.org",
        "127.0.0.1.nip.io",
        "0x7f.example",
        "1.2.3.4.5",
        "08.0.0.1",
        "0x",
        "0x.1",
        "",
        "256.0.0.1",
        "1.2.3.256",
        "1.16777216",
        "4294967296",
        "-1",
        "+127.0.0.1",
        "127.0.0.1x",
        "1..1",
        "[not-v6]",
        "::ffff:zz",
        "\u0661\u0662\u0667.0.0.1",
    ],
)
def test_literal_address_is_none_for_names_and_garbage(host: str) -> None:
    assert literal_address(host) is None
    assert not is_blocked_host_literal(host)


def test_is_blocked_host_literal_respects_allowed_and_public() -> None:
    assert is_blocked_host_literal("[::ffff:7f00:1]")
    assert is_blocked_host_literal("0xa9.0xfe.0xa9.0xfe")  # 169.254.169.254
    assert not is_blocked_host_literal("8.8.8.8")
    assert not is_blocked_host_literal("134744072")  # 8.8.8.8
    assert not is_blocked_host_literal("127.0.0.2", parse_networks("127.0.0.2/32"))
