"""Every setting of the service, read once from the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from address_policy import parse_networks

DEFAULT_WEBHOOK_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


class SettingsError(ValueError):
    """A setting is present but malformed; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{name} must be {bounds}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < low:
        raise SettingsError(f"{name} must be at least {low}, got {value}")
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
    storage_max_retries: int
    max_upload_bytes: int
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
    trusted_proxies: int = 0
    api_keys: tuple[str, ...] = ()
    rate_limit_uploads: str = "30/minute"
    rate_limit_reads: str = "600/minute"
    rate_limit_storage_url: str = "memory://"
    #: Wrong API keys one client address may present before it is refused without a look at its key.
    rate_limit_auth_failures: str = "20/minute"
    #: Images in flight (PENDING or PROCESSING) one key may have; 0 is no limit. The default lets
    #: the largest upload the CSV limits allow (10,000 rows of 50 URLs) through, and no second one.
    max_active_images_per_key: int = 500_000
    #: Image fetches at once per source host, across all workers and machines; 0 is no limit.
    fetch_max_per_host: int = 8
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
        settings = cls(
            instance_dir=instance_dir,
            database_url=_database_url(env.get("DATABASE_URL") or f"sqlite:///{instance_dir / 'service.db'}"),
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
            stale_image_after_s=_int(env, "STALE_IMAGE_AFTER_S", 300, 1),
            dispatch_interval_s=_float(env, "DISPATCH_INTERVAL_S", 1.0, 0.1),
            image_queue_depth=_int(env, "IMAGE_QUEUE_DEPTH", 32, 1),
            storage_max_retries=_int(env, "STORAGE_MAX_RETRIES", 5, 0, 20),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 10 * 1024 * 1024, 1024),
            max_rows=_int(env, "MAX_ROWS", 10_000, 1),
            max_urls_per_product=_int(env, "MAX_URLS_PER_PRODUCT", 50, 1),
            max_url_length=_int(env, "MAX_URL_LENGTH", 2048, 16),
            fetch_connect_timeout_s=_float(env, "FETCH_CONNECT_TIMEOUT_S", 5.0, 0.1),
            fetch_read_timeout_s=_float(env, "FETCH_READ_TIMEOUT_S", 15.0, 0.1),
            fetch_total_timeout_s=_float(env, "FETCH_TOTAL_TIMEOUT_S", 60.0, 0.1),
            fetch_max_bytes=_int(env, "FETCH_MAX_BYTES", 25 * 1024 * 1024, 1024),
            fetch_max_redirects=_int(env, "FETCH_MAX_REDIRECTS", 5, 0, 20),
            fetch_max_retries=_int(env, "FETCH_MAX_RETRIES", 3, 0, 10),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 50_000_000, 1),
            image_max_attempts=_int(env, "IMAGE_MAX_ATTEMPTS", 5, 1),
            task_soft_time_limit_s=_int(env, "TASK_SOFT_TIME_LIMIT_S", 120, 1),
            task_time_limit_s=_int(env, "TASK_TIME_LIMIT_S", 150, 1),
            broker_visibility_timeout_s=_int(env, "BROKER_VISIBILITY_TIMEOUT_S", 900, 1),
            serve_samples=env.get("SERVE_SAMPLES", "").strip().lower() in {"1", "true", "yes", "on"},
            broker_key_prefix=env.get("BROKER_KEY_PREFIX", ""),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 10),
            api_keys=tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
            rate_limit_uploads=env.get("RATE_LIMIT_UPLOADS") or "30/minute",
            rate_limit_reads=env.get("RATE_LIMIT_READS") or "600/minute",
            rate_limit_storage_url=_rate_limit_storage(env),
            rate_limit_auth_failures=env.get("RATE_LIMIT_AUTH_FAILURES") or "20/minute",
            max_active_images_per_key=_int(env, "MAX_ACTIVE_IMAGES_PER_KEY", 500_000, 0),
            fetch_max_per_host=_int(env, "FETCH_MAX_PER_HOST", 8, 0),
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
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise SettingsError("TASK_SOFT_TIME_LIMIT_S must be below TASK_TIME_LIMIT_S")
        # On Redis a task still running past the visibility timeout is handed to a second worker.
        if self.task_time_limit_s >= self.broker_visibility_timeout_s:
            raise SettingsError("TASK_TIME_LIMIT_S must be below BROKER_VISIBILITY_TIMEOUT_S")
        # The sweeper takes a PROCESSING image untouched this long as abandoned by a dead worker.
        if self.task_time_limit_s >= self.stale_image_after_s:
            raise SettingsError("TASK_TIME_LIMIT_S must be below STALE_IMAGE_AFTER_S")
        if not self.webhook_retry_schedule:
            raise SettingsError("WEBHOOK_RETRY_SCHEDULE must hold at least one delay")
        if self.storage_backend == "s3" and "S3_BUCKET" not in self.s3:
            raise SettingsError("STORAGE_BACKEND=s3 needs S3_BUCKET")
