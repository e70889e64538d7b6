"""Prometheus metrics: what each process counts, and what ``/metrics`` computes when it is scraped.

Counters and histograms are recorded where the work happens: the API's processes and the workers'
pool processes. With ``PROMETHEUS_MULTIPROC_DIR`` set (launcher.py sets it), each process writes them
to files of its own in that folder and a scrape of any API process adds every file up: one scrape per
machine. Without it, each process counts in memory and its ``/metrics`` shows that process alone.

Gauges (queue lengths, requests in each status) are read from the broker and the database when
scraped, by a collector of the scrape's own registry: never written to the files.
"""

from __future__ import annotations

import hmac
import http
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import datetime

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select, text

import database
from errors import ApiError
from models import WAITING_IMAGE, Image, Request, RequestStatus, db, utcnow
from observability.batched_counts import BatchedCounts
from queueing import broker

log = logging.getLogger(__name__)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder every process of this machine writes its counts to, made if missing; None if unset."""
    folder = os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
    return folder


# prometheus_client opens a process's file with its first metric, below, so the folder must exist now.
multiprocess_dir()
if values.ValueClass is not values.MutexValue:
    # Containers of one machine share the folder (docker-compose.yml) but not a PID namespace: one file per
    # host name and pid, so that two containers' pid 7 never write to one file.
    values.ValueClass = values.MultiProcessValue(lambda: f"{socket.gethostname()}-{os.getpid()}")
# Creation timestamps have no meaning summed over processes, and multiprocess mode has none.
disable_created_metrics()

#: The metrics this process records; a scrape reads them (or every process's files), never this alone.
RECORDED = CollectorRegistry(auto_describe=True)

# Every label value comes from a closed set: a value a client or an image source chooses would be a new
# series in every process's file, kept for as long as the folder is, and one scrape reads them all.
#: The methods HTTP defines (RFC 9110, and PATCH); any other a client sends is counted as ``other``.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "other"
#: The route of a request no URL rule matched, whatever its path.
UNMATCHED_ROUTE = "(unmatched)"
_REGISTERED_STATUSES = frozenset(status.value for status in http.HTTPStatus)

HTTP_REQUESTS = Counter(
    "imgsvc_http_requests",
    "HTTP requests answered, by method (or other), URL rule (not the raw path) and status code.",
    ["method", "route", "status"],
    registry=RECORDED,
)
IMAGES_PROCESSED = Counter(
    "imgsvc_images_processed",
    "Images completed, by outcome: encoded, kept_source (never_bigger kept the source) or reused.",
    ["outcome"],
    registry=RECORDED,
)
IMAGES_FAILED = Counter(
    "imgsvc_images_failed", "Images that ended FAILED, by error code.", ["error_code"], registry=RECORDED
)
IMAGE_RETRIES = Counter(
    "imgsvc_image_retries",
    "Transient failures after which an image was scheduled again, by error code.",
    ["error_code"],
    registry=RECORDED,
)
DOWNLOAD_SECONDS = Histogram(
    "imgsvc_image_download_seconds",
    "Time to download a source image (or have it confirmed unchanged), for downloads that succeeded.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=RECORDED,
)
_CPU_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DECODE_SECONDS = Histogram(
    "imgsvc_image_decode_seconds",
    "Time to decode, shrink, orient and flatten a source image.",
    buckets=_CPU_BUCKETS,
    registry=RECORDED,
)
ENCODE_SECONDS = Histogram(
    "imgsvc_image_encode_seconds",
    "Time to encode an output (every try of a quality=auto search included).",
    buckets=_CPU_BUCKETS,
    registry=RECORDED,
)
DOWNLOADED_BYTES = Counter("imgsvc_image_downloaded_bytes", "Bytes downloaded from image sources.", registry=RECORDED)
STORED_BYTES = Counter("imgsvc_image_stored_bytes", "Bytes of outputs written to storage.", registry=RECORDED)
WEBHOOK_ATTEMPTS = Counter(
    "imgsvc_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered, http_3xx/http_4xx/http_5xx or network_error.",
    ["outcome"],
    registry=RECORDED,
)
WEBHOOKS_GIVEN_UP = Counter(
    "imgsvc_webhook_events_given_up",
    "Webhook events that ended FAILED: every attempt used, or refused for good (410, a blocked address).",
    registry=RECORDED,
)
HANDOFFS_DEFERRED = Counter(
    "imgsvc_handoffs_deferred",
    "Accepted uploads and retries whose work the broker (or the database) did not take just after the commit, "
    "left to the dispatcher, by kind: images or import.",
    ["kind"],
    registry=RECORDED,
)


def method_label(method: str) -> str:
    """A request's method as a label: the method itself if HTTP defines it, else ``other``."""
    return method if method in STANDARD_METHODS else OTHER_METHOD


