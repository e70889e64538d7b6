"""Which IP addresses outbound fetches may reach: a pure classifier, no I/O.

Policy: an address is blocked unless it is plain globally routable unicast.
IPv4 embedded in IPv6 is unwrapped before classifying:

* IPv4-mapped ``::ffff:a.b.c.d`` is judged as the IPv4 address a.b.c.d, since
  a dual-stack socket connects to exactly that IPv4 host.
* Every other embedding is blocked as a whole, whatever IPv4 it carries, and
  the reason names a blocked embedded IPv4 when there is one: 6to4
  ``2002::/16``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, Teredo
  ``2001::/32`` (server and client IPv4) hand the connection to a relay or
  gateway whose idea of "internal" we cannot see; IPv4-translated
  ``::ffff:0:a.b.c.d`` and deprecated IPv4-compatible ``::a.b.c.d`` are not
  translated by the OS and would go out as IPv6 to reserved space.

An ``allowed`` network overrides the block when it holds the raw address or,
for IPv4-mapped only, the unwrapped IPv4. Allowing 127.0.0.2/32 therefore opens
``::ffff:127.0.0.2`` but not ``2002:7f00:2::``, which would reach some relay's
loopback rather than ours; allow the IPv6 prefix itself to open that.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so narrower ranges come before the ranges that contain them.
_IPV4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "this-network"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "cgnat"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "ietf-protocol-assignment"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4-relay-anycast"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_IPV6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b::/96"), "nat64"),
    (_V6("64:ff9b:1::/48"), "nat64-local-use"),
    (_V6("100::/64"), "discard-only"),
    (_V6("100:0:0:1::/64"), "dummy-prefix"),
    (_V6("2001::/32"), "teredo"),
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("2001:10::/28"), "orchid"),
    (_V6("2001:20::/28"), "orchid-v2"),
    # The rest of the IETF block (PCP/TURN anycast, AMT, AS112, drone IDs) has
    # no business serving images or webhooks either.
    (_V6("2001::/23"), "ietf-protocol-assignment"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2002::/16"), "6to4"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("5f00::/16"), "srv6-sid"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("::/8"), "reserved"),
)

_GLOBAL_UNICAST = _V6("2000::/3")


def parse_networks(spec: str) -> tuple[Network, ...]:
    """Parse a comma- or space-separated list of CIDRs or bare addresses."""
    networks: list[Network] = []
    for entry in re.split(r"[,\s]+", spec.strip()):
        if not entry:
            continue
        try:
            # strict: "10.0.0.1/8" is more likely a typo than a wish to open 10/8.
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(f"invalid network {entry!r} in allowed networks: {exc}") from None
    return tuple(networks)


def _strip_scope(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ipaddress.IPv6Address(int(address))
    return address


def _coerce(address: str | IPAddress) -> IPAddress:
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        address = ipaddress.ip_address(text)
    return _strip_scope(address)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """Return the embedding form and the IPv4 addresses an IPv6 address carries, if any."""
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    high96 = value >> 32
    if high96 == 0xFFFF:
        return "ipv4-mapped", (low32,)
    if high96 == 0xFFFF_0000:
        return "ipv4-translated", (low32,)
    if high96 == 0 and value > 1:
        return "ipv4-compatible", (low32,)
    if value >> 112 == 0x2002:
        return "6to4", (ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF),)
    if high96 == 0x0064_FF9B_0000_0000_0000_0000:
        return "nat64", (low32,)
    if value >> 80 == 0x0064_FF9B_0001:
        # Local-use NAT64 may use any RFC 6052 prefix length; /96 is the common one.
        return "nat64-local-use", (low32,)
    if value >> 96 == 0x2001_0000:
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~value & 0xFFFFFFFF)
        return "teredo", (server, client)
    return None


def _in_any(address: IPAddress, allowed: tuple[Network, ...]) -> bool:
    return any(address in network for network in allowed)


def _classify_v4(address: ipaddress.IPv4Address) -> str | None:
    for network, reason in _IPV4_BLOCKED:
        if address in network:
            return reason
    if not address.is_global:
        return "non-global"
    return None


def blocked_reason(address: str | IPAddress, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why an address is blocked (e.g. "loopback", "6to4 (embeds private)"), or None if it may be reached."""
    address = _coerce(address)
    if _in_any(address, allowed):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _classify_v4(address)

    embedded = embedded_ipv4(address)
    if embedded is not None:
        form, v4s = embedded
        if form == "ipv4-mapped":
            if _in_any(v4s[0], allowed):
                return None
            reason = _classify_v4(v4s[0])
            return None if reason is None else f"{reason} (ipv4-mapped)"
        inner = [r for r in (_classify_v4(v4) for v4 in v4s) if r is not None]
        return f"{form} (embeds {inner[0]})" if inner else form

    for network, reason in _IPV6_BLOCKED:
        if address in network:
            return reason
    if address not in _GLOBAL_UNICAST:
        return "reserved"
    if not address.is_global:
        return "non-global"
    return None


def is_blocked(address: str | IPAddress, allowed: tuple[Network, ...] = ()) -> bool:
    """True if outbound traffic must not go to this address; raises ValueError for a non-IP string."""
    return blocked_reason(address, allowed) is not None


_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_INET_ATON_LAST_MAX = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    # glibc's exact inet_aton, which getaddrinfo uses for numeric hosts:
    # 1 to 4 parts, each decimal, octal (leading 0) or hex (0x); the last part
    # fills the remaining bytes ("127.1", "2130706433").
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _INET_ATON_PART.fullmatch(part) or part.lower() == "0x":
            return None
        if part[:2].lower() == "0x":
            values.append(int(part[2:], 16))
        elif part.startswith("0") and len(part) > 1:
            values.append(int(part[1:], 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last > _INET_ATON_LAST_MAX[len(head)]:
        return None
    value = last
    for index, byte in enumerate(head):
        value |= byte << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes if it is an IP literal in any spelling getaddrinfo accepts, else None."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return _strip_scope(ipaddress.IPv6Address(host.replace("%25", "%", 1)))
        except ValueError:
            return None
    # No all-numeric top-level domain exists, so "127.0.0.1." is the literal too.
    if host.endswith("."):
        host = host[:-1]
    return _parse_inet_aton(host)


def is_blocked_host_literal(host: str, allowed: tuple[Network, ...] = ()) -> bool:
    """True if the host is an IP literal (any spelling) whose address is blocked."""
    address = literal_address(host)
    return address is not None and is_blocked(address, allowed)
