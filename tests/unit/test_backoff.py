"""The back-off rule: a capped doubling, full jitter below it, proportional jitter above a given delay."""

from __future__ import annotations

import random

import pytest

from queueing import backoff


@pytest.fixture
def draws_at(monkeypatch):
    """Make every uniform draw land on its lower (``"low"``) or upper (``"high"``) bound."""

    def pin(end: str) -> None:
        monkeypatch.setattr(random, "uniform", lambda low, high: low if end == "low" else high)

    return pin


def test_the_delay_doubles_with_each_failure_up_to_the_cap():
    delays = [backoff.exponential(failures, base_s=2.0, cap_s=30.0) for failures in range(6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_doubling_stops_after_max_doublings_even_below_the_cap():
    limit = 0.001 * 2**backoff.MAX_DOUBLINGS
    assert backoff.exponential(backoff.MAX_DOUBLINGS, base_s=0.001, cap_s=10.0) == pytest.approx(limit)
    assert backoff.exponential(10_000, base_s=0.001, cap_s=10.0) == pytest.approx(limit)


def test_a_base_above_the_cap_waits_the_cap():
    assert backoff.exponential(0, base_s=20.0, cap_s=10.0) == 10.0


def test_full_jitter_spans_zero_to_the_delay(draws_at):
    draws_at("low")
    assert backoff.exponential(3, base_s=2.0, cap_s=30.0, jitter=True) == 0.0
    draws_at("high")
    assert backoff.exponential(3, base_s=2.0, cap_s=30.0, jitter=True) == 16.0


def test_full_jitter_stays_within_the_window():
    for failures in range(15):
        ceiling = min(30.0, 2.0 * 2**failures)
        assert all(
            0.0 <= backoff.exponential(failures, base_s=2.0, cap_s=30.0, jitter=True) <= ceiling for _ in range(50)
        )


def test_proportional_jitter_only_lengthens_the_delay(draws_at):
    draws_at("low")
    assert backoff.jittered(60.0, 0.1) == 60.0
    draws_at("high")
    assert backoff.jittered(60.0, 0.1) == pytest.approx(66.0)


def test_proportional_jitter_stays_within_its_spread():
    assert all(10.0 <= backoff.jittered(10.0, 0.1) <= 11.0 for _ in range(200))
    assert backoff.jittered(10.0, 0.0) == 10.0
