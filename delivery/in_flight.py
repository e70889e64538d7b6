"""Webhook attempts in flight per tenant and per receiving host, and the bounds on them.

A tenant's slow receiver must cost that tenant's deliveries time, not everyone's: an attempt is handed
out only while its tenant (the request's key hash; the open service is one tenant) has fewer than
``WEBHOOK_MAX_PER_TENANT`` attempts in flight and its receiving host fewer than ``WEBHOOK_MAX_PER_HOST``.
An event over a bound stays due, and the tick hands it out once an attempt of its tenant or host ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import ColumnElement, and_, or_, select, text, true

from database import db_now
from models import DeliveryStatus, Request, WebhookEvent, db
from network_policy.urls import url_host

# Any constant will do: it only has to be the same in every process.
_CLAIMS_LOCK_ID = 0x3B0C7


def receiving_host(url: str) -> str:
    """The host a webhook URL is sent to, in lower case, as the bound per host counts it."""
    try:
        return url_host(url)[:255]
    except ValueError:
        return ""


@dataclass
class Occupancy:
    """Attempts each tenant and each host has in flight, against the bounds."""

    per_tenant: int
    per_host: int
    tenants: Counter[str | None] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)

    def has_room(self, owner: str | None, host: str) -> bool:
        """True if one more attempt for this tenant and host stays within both bounds."""
        return self.tenants[owner] < self.per_tenant and self.hosts[host] < self.per_host

    def take(self, owner: str | None, host: str) -> bool:
        """Count one more attempt for this tenant and host if there is room; True if counted."""
        if not self.has_room(owner, host):
            return False
        self.tenants[owner] += 1
        self.hosts[host] += 1
        return True

    def with_room(self, owner: ColumnElement, host: ColumnElement) -> list[ColumnElement[bool]]:
        """Conditions that leave out the events of the tenants and hosts already at their bound."""
        full_tenants = [tenant for tenant, count in self.tenants.items() if count >= self.per_tenant]
        named = [tenant for tenant in full_tenants if tenant is not None]
        # NOT IN is never true of NULL, the open service's owner: it is told apart on its own.
        if None in full_tenants:
            tenant_room = and_(owner.is_not(None), owner.not_in(named) if named else true())
        else:
            tenant_room = or_(owner.is_(None), owner.not_in(named)) if named else true()
        full_hosts = [host_ for host_, count in self.hosts.items() if count >= self.per_host]
        return [tenant_room, host.not_in(full_hosts) if full_hosts else true()]


def occupancy(*, queued_within_s: float | None = None, excluding: str | None = None) -> Occupancy:
    """What is in flight now, per tenant and host, leaving out the event ``excluding``.

    With ``queued_within_s``, an event handed to the broker that recently and not yet claimed counts
    too: its attempt is about to start.
    """
    settings = current_app.config["SETTINGS"]
    busy = WebhookEvent.in_flight_until > db_now()
    if queued_within_s is not None:
        busy = busy | (WebhookEvent.queued_at >= db_now(-queued_within_s))
    query = (
        select(Request.owner_key_hash, WebhookEvent.host)
        .join(Request, Request.id == WebhookEvent.request_id)
        .where(WebhookEvent.status == DeliveryStatus.PENDING, busy)
    )
    if excluding is not None:
        query = query.where(WebhookEvent.id != excluding)
    found = Occupancy(settings.webhook_max_per_tenant, settings.webhook_max_per_host)
    for owner, host in db.session.execute(query):
        found.tenants[owner] += 1
        found.hosts[host] += 1
    return found


def serialize_claims() -> None:
    """Make this transaction the only one claiming attempts until it ends, so two never share the last room.

    An advisory lock on PostgreSQL; on SQLite the write lock every writing transaction begins with.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CLAIMS_LOCK_ID})
