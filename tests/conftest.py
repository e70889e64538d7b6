"""The fixtures every tier shares, from tests/support (pytest reads ``pytest_plugins`` only here, at the top).

With TEST_DATABASE_URL and TEST_BROKER_URL set, the service runs on PostgreSQL and Redis, in a
database and under a Redis key prefix of this run's own, both removed at the end; otherwise on
SQLite and the filesystem broker in a temporary folder.
"""

# Each after the ones it imports, so that pytest rewrites the asserts of every one.
pytest_plugins = [
    "support.backing",
    "support.loopback",
    "support.receivers",
    "support.services",
    "support.slots",
    "support.browser",
]
