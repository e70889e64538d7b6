"""A fake resolver for tests: chosen names answered from a table, every other host only as a numeric one."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Callable[[], list[str]]]) -> list[str]:
    """Answer the given names from a table; everything else must be a numeric host (never sent to a resolver)."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host in answers:
            asked.append(host)
            result = []
            for address in answers[host]():
                if ":" in address:
                    result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 0, 0, 0)))
                else:
                    result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0)))
            return result
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked
