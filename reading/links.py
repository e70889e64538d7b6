"""Where a request's status and output CSV are found: the URLs the API writes into its answers."""

from __future__ import annotations

import uuid


def output_csv_url(public_base_url: str, request_id: uuid.UUID) -> str:
    return f"{public_base_url}/api/requests/{request_id}/output.csv"


def status_url(public_base_url: str, request_id: uuid.UUID) -> str:
    return f"{public_base_url}/api/status/{request_id}"
