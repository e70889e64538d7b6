"""Every setting of the service, read once from the environment."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from network_policy.addresses import parse_networks
from network_policy.urls import MAX_URL_LENGTH

DEFAULT_WEBHOOK_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
#: Progress streams one API process serves at once; the launcher gives each process this many threads
#: and more, so that streams never take the threads ordinary calls need.
DEFAULT_EVENTS_MAX_STREAMS = 64
#: Of those, the streams one caller (API key, or client address when the service is open) may hold.
DEFAULT_EVENTS_MAX_STREAMS_PER_CALLER = 8
#: The memory one image may take in an image worker process, in MiB; the launcher sizes the pool by it.
DEFAULT_IMAGE_DECODE_BUDGET_MB = 384

# The settings that must nest: soft < hard < visibility timeout, and hard < stale threshold.
_SOFT, _HARD = "TASK_SOFT_TIME_LIMIT_S", "TASK_TIME_LIMIT_S"
_VISIBILITY, _STALE = "BROKER_VISIBILITY_TIMEOUT_S", "STALE_IMAGE_AFTER_S"
NESTED_DEFAULTS = {_SOFT: 120, _HARD: 150, _VISIBILITY: 900, _STALE: 300}

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: An origin as browsers send it: scheme, host and an optional port, no path.
ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting is present but malformed; the message names it."""


N = TypeVar("N", int, float)


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    return _number(env, name, default, int, "an integer", low, high)