def error_code_label(code: str) -> str:
    """An image error code as a label: ``http_<status>`` of a status no RFC registers becomes its class."""
    prefix, _, digits = code.partition("_")
    if prefix == "http" and digits.isdigit() and int(digits) not in _REGISTERED_STATUSES:
        return f"http_{int(digits) // 100}xx"
    return code


def count_image_failed(code: str, images: int = 1) -> None:
    """Count images that ended FAILED with error ``code``."""
    IMAGES_FAILED.labels(error_code_label(code)).inc(images)


def count_image_retry(code: str) -> None:
    """Count an image scheduled again after a transient failure with error ``code``."""
    IMAGE_RETRIES.labels(error_code_label(code)).inc()


def webhook_outcome(status_code: int | None) -> str:
    """An attempt's outcome label: ``delivered``, ``http_4xx`` and the like, or ``network_error``."""
    if status_code is None:
        return "network_error"
    if 200 <= status_code < 300:
        return "delivered"
    return f"http_{status_code // 100}xx"


def init_app(app: Flask) -> None:
    """Count every HTTP response the app gives."""
    app.after_request(_count_response)


#: Every HTTP response, counted in batches (``BatchedCounts``).
HTTP_RESPONSES = BatchedCounts(HTTP_REQUESTS)


def _count_response(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    HTTP_RESPONSES.inc(method_label(request.method), rule, str(response.status_code))
    return response


def check_scrape_token(presented: str) -> None:
    """With ``METRICS_TOKEN`` set, a scrape must send it as ``Authorization: Bearer <token>``."""
    token = current_app.config["SETTINGS"].metrics_token
    if not token:
        return
    scheme, _, value = presented.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "Send the metrics token: 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def exposition() -> tuple[bytes, str]:
    """Everything recorded on this machine (or in this process) and the gauges read now, as Prometheus text."""
    HTTP_RESPONSES.flush()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RecordedCollector())
    registry.register(_StateCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _RecordedCollector:
    def collect(self) -> Iterator[Metric]:
        folder = multiprocess_dir()
        if folder is None:
            yield from RECORDED.collect()
            return
        from_files = MultiProcessCollector(None, path=folder).collect()
        if values.ValueClass is not values.MutexValue:
            yield from from_files
            return
        # This process imported prometheus_client before the folder was set (a test serving the app
        # in-process), so it counts in memory: its counts are added to the other processes' files.
        yield from _summed([from_files, RECORDED.collect()])


def _summed(sources: Iterable[Iterable[Metric]]) -> Iterator[Metric]:
    """One family per name, each sample the sum of its values across ``sources``."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            totals = sums.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                totals[key] = totals.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in sums[name].items():
            family.add_sample(sample_name, dict(labels), value)
        yield family


class _StateCollector:
    """Gauges read at scrape time: what the broker holds and what the database says is waiting."""

    def collect(self) -> Iterator[Metric]:
        queues = GaugeMetricFamily(
            "imgsvc_queue_messages",
            "Messages in each broker queue, plus those every worker has reserved and not acknowledged.",
            labels=["queue"],
        )
        for queue in broker.ALL_QUEUES:
            held = broker.messages_held(queue)
            if held is not None:
                queues.add_metric([queue], held)
        yield queues
        try:
            by_status, waiting, oldest = _database_state()
        except Exception:  # a scrape still answers with what it has; the log says why the rest is missing
            log.warning("the database could not be read for a scrape", exc_info=True)
            return
        requests = GaugeMetricFamily("imgsvc_requests", "Requests in each status.", labels=["status"])
        for status in RequestStatus:
            requests.add_metric([status.value], by_status.get(status.value, 0))
        yield requests
        yield GaugeMetricFamily(
            "imgsvc_images_waiting",
            "Images waiting for the dispatcher to hand them to the broker.",
            value=waiting,
        )
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "imgsvc_images_waiting_oldest_age_seconds",
            "Seconds since the longest-waiting image (the lowest id among those waiting) was uploaded; 0 if none.",
            value=max(age, 0.0),
        )


def _database_state() -> tuple[dict[str, int], int, datetime | None]:
    """Requests by status, waiting images and the oldest one's upload time, in one short read-only transaction."""
    session = db.session
    with database.read_only():
        try:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SET TRANSACTION READ ONLY"))
                session.execute(text("SET LOCAL statement_timeout = '5s'"))
            by_status = dict(session.execute(select(Request.status, func.count()).group_by(Request.status)).all())
            waiting = session.scalar(select(func.count()).select_from(Image).where(text(WAITING_IMAGE))) or 0
            oldest = session.scalar(select(Image.created_at).where(text(WAITING_IMAGE)).order_by(Image.id).limit(1))
        finally:
            session.rollback()
    return by_status, waiting, oldest
