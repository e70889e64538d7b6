"""Unit tests for config.Settings: defaults, environment overrides and refused values."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from config import DEFAULT_WEBHOOK_SCHEDULE, NESTED_DEFAULTS, Settings, SettingsError


def from_env(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"INSTANCE_DIR": str(tmp_path), **env})


def time_limits(settings: Settings) -> tuple[int, int, int, int]:
    """Soft and hard limits, visibility timeout, stale threshold."""
    return (
        settings.task_soft_time_limit_s,
        settings.task_time_limit_s,
        settings.broker_visibility_timeout_s,
        settings.stale_image_after_s,
    )


def assert_nested(settings: Settings) -> None:
    soft, hard, visibility, stale = time_limits(settings)
    assert 1 <= soft < hard < visibility
    assert hard < stale


# --- defaults -------------------------------------------------------------------------------------


def test_defaults_work_on_one_machine(tmp_path) -> None:
    settings = from_env(tmp_path)
    instance = tmp_path.resolve()
    assert settings.instance_dir == instance
    assert settings.database_url == f"sqlite:///{instance / 'service.db'}"
    assert settings.broker_url == "filesystem://"
    assert settings.port == 5000
    assert settings.public_base_url == "http://127.0.0.1:5000"
    assert settings.storage_backend == "local"
    assert settings.storage_root == instance / "media"
    assert settings.webhook_secret is None
    assert settings.fetch_allowed_networks == ()


def test_default_sqlite_url_is_absolute(tmp_path) -> None:
    url = from_env(tmp_path).database_url
    assert url.startswith("sqlite:////")


def test_default_webhook_schedule(tmp_path) -> None:
    settings = from_env(tmp_path)
    assert settings.webhook_retry_schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert DEFAULT_WEBHOOK_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_default_limits(tmp_path) -> None:
    settings = from_env(tmp_path)
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_rows == 10_000
    assert settings.max_urls_per_product == 50
    assert settings.max_url_length == 2_048


def test_one_caller_may_hold_an_eighth_of_the_progress_streams(tmp_path) -> None:
    settings = from_env(tmp_path)
    assert (settings.events_max_streams, settings.events_max_streams_per_caller) == (64, 8)
    assert from_env(tmp_path, EVENTS_MAX_STREAMS_PER_CALLER="0").events_max_streams_per_caller == 0


def test_memory_budgets_default_and_read_from_the_environment(tmp_path) -> None:
    defaults = from_env(tmp_path)
    assert (defaults.image_decode_budget_bytes, defaults.status_cache_bytes) == (384 << 20, 32 << 20)
    given = from_env(tmp_path, IMAGE_DECODE_BUDGET_MB="1024", STATUS_CACHE_BYTES="0")
    assert (given.image_decode_budget_bytes, given.status_cache_bytes) == (1 << 30, 0)


def test_default_sweep_and_stale_intervals(tmp_path) -> None:
    settings = from_env(tmp_path)
    assert settings.sweep_interval_s == 30
    assert settings.stale_image_after_s == 300


def test_default_time_limits_nest(tmp_path) -> None:
    settings = from_env(tmp_path)
    assert settings.task_soft_time_limit_s < settings.task_time_limit_s < settings.broker_visibility_timeout_s


def test_public_base_url_default_follows_port(tmp_path) -> None:
    assert from_env(tmp_path, PORT="8080").public_base_url == "http://127.0.0.1:8080"


def test_empty_values_count_as_unset(tmp_path) -> None:
    settings = from_env(
        tmp_path,
        DATABASE_URL="",
        CELERY_BROKER_URL="",
        PORT="",
        PUBLIC_BASE_URL="",
        STORAGE_BACKEND="",
        WEBHOOK_SECRET="",
        WEBHOOK_RETRY_SCHEDULE="",
        MAX_ROWS=" ",
    )
    assert settings == from_env(tmp_path)


def test_from_env_reads_only_the_mapping_it_is_given(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ignored/db")
    settings = from_env(tmp_path)
    assert settings.port == 5000
    assert settings.database_url.startswith("sqlite:///")


def test_from_env_defaults_to_os_environ(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "1234")
    assert Settings.from_env().port == 1234


# --- the environment wins -------------------------------------------------------------------------


def test_environment_wins(tmp_path) -> None:
    settings = from_env(
        tmp_path,
        DATABASE_URL="sqlite:////var/lib/imgsvc/other.db",
        CELERY_BROKER_URL="redis://broker:6379/0",
        PORT="8000",
        PUBLIC_BASE_URL="https://images.example.com/",
        STORAGE_ROOT=str(tmp_path / "elsewhere"),
        WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        FETCH_ALLOWED_NETWORKS="127.0.0.0/8, ::1/128",
        WEBHOOK_RETRY_SCHEDULE="0,10,60",
        SWEEP_INTERVAL_S="5",
        STALE_IMAGE_AFTER_S="600",
        MAX_UPLOAD_BYTES="2048",
        MAX_ROWS="10",
        MAX_URLS_PER_PRODUCT="3",
        MAX_URL_LENGTH="100",
    )
    assert settings.database_url == "sqlite:////var/lib/imgsvc/other.db"
    assert settings.broker_url == "redis://broker:6379/0"
    assert settings.port == 8000
    assert settings.public_base_url == "https://images.example.com"  # trailing slash dropped
    assert settings.storage_root == (tmp_path / "elsewhere").resolve()
    assert settings.webhook_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert settings.fetch_allowed_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.webhook_retry_schedule == (0, 10, 60)
    assert settings.sweep_interval_s == 5
    assert settings.stale_image_after_s == 600
    assert settings.max_upload_bytes == 2048
    assert settings.max_rows == 10
    assert settings.max_urls_per_product == 3
    assert settings.max_url_length == 100


def test_public_base_url_from_environment_ignores_port(tmp_path) -> None:
    settings = from_env(tmp_path, PORT="8000", PUBLIC_BASE_URL="http://proxy.example:80")
    assert settings.public_base_url == "http://proxy.example:80"


def test_instance_dir_moves_the_default_database_and_media(tmp_path) -> None:
    settings = from_env(tmp_path / "inst")
    assert settings.database_url.endswith(str(tmp_path.resolve() / "inst" / "service.db"))
    assert settings.storage_root == tmp_path.resolve() / "inst" / "media"


def test_webhook_schedule_tolerates_spaces(tmp_path) -> None:
    assert from_env(tmp_path, WEBHOOK_RETRY_SCHEDULE=" 0, 5 ,60 ").webhook_retry_schedule == (0, 5, 60)


def test_s3_backend_with_bucket(tmp_path) -> None:
    settings = from_env(tmp_path, STORAGE_BACKEND="s3", S3_BUCKET="images", S3_REGION="eu-west-1")
    assert settings.storage_backend == "s3"
    assert settings.s3 == {"S3_BUCKET": "images", "S3_REGION": "eu-west-1"}


def test_keyword_overrides_win_over_the_environment(tmp_path) -> None:
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "PORT": "8000"}, port=9000)
    assert settings.port == 9000


# --- DATABASE_URL rewriting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://user:pw@db:5432/imgsvc", "postgresql+psycopg2://user:pw@db:5432/imgsvc"),
        ("postgres://user:pw@db/imgsvc", "postgresql+psycopg2://user:pw@db/imgsvc"),
        ("postgresql+psycopg2://user@db/imgsvc", "postgresql+psycopg2://user@db/imgsvc"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_is_rewritten_for_psycopg2(tmp_path, given: str, expected: str) -> None:
    assert from_env(tmp_path, DATABASE_URL=given).database_url == expected


# --- malformed values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "80.5"),
        ("SWEEP_INTERVAL_S", "-1"),
        ("SWEEP_INTERVAL_S", "0"),
        ("STALE_IMAGE_AFTER_S", "soon"),
        ("MAX_ROWS", "0"),
        ("MAX_UPLOAD_BYTES", "10MiB"),
        ("MAX_URLS_PER_PRODUCT", "-5"),
        ("MAX_URL_LENGTH", "x"),
        ("WEBHOOK_TIMEOUT_S", "fast"),
        ("WEBHOOK_TIMEOUT_S", "0"),
        ("WEBHOOK_RETRY_SCHEDULE", "1,x"),
        ("WEBHOOK_RETRY_SCHEDULE", "1,,5"),
        ("WEBHOOK_RETRY_SCHEDULE", "0,-5"),
        ("WEBHOOK_RETRY_SCHEDULE", "1.5"),
        ("FETCH_ALLOWED_NETWORKS", "not-a-cidr"),
        ("FETCH_ALLOWED_NETWORKS", "127.0.0.0/8,10.0.0.1/8"),
        ("STORAGE_BACKEND", "ftp"),
        ("STORAGE_BACKEND", "gcs"),
        ("EVENTS_MAX_STREAMS_PER_CALLER", "some"),
        ("EVENTS_MAX_STREAMS_PER_CALLER", "-1"),
        ("IMAGE_DECODE_BUDGET_MB", "lots"),
        ("IMAGE_DECODE_BUDGET_MB", "8"),
        ("STATUS_CACHE_BYTES", "32MiB"),
        ("STATUS_CACHE_BYTES", "-1"),
    ],
)
def test_malformed_value_raises_settings_error_naming_it(tmp_path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env(tmp_path, **{name: value})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- combinations that are refused ---------------------------------------------------------------


@pytest.mark.parametrize("hard", ["900", "901", "3600"])
def test_task_time_limit_must_stay_below_the_visibility_timeout(tmp_path, hard: str) -> None:
    with pytest.raises(SettingsError, match=r"TASK_TIME_LIMIT_S.*BROKER_VISIBILITY_TIMEOUT_S"):
        from_env(tmp_path, TASK_TIME_LIMIT_S=hard, BROKER_VISIBILITY_TIMEOUT_S="900")


def test_a_visibility_timeout_set_below_a_hard_limit_set_is_refused(tmp_path) -> None:
    with pytest.raises(SettingsError, match="BROKER_VISIBILITY_TIMEOUT_S=150"):
        from_env(tmp_path, TASK_TIME_LIMIT_S="150", BROKER_VISIBILITY_TIMEOUT_S="150")


def test_time_limits_just_nesting_are_accepted(tmp_path) -> None:
    settings = from_env(
        tmp_path,
        TASK_SOFT_TIME_LIMIT_S="899",
        TASK_TIME_LIMIT_S="900",
        BROKER_VISIBILITY_TIMEOUT_S="901",
        STALE_IMAGE_AFTER_S="901",
    )
    assert (settings.task_soft_time_limit_s, settings.task_time_limit_s) == (899, 900)
    assert settings.broker_visibility_timeout_s == 901


@pytest.mark.parametrize(("soft", "hard"), [("300", "300"), ("301", "300"), ("600", "120")])
def test_soft_time_limit_must_stay_below_the_hard_one(tmp_path, soft: str, hard: str) -> None:
    with pytest.raises(SettingsError, match="TASK_SOFT_TIME_LIMIT_S"):
        from_env(tmp_path, TASK_SOFT_TIME_LIMIT_S=soft, TASK_TIME_LIMIT_S=hard)


@pytest.mark.parametrize("stale", ["150", "100"])
def test_task_time_limit_must_stay_below_the_stale_image_threshold(tmp_path, stale: str) -> None:
    with pytest.raises(SettingsError, match=r"TASK_TIME_LIMIT_S.*STALE_IMAGE_AFTER_S"):
        from_env(tmp_path, TASK_TIME_LIMIT_S="150", STALE_IMAGE_AFTER_S=stale)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TASK_TIME_LIMIT_S": "400", "STALE_IMAGE_AFTER_S": "300"},
            "TASK_TIME_LIMIT_S=400 must be below STALE_IMAGE_AFTER_S=300:"
            " lower TASK_TIME_LIMIT_S or raise STALE_IMAGE_AFTER_S",
        ),
        (
            {"TASK_TIME_LIMIT_S": "900", "BROKER_VISIBILITY_TIMEOUT_S": "600"},
            "TASK_TIME_LIMIT_S=900 must be below BROKER_VISIBILITY_TIMEOUT_S=600:"
            " lower TASK_TIME_LIMIT_S or raise BROKER_VISIBILITY_TIMEOUT_S",
        ),
        (
            {"TASK_SOFT_TIME_LIMIT_S": "60", "TASK_TIME_LIMIT_S": "60"},
            "TASK_SOFT_TIME_LIMIT_S=60 must be below TASK_TIME_LIMIT_S=60:"
            " lower TASK_SOFT_TIME_LIMIT_S or raise TASK_TIME_LIMIT_S",
        ),
        (
            {"TASK_SOFT_TIME_LIMIT_S": "100", "STALE_IMAGE_AFTER_S": "101"},
            "TASK_SOFT_TIME_LIMIT_S=100 and STALE_IMAGE_AFTER_S=101 leave no room for TASK_TIME_LIMIT_S between"
            " them: lower TASK_SOFT_TIME_LIMIT_S or raise STALE_IMAGE_AFTER_S",
        ),
        (
            {"TASK_SOFT_TIME_LIMIT_S": "500", "BROKER_VISIBILITY_TIMEOUT_S": "400", "STALE_IMAGE_AFTER_S": "450"},
            "TASK_SOFT_TIME_LIMIT_S=500 and BROKER_VISIBILITY_TIMEOUT_S=400 leave no room for TASK_TIME_LIMIT_S"
            " between them: lower TASK_SOFT_TIME_LIMIT_S or raise BROKER_VISIBILITY_TIMEOUT_S",
        ),
    ],
)
def test_time_limits_set_that_contradict_each_other_are_refused(tmp_path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        from_env(tmp_path, **env)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "STALE_IMAGE_AFTER_S",
            "2",
            "STALE_IMAGE_AFTER_S=2 leaves no room below it for TASK_TIME_LIMIT_S and TASK_SOFT_TIME_LIMIT_S"
            " (at least 1 s each): raise STALE_IMAGE_AFTER_S to at least 3",
        ),
        (
            "BROKER_VISIBILITY_TIMEOUT_S",
            "1",
            "BROKER_VISIBILITY_TIMEOUT_S=1 leaves no room below it for TASK_TIME_LIMIT_S and TASK_SOFT_TIME_LIMIT_S"
            " (at least 1 s each): raise BROKER_VISIBILITY_TIMEOUT_S to at least 3",
        ),
        (
            "TASK_TIME_LIMIT_S",
            "1",
            "TASK_TIME_LIMIT_S=1 leaves no room below it for TASK_SOFT_TIME_LIMIT_S (at least 1 s):"
            " raise TASK_TIME_LIMIT_S to at least 2",
        ),
    ],
)
def test_a_time_limit_too_low_to_fit_the_others_below_it_is_refused(
    tmp_path, name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        from_env(tmp_path, **{name: value})
    assert str(refused.value) == message


def test_s3_without_bucket_is_refused(tmp_path) -> None:
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        from_env(tmp_path, STORAGE_BACKEND="s3", S3_REGION="eu-west-1")


def test_s3_with_an_empty_bucket_is_refused(tmp_path) -> None:
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        from_env(tmp_path, STORAGE_BACKEND="s3", S3_BUCKET="")


def test_overrides_are_checked_too(tmp_path) -> None:
    with pytest.raises(SettingsError, match="TASK_SOFT_TIME_LIMIT_S=300 must be below TASK_TIME_LIMIT_S=200"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)}, task_soft_time_limit_s=300, task_time_limit_s=200)


def test_overrides_count_as_set_by_the_user(tmp_path) -> None:
    derived = Settings.from_env({"INSTANCE_DIR": str(tmp_path)}, stale_image_after_s=20)
    assert time_limits(derived) == (8, 10, 900, 20)
    with pytest.raises(SettingsError, match="TASK_TIME_LIMIT_S=30 must be below STALE_IMAGE_AFTER_S=20"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path), "STALE_IMAGE_AFTER_S": "20"}, task_time_limit_s=30)


# --- time limits the user did not set are derived from those they did ----------------------------


def test_default_time_limits_when_none_is_set(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="config"):
        settings = from_env(tmp_path)
    assert time_limits(settings) == (120, 150, 900, 300)
    assert NESTED_DEFAULTS == {
        "TASK_SOFT_TIME_LIMIT_S": 120,
        "TASK_TIME_LIMIT_S": 150,
        "BROKER_VISIBILITY_TIMEOUT_S": 900,
        "STALE_IMAGE_AFTER_S": 300,
    }
    assert [record for record in caplog.records if record.name == "config"] == []


@pytest.mark.parametrize(
    ("name", "value", "expected", "derived_from"),
    [
        # (soft, hard, visibility, stale); each derived setting with the setting it was derived from
        (
            "STALE_IMAGE_AFTER_S",
            "20",
            (8, 10, 900, 20),
            {"TASK_TIME_LIMIT_S": "STALE_IMAGE_AFTER_S=20", "TASK_SOFT_TIME_LIMIT_S": "TASK_TIME_LIMIT_S=10"},
        ),
        (
            "STALE_IMAGE_AFTER_S",
            "3",
            (1, 2, 900, 3),
            {"TASK_TIME_LIMIT_S": "STALE_IMAGE_AFTER_S=3", "TASK_SOFT_TIME_LIMIT_S": "TASK_TIME_LIMIT_S=2"},
        ),
        (
            "BROKER_VISIBILITY_TIMEOUT_S",
            "100",
            (12, 16, 100, 300),
            {"TASK_TIME_LIMIT_S": "BROKER_VISIBILITY_TIMEOUT_S=100", "TASK_SOFT_TIME_LIMIT_S": "TASK_TIME_LIMIT_S=16"},
        ),
        (
            "TASK_TIME_LIMIT_S",
            "1000",
            (120, 1000, 6000, 2000),
            {"BROKER_VISIBILITY_TIMEOUT_S": "TASK_TIME_LIMIT_S=1000", "STALE_IMAGE_AFTER_S": "TASK_TIME_LIMIT_S=1000"},
        ),
        ("TASK_TIME_LIMIT_S", "100", (80, 100, 900, 300), {"TASK_SOFT_TIME_LIMIT_S": "TASK_TIME_LIMIT_S=100"}),
        (
            "TASK_SOFT_TIME_LIMIT_S",
            "300",
            (300, 375, 900, 750),
            {"TASK_TIME_LIMIT_S": "TASK_SOFT_TIME_LIMIT_S=300", "STALE_IMAGE_AFTER_S": "TASK_TIME_LIMIT_S=375"},
        ),
    ],
)
def test_a_lone_time_limit_derives_the_others_and_says_so(
    tmp_path, caplog, name: str, value: str, expected: tuple[int, ...], derived_from: dict[str, str]
) -> None:
    with caplog.at_level(logging.INFO, logger="config"):
        settings = from_env(tmp_path, **{name: value})
    assert time_limits(settings) == expected
    records = [record for record in caplog.records if record.name == "config"]
    notes = {record.getMessage().split()[0]: record.getMessage() for record in records}
    assert notes.keys() == derived_from.keys()
    for derived, source in derived_from.items():
        assert f"derived {getattr(settings, derived.lower())} from {source}" in notes[derived]
    assert all(record.levelno == logging.WARNING for record in records)


@pytest.mark.parametrize("name", sorted(NESTED_DEFAULTS))
@pytest.mark.parametrize("value", [3, 4, 10, 119, 120, 121, 149, 150, 151, 299, 300, 301, 899, 900, 901, 86_400])
def test_any_lone_time_limit_is_kept_and_the_others_nest_around_it(tmp_path, name: str, value: int) -> None:
    settings = from_env(tmp_path, **{name: str(value)})
    assert getattr(settings, name.lower()) == value
    assert_nested(settings)


def test_time_limits_set_together_are_kept_and_the_rest_fit_between(tmp_path) -> None:
    settings = from_env(tmp_path, TASK_SOFT_TIME_LIMIT_S="200", BROKER_VISIBILITY_TIMEOUT_S="240")
    assert time_limits(settings) == (200, 239, 240, 300)


def test_rate_limit_counters_share_the_brokers_redis_by_default(tmp_path) -> None:
    assert from_env(tmp_path).rate_limit_storage_url == "memory://"
    on_redis = from_env(tmp_path, CELERY_BROKER_URL="redis://broker:6379/0")
    assert on_redis.rate_limit_storage_url == "redis://broker:6379/0"
    explicit = from_env(tmp_path, CELERY_BROKER_URL="redis://broker:6379/0", RATE_LIMIT_STORAGE_URL="redis://rl:6379/3")
    assert explicit.rate_limit_storage_url == "redis://rl:6379/3"