def _float(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    return _number(env, name, default, float, "a number", low, None)


def _number(
    env: Mapping[str, str], name: str, default: N, parse: Callable[[str], N], kind: str, low: N, high: N | None
) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{name} must be {bounds}, got {value}")
    return value


def _schedule(env: Mapping[str, str], name: str) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_WEBHOOK_SCHEDULE
    try:
        schedule = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(delay < 0 for delay in schedule):
        raise SettingsError(f"{name} must not hold negative delays, got {raw!r}")
    return schedule


def _networks(env: Mapping[str, str], name: str) -> tuple[Any, ...]:
    try:
        return parse_networks(env.get(name, ""))
    except ValueError as error:
        raise SettingsError(f"{name}: {error}") from None


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in env.get(name, "").split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise SettingsError(f"{name} must be comma-separated origins like https://host[:port], got {origin!r}")
    if "*" in origins and len(origins) > 1:
        raise SettingsError(f"{name}: '*' already allows every origin; give it alone, got {origins!r}")
    return origins


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise SettingsError(f"{name} must be 1 or 0 (on or off), got {raw!r}")
    return raw in {"1", "true", "yes", "on"}


def log_format(env: Mapping[str, str]) -> str:
    """``LOG_FORMAT``, which the launcher reads too, to log in it before any app exists."""
    value = env.get("LOG_FORMAT", "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise SettingsError(f"LOG_FORMAT must be 'text' or 'json', got {value!r}")
    return value


def log_level(env: Mapping[str, str]) -> str:
    """``LOG_LEVEL``, which the launcher reads too, to hand it to gunicorn and Celery."""
    value = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if value not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value


def image_decode_budget_mb(env: Mapping[str, str]) -> int:
    """``IMAGE_DECODE_BUDGET_MB``, which the launcher reads too, to size the image worker's pool by memory."""
    return _int(env, "IMAGE_DECODE_BUDGET_MB", DEFAULT_IMAGE_DECODE_BUDGET_MB, 16)


def is_amqp(broker_url: str) -> bool:
    """Whether the broker is RabbitMQ (or another AMQP 0.9.1 broker)."""
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _rate_limit_storage(env: Mapping[str, str]) -> str:
    # Counters kept per process would multiply every limit by the number of API processes: share
    # them through the broker's Redis when there is one.
    explicit = env.get("RATE_LIMIT_STORAGE_URL", "").strip()
    if explicit:
        return explicit
    broker = env.get("CELERY_BROKER_URL", "").strip()
    return broker if broker.startswith(("redis://", "rediss://")) else "memory://"


def _database_url(url: str) -> str:
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the service ships psycopg2.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def _given_time_limits(env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, int]:
    """The time limits the user set, in the environment or as keyword overrides (which win)."""
    given = {}
    for name in NESTED_DEFAULTS:
        if name.lower() in overrides:
            given[name] = overrides[name.lower()]
        elif env.get(name, "").strip():
            given[name] = _int(env, name, 0, 1)
    return given


def _derived(name: str, value: int, source: str, source_value: int, relation: str, level: int) -> int:
    log.log(
        level,
        "%s not set: derived %s from %s=%s (the default %s is not %s it)",
        name,
        value,
        source,
        source_value,
        NESTED_DEFAULTS[name],
        relation,
    )
    return value


def _scaled(value: int, of: str, to: str) -> int:
    """``value`` of setting ``of`` carried over to setting ``to`` in the proportion of their defaults."""
    return value * NESTED_DEFAULTS[to] // NESTED_DEFAULTS[of]


def _fit_hard_limit(given: Mapping[str, int], level: int) -> int:
    """The hard limit the user did not set: its default if that fits what they set, else derived."""
    soft = given.get(_SOFT)
    ceilings = {name: given[name] for name in (_VISIBILITY, _STALE) if name in given}
    low = soft + 1 if soft is not None else 2  # leaves room for a soft limit of at least 1 s
    high = min(ceilings.values()) - 1 if ceilings else None
    if high is not None and low > high:
        ceiling = min(ceilings, key=ceilings.__getitem__)
        if soft is not None:
            raise SettingsError(
                f"{_SOFT}={soft} and {ceiling}={ceilings[ceiling]} leave no room for {_HARD} between them:"
                f" lower {_SOFT} or raise {ceiling}"
            )
        raise SettingsError(
            f"{ceiling}={ceilings[ceiling]} leaves no room below it for {_HARD} and {_SOFT} (at least 1 s"
            f" each): raise {ceiling} to at least 3"
        )
    default = NESTED_DEFAULTS[_HARD]
    below = {name: value for name, value in ceilings.items() if value <= default}
    if below:
        source = min(below, key=lambda name: _scaled(below[name], name, _HARD))
        relation = "below"
    elif soft is not None and soft >= default:
        source, relation = _SOFT, "above"
    else:
        return default
    value = max(low, _scaled(given[source], source, _HARD))
    if high is not None:
        value = min(high, value)
    return _derived(_HARD, value, source, given[source], relation, level)


def _nest_time_limits(given: Mapping[str, int], level: int = logging.WARNING) -> dict[str, int]:
    """The time limits the user set, and the others derived (and logged at ``level``) to nest around them.

    A derived limit keeps its default where that fits, else the proportion of the defaults to the
    limit it must fit: the soft limit 4/5 of the hard one, the hard limit half the stale threshold and
    a sixth of the visibility timeout.

    Raises:
        SettingsError: what the user set leaves no room for a limit they did not set.
    """
    limits = dict(given)
    if _HARD not in limits:
        limits[_HARD] = _fit_hard_limit(given, level)
    hard = limits[_HARD]
    if _SOFT not in limits:
        if hard < 2:
            raise SettingsError(
                f"{_HARD}={hard} leaves no room below it for {_SOFT} (at least 1 s): raise {_HARD} to at least 2"
            )
        soft = NESTED_DEFAULTS[_SOFT]
        if soft >= hard:
            soft = _derived(_SOFT, max(1, _scaled(hard, _HARD, _SOFT)), _HARD, hard, "below", level)
        limits[_SOFT] = soft
    for name in (_VISIBILITY, _STALE):
        if name not in limits:
            value = NESTED_DEFAULTS[name]
            if value <= hard:
                value = _derived(name, _scaled(hard, _HARD, name), _HARD, hard, "above", level)
            limits[name] = value
    return limits


@dataclass(frozen=True)
class Settings:
    """The service's settings; ``from_env`` is the only constructor callers need."""

    instance_dir: Path
    database_url: str
    broker_url: str
    port: int
    public_base_url: str
    storage_backend: str
    storage_root: Path
    webhook_secret: str | None
    fetch_allowed_networks: tuple[Any, ...]
    webhook_retry_schedule: tuple[int, ...]
    webhook_timeout_s: float
    sweep_interval_s: int
    stale_image_after_s: int
    dispatch_interval_s: float
    image_queue_depth: int
    import_after_urls: int
    status_max_lag_s: float
    storage_max_retries: int
    #: How long an upload's Idempotency-Key answers with the request it made.
    idempotency_key_ttl_s: float
    max_upload_bytes: int
    #: Bounds on one image pack (``images.zip``): its files, and the bytes of its images.
    zip_max_files: int
    zip_max_bytes: int
    max_rows: int
    max_urls_per_product: int
    max_url_length: int
    fetch_connect_timeout_s: float
    fetch_read_timeout_s: float
    fetch_total_timeout_s: float
    fetch_max_bytes: int
    fetch_max_redirects: int
    fetch_max_retries: int
    max_image_pixels: int
    image_max_attempts: int
    task_soft_time_limit_s: int
    task_time_limit_s: int
    broker_visibility_timeout_s: int
    serve_samples: bool
    broker_key_prefix: str = ""
    #: A direct (session) connection for LISTEN, where DATABASE_URL goes through a transaction pooler; "" for it.
    database_listen_url: str = ""
    #: RabbitMQ only: ``classic`` queues, or ``quorum`` (replicated; delayed work through native delayed delivery).
    broker_queue_type: str = "classic"
    #: RabbitMQ only: its management API (``http://user:pass@host:15672``), which counts the messages workers hold.
    broker_management_url: str = ""
    #: RabbitMQ only: its ``consumer_timeout``; a task must end well within it (RabbitMQ closes the channel after).
    broker_consumer_timeout_s: int = 1800
    trusted_proxies: int = 0
    api_keys: tuple[str, ...] = ()
    rate_limit_uploads: str = "600/minute"
    rate_limit_reads: str = "60000/minute"
    rate_limit_storage_url: str = "memory://"
    #: Wrong API keys one client address may present before it is refused without a look at its key.
    rate_limit_auth_failures: str = "20/minute"
    #: Images in flight (PENDING or PROCESSING) one key may have; 0 is no limit. The default lets
    #: the largest upload the CSV limits allow (10,000 rows of 50 URLs) through, and no second one.
    max_active_images_per_key: int = 500_000
    #: Image fetches at once per source host, across all workers and machines; 0 is no limit.
    fetch_max_per_host: int = 8
    #: Images to a message: claimed, fetched and recorded together by one image process.
    image_batch_size: int = 16
    #: Sources one image process downloads at once while it encodes: network waits off its core.
    image_fetch_threads: int = 16
    #: Webhook attempts in flight at once per tenant (the open service is one) and per receiving host.
    webhook_max_per_tenant: int = 4
    webhook_max_per_host: int = 8
    #: Seconds after a re-send of a request's webhook before another is accepted.
    webhook_resend_cooldown_s: float = 10.0
    #: How often each API process reads the rows of the requests its progress streams watch.
    events_poll_interval_s: float = 0.5
    #: Seconds between the comments a progress stream sends while nothing changes, for proxies.
    events_heartbeat_s: float = 15.0
    #: Progress streams at once per API process; past it the endpoint answers 503.
    events_max_streams: int = DEFAULT_EVENTS_MAX_STREAMS
    #: Of those, the streams one caller may hold at once (no one caller takes them all); 0 is no cap of its own.
    events_max_streams_per_caller: int = DEFAULT_EVENTS_MAX_STREAMS_PER_CALLER
    #: Requests older than this many days are deleted with their outputs; 0 keeps them forever.
    retention_days: float = 30.0
    #: How often the retention task runs.
    retention_interval_s: float = 3600.0
    #: When set, ``/metrics`` answers only a scrape that sends ``Authorization: Bearer <token>``.
    metrics_token: str = ""
    #: Browser origins allowed to call ``/api`` and read ``/media`` across origins; empty is none.
    cors_origins: tuple[str, ...] = ()
    log_format: str = "text"
    #: The lowest level logged by every process; DEBUG shows the housekeeping that runs every second.
    log_level: str = "INFO"
    #: Whether this process logs the warnings about its settings (an open API, derived time limits) as
    #: warnings; off, at DEBUG. The launcher turns it off for the processes it starts after the migrations,
    #: which have logged them once.
    startup_warnings: bool = True
    #: The memory one image may take on its way through the pipeline, estimated before decoding.
    image_decode_budget_bytes: int = DEFAULT_IMAGE_DECODE_BUDGET_MB << 20
    #: The bytes of rendered status pages each API process keeps.
    status_cache_bytes: int = 32 << 20
    s3: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); keyword overrides win.

        Raises:
            SettingsError: a variable is present but malformed.
        """
        env = dict(os.environ if environ is None else environ)
        instance_dir = Path(env.get("INSTANCE_DIR") or Path(__file__).parent / "instance").resolve()
        port = _int(env, "PORT", 5000, 1, 65535)
        backend = env.get("STORAGE_BACKEND", "local").strip() or "local"
        if backend not in {"local", "s3"}:
            raise SettingsError(f"STORAGE_BACKEND must be 'local' or 's3', got {backend!r}")
        startup_warnings = _switch(env, "STARTUP_WARNINGS", True)
        limits = _nest_time_limits(
            _given_time_limits(env, overrides), logging.WARNING if startup_warnings else logging.DEBUG
        )
        settings = cls(
            instance_dir=instance_dir,
            database_url=_database_url(env.get("DATABASE_URL") or f"sqlite:///{instance_dir / 'service.db'}"),
            database_listen_url=env.get("DATABASE_LISTEN_URL", "").strip(),
            broker_url=env.get("CELERY_BROKER_URL") or "filesystem://",
            port=port,
            public_base_url=(env.get("PUBLIC_BASE_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            storage_backend=backend,
            storage_root=Path(env.get("STORAGE_ROOT") or instance_dir / "media").resolve(),
            webhook_secret=env.get("WEBHOOK_SECRET") or None,
            fetch_allowed_networks=_networks(env, "FETCH_ALLOWED_NETWORKS"),
            webhook_retry_schedule=_schedule(env, "WEBHOOK_RETRY_SCHEDULE"),
            webhook_timeout_s=_float(env, "WEBHOOK_TIMEOUT_S", 15.0, 0.1),
            sweep_interval_s=_int(env, "SWEEP_INTERVAL_S", 30, 1),
            stale_image_after_s=limits[_STALE],
            dispatch_interval_s=_float(env, "DISPATCH_INTERVAL_S", 1.0, 0.1),
            image_queue_depth=_int(env, "IMAGE_QUEUE_DEPTH", 64, 1),
            import_after_urls=_int(env, "IMPORT_AFTER_URLS", 2000, 0),
            status_max_lag_s=_float(env, "STATUS_MAX_LAG_S", 0.5, 0.0),
            storage_max_retries=_int(env, "STORAGE_MAX_RETRIES", 5, 0, 20),
            idempotency_key_ttl_s=_float(env, "IDEMPOTENCY_KEY_TTL_S", 24 * 3600.0, 1.0),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 10 * 1024 * 1024, 1024),
            zip_max_files=_int(env, "ZIP_MAX_FILES", 20_000, 1),
            zip_max_bytes=_int(env, "ZIP_MAX_BYTES", 4 * 1024**3, 1024),
            max_rows=_int(env, "MAX_ROWS", 10_000, 1),
            max_urls_per_product=_int(env, "MAX_URLS_PER_PRODUCT", 50, 1),
            max_url_length=_int(env, "MAX_URL_LENGTH", MAX_URL_LENGTH, 16),
            fetch_connect_timeout_s=_float(env, "FETCH_CONNECT_TIMEOUT_S", 5.0, 0.1),
            fetch_read_timeout_s=_float(env, "FETCH_READ_TIMEOUT_S", 15.0, 0.1),
            fetch_total_timeout_s=_float(env, "FETCH_TOTAL_TIMEOUT_S", 60.0, 0.1),
            fetch_max_bytes=_int(env, "FETCH_MAX_BYTES", 25 * 1024 * 1024, 1024),
            fetch_max_redirects=_int(env, "FETCH_MAX_REDIRECTS", 5, 0, 20),
            fetch_max_retries=_int(env, "FETCH_MAX_RETRIES", 3, 0, 10),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 50_000_000, 1),
            image_max_attempts=_int(env, "IMAGE_MAX_ATTEMPTS", 5, 1),
            task_soft_time_limit_s=limits[_SOFT],
            task_time_limit_s=limits[_HARD],
            broker_visibility_timeout_s=limits[_VISIBILITY],
            serve_samples=env.get("SERVE_SAMPLES", "").strip().lower() in {"1", "true", "yes", "on"},
            broker_key_prefix=env.get("BROKER_KEY_PREFIX", ""),
            broker_queue_type=_choice(env, "BROKER_QUEUE_TYPE", ("classic", "quorum")),
            broker_management_url=env.get("BROKER_MANAGEMENT_URL", "").strip().rstrip("/"),
            broker_consumer_timeout_s=_int(env, "BROKER_CONSUMER_TIMEOUT_S", 1800, 60),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 10),
            api_keys=tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
            rate_limit_uploads=env.get("RATE_LIMIT_UPLOADS") or "600/minute",
            rate_limit_reads=env.get("RATE_LIMIT_READS") or "60000/minute",
            rate_limit_storage_url=_rate_limit_storage(env),
            rate_limit_auth_failures=env.get("RATE_LIMIT_AUTH_FAILURES") or "20/minute",
            max_active_images_per_key=_int(env, "MAX_ACTIVE_IMAGES_PER_KEY", 500_000, 0),
            fetch_max_per_host=_int(env, "FETCH_MAX_PER_HOST", 32, 0),
            image_batch_size=_int(env, "IMAGE_BATCH_SIZE", 16, 1, 256),
            image_fetch_threads=_int(env, "IMAGE_FETCH_THREADS", 16, 1, 64),
            webhook_max_per_tenant=_int(env, "WEBHOOK_MAX_PER_TENANT", 4, 1),
            webhook_max_per_host=_int(env, "WEBHOOK_MAX_PER_HOST", 8, 1),
            webhook_resend_cooldown_s=_float(env, "WEBHOOK_RESEND_COOLDOWN_S", 10.0, 0.0),
            events_poll_interval_s=_float(env, "EVENTS_POLL_INTERVAL_S", 0.5, 0.1),
            events_heartbeat_s=_float(env, "EVENTS_HEARTBEAT_S", 15.0, 0.1),
            events_max_streams=_int(env, "EVENTS_MAX_STREAMS", DEFAULT_EVENTS_MAX_STREAMS, 0),
            events_max_streams_per_caller=_int(
                env, "EVENTS_MAX_STREAMS_PER_CALLER", DEFAULT_EVENTS_MAX_STREAMS_PER_CALLER, 0
            ),
            retention_days=_float(env, "RETENTION_DAYS", 30.0, 0.0),
            retention_interval_s=_float(env, "RETENTION_INTERVAL_S", 3600.0, 1.0),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            cors_origins=_origins(env, "CORS_ORIGINS"),
            log_format=log_format(env),
            log_level=log_level(env),
            startup_warnings=startup_warnings,
            image_decode_budget_bytes=image_decode_budget_mb(env) << 20,
            status_cache_bytes=_int(env, "STATUS_CACHE_BYTES", 32 << 20, 0),
            s3={
                key: env[key]
                for key in ("S3_BUCKET", "S3_ENDPOINT_URL", "S3_REGION", "S3_PUBLIC_BASE_URL")
                if env.get(key)
            },
        )
        if overrides:
            settings = dataclasses.replace(settings, **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that would duplicate or lose work.

        Raises:
            SettingsError: the time limits and the visibility timeout do not nest.
        """
        soft, hard = self.task_soft_time_limit_s, self.task_time_limit_s
        nesting = [
            (_SOFT, soft, _HARD, hard),
            # On Redis a task still running past the visibility timeout is handed to a second worker.
            (_HARD, hard, _VISIBILITY, self.broker_visibility_timeout_s),
            # The sweeper takes a PROCESSING image untouched this long as abandoned by a dead worker.
            (_HARD, hard, _STALE, self.stale_image_after_s),
        ]
        for lower, low, upper, high in nesting:
            if low >= high:
                raise SettingsError(f"{lower}={low} must be below {upper}={high}: lower {lower} or raise {upper}")
        if is_amqp(self.broker_url) and 2 * hard > self.broker_consumer_timeout_s:
            # RabbitMQ closes the channel of a worker holding an unacknowledged message past its consumer_timeout
            # (PRECONDITION_FAILED, celery #6760) and hands the message to another: every task ends well within it.
            raise SettingsError(
                f"{_HARD}={hard} must be at most half of BROKER_CONSUMER_TIMEOUT_S={self.broker_consumer_timeout_s} "
                "(RabbitMQ's consumer_timeout): lower the first, or raise both"
            )
        if not self.webhook_retry_schedule:
            raise SettingsError("WEBHOOK_RETRY_SCHEDULE must hold at least one delay")
        if self.storage_backend == "s3" and "S3_BUCKET" not in self.s3:
            raise SettingsError("STORAGE_BACKEND=s3 needs S3_BUCKET")
