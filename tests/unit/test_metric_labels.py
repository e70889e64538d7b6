"""Metric label values come from closed sets, whatever a client or an image source sends."""

from __future__ import annotations

import pytest

from observability import metrics


@pytest.mark.parametrize(
    ("method", "label"),
    [("GET", "GET"), ("PATCH", "PATCH"), ("OPTIONS", "OPTIONS"), ("BREW", "other"), ("GETX", "other"), ("", "other")],
)
def test_a_method_http_does_not_define_is_other(method: str, label: str) -> None:
    assert metrics.method_label(method) == label


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("http_404", "http_404"),
        ("http_503", "http_503"),
        ("http_429", "http_429"),
        ("http_599", "http_5xx"),
        ("http_299", "http_2xx"),
        ("http_999", "http_9xx"),
        ("not_an_image", "not_an_image"),
        ("http_error", "http_error"),
        ("stuck", "stuck"),
    ],
)
def test_an_unregistered_status_is_counted_by_its_class(code: str, label: str) -> None:
    assert metrics.error_code_label(code) == label


def test_every_status_a_source_can_send_makes_a_bounded_set_of_labels() -> None:
    labels = {metrics.error_code_label(f"http_{status}") for status in range(100, 1000)}
    assert len(labels) < 100
