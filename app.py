"""The application factory; Celery is bound here too, so tasks run inside the app context."""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_init
from flask import Flask
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

import database
import image_tasks  # noqa: F401  (registers the shared tasks)
import status_routes
import storage
import upload_routes
import webhooks_routes
from access import api_keys, rate_limits
from config import Settings, is_amqp, log_format, log_level
from delivery import signing
from errors import register_error_handlers
from fetching import host_slots
from models import db
from observability import log_context, metrics
from outputs import variants
from queueing import broker, redis_transport, task_names
from reading import page_cache, progress_hub, request_versions
from web import docs_routes, health, media_routes, metrics_routes, page_routes, progress_routes, request_routes

cors = CORS()
# Outputs are under /media: an <img> needs no CORS, but a page drawing one on a canvas or fetching it does.
CORS_OPTIONS: dict[str, Any] = {
    "resources": [r"/api/*", r"/media/*"],
    "methods": ["GET", "POST", "OPTIONS"],
    "allow_headers": [
        "Authorization",
        "X-API-Key",
        "Content-Type",
        "Idempotency-Key",
        "If-None-Match",
        "Last-Event-ID",
    ],
    "expose_headers": [
        "Location",
        "ETag",
        "Idempotent-Replayed",
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ],
    "supports_credentials": False,
    "max_age": 600,
}


def create_app(overrides: dict[str, Any] | None = None, *, migrations: bool = True) -> Flask:
    """Build the Flask app from the environment; ``overrides`` replace single settings (tests).

    ``migrations`` adds the ``flask db`` commands, which Celery's processes do without.
    """
    # Before the settings are read, since reading them logs the time limits derived.
    log_context.configure_logging(log_format(os.environ), level=log_level(os.environ))
    settings = Settings.from_env(**(overrides or {}))
    log_context.configure_logging(settings.log_format, level=settings.log_level)
    settings.instance_dir.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_upload_bytes,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=database.engine_options(settings.database_url),
    )
    app.json.sort_keys = False
    if settings.trusted_proxies:
        # Behind N proxies, the client's address is the one they put in X-Forwarded-For.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    db.init_app(app)
    with app.app_context():
        database.configure_engine(db.engine)
    database.read_only_for_safe_methods(app)
    if migrations:
        # Alembic (with Mako and Pygments) adds about 10 MB to every process that imports it.
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(database.MIGRATIONS_DIR), render_as_batch=True)
    app.extensions["storage"] = storage.from_settings(settings)
    app.extensions["rendered_pages"] = page_cache.RenderedPages(
        settings.status_cache_bytes, max_lag_s=settings.status_max_lag_s
    )
    app.extensions["request_versions"] = request_versions.RequestVersions(app, settings.status_max_lag_s)
    app.extensions["host_slots"] = host_slots.from_settings(settings)
    app.extensions["webhook_secret"] = signing.load_or_create_secret(settings)
    app.extensions["variant_secret"] = variants.variant_secret(app.extensions["webhook_secret"])
    log_context.init_app(app)
    if settings.cors_origins:
        cors.init_app(app, origins=list(settings.cors_origins), **CORS_OPTIONS)
    api_keys.init_app(app, settings)
    rate_limits.init_app(app, settings)
    progress_hub.init_app(app, settings)
    celery_init_app(app, settings)
    metrics.init_app(app)
    register_error_handlers(app)

    blueprints = (
        upload_routes,
        status_routes,
        health,
        progress_routes,
        request_routes,
        webhooks_routes,
        media_routes,
        page_routes,
        metrics_routes,
        docs_routes,
    )
    for module in blueprints:
        app.register_blueprint(module.bp)
    return app


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """Create the Celery app whose tasks each run inside ``app``'s context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    def relax_workers_commits(**_kwargs: object) -> None:
        with app.app_context():
            database.relax_commit_durability(db.engine)

    # In a worker's main process, before its pool forks; the API keeps durable commits.
    worker_init.connect(relax_workers_commits, weak=False)
    if is_amqp(settings.broker_url) and settings.broker_queue_type == "quorum":
        worker_init.connect(lambda sender, **_kwargs: broker.declare_queues(sender.app), weak=False)

    config = celery_settings(settings)
    # What beat runs is housekeeping: Celery's lines about it are DEBUG.
    log_context.init_celery(routine_tasks={entry["task"] for entry in config["beat_schedule"].values()})
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(config)
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Task settings that survive a worker's death; see the README's reliability section."""
    transport_options: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    if settings.broker_key_prefix:
        transport_options["global_keyprefix"] = settings.broker_key_prefix
    if settings.broker_url.startswith("filesystem://"):
        broker.publish_filesystem_messages_atomically()
        broker.bind_filesystem_queues_safely()
        folder = settings.instance_dir / "broker"
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    rabbitmq: dict[str, Any] = {}
    if is_amqp(settings.broker_url):
        # Publisher confirms: a message is sent once RabbitMQ has it. No visibility timeout: an unacknowledged
        # message goes back when its worker's connection does.
        transport_options = {"confirm_publish": True}
        rabbitmq = {
            "task_queues": broker.rabbitmq_queues(settings.broker_queue_type),
            "task_default_exchange_type": "topic",
            "task_default_queue_type": settings.broker_queue_type,
            # A task running when the connection drops cannot be acknowledged on the new one: RabbitMQ has
            # already given its message back. Cancelled, it runs again from the queue (each task is safe to run
            # twice); left running, its slot stayed taken and the worker took no more (seen on a broker restart).
            "worker_cancel_long_running_tasks_on_connection_loss": True,
            # A connection RabbitMQ dropped while a reply was in flight can look open to the worker: heartbeats
            # find it within two intervals, and the worker connects again.
            "broker_heartbeat": 10,
        }
    return {
        **rabbitmq,
        "broker_url": broker.with_host(settings.broker_url),
        "broker_transport": redis_transport.transport_for(settings.broker_url),
        "broker_transport_options": transport_options,
        "visibility_timeout": settings.broker_visibility_timeout_s,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 3,
        "task_ignore_result": True,
        "task_routes": broker.TASK_ROUTES,
        "task_default_queue": broker.MAINTENANCE_QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Billiard compares it with the process's peak RSS (ru_maxrss) after each task: a process
        # that passed it on a big image is replaced once that task ends; the peak is not prevented.
        "worker_max_memory_per_child": 200_000,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # An upload must answer at once even with the broker down; the sweeper re-sends later.
        "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        # A tick that could not run in its interval is dropped, not piled up behind the next one.
        "beat_schedule": {
            "dispatch": {
                "task": task_names.DISPATCH_TASK,
                "schedule": settings.dispatch_interval_s,
                "options": {"expires": settings.dispatch_interval_s},
            },
            "sweep": {
                "task": task_names.SWEEP_TASK,
                "schedule": float(settings.sweep_interval_s),
                "options": {"expires": float(settings.sweep_interval_s)},
            },
            "retention": {
                "task": task_names.RETENTION_TASK,
                "schedule": settings.retention_interval_s,
                "options": {"expires": settings.retention_interval_s},
            },
        },
        "beat_schedule_filename": str(settings.instance_dir / "celerybeat-schedule"),
        "worker_hijack_root_logger": False,
    }


@functools.cache
def _celery_for_cli() -> Celery:
    return create_app(migrations=False).extensions["celery"]


def __getattr__(name: str) -> Any:
    # ``celery -A app:celery_app worker`` builds the app only when the worker asks for it,
    # so importing this module (tests, gunicorn) has no side effects.
    if name == "celery_app":
        return _celery_for_cli()
    raise AttributeError(name)
