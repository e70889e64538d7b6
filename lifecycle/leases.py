"""Named leases in the database, for jobs that must never run twice at once (the sweep), and where a job that
goes through a long list a part per run stopped last."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from database import db_now
from models import Lease, db


def try_acquire(name: str, holder: str, ttl_s: float) -> bool:
    """Take the lease if it is free or has expired (database clock); True if this holder has it now."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Lease).values(name=name, holder=holder, expires_at=db_now(ttl_s))
    statement = statement.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"holder": holder, "expires_at": db_now(ttl_s)},
        where=Lease.expires_at < db_now(),
    ).returning(Lease.name)
    acquired = db.session.execute(statement).first() is not None
    db.session.commit()
    return acquired


def release(name: str, holder: str) -> None:
    """Give the lease back, if this holder still has it."""
    db.session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
    db.session.commit()


def position(name: str) -> str | None:
    """Where the last run of the lease's job stopped; None if it has not recorded one."""
    found = db.session.scalar(select(Lease.position).where(Lease.name == name))
    db.session.rollback()
    return found


def record_position(name: str, holder: str, at: str | None) -> None:
    """Record where this run stopped, for the next one, if this holder still has the lease (which it keeps)."""
    db.session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(position=at))
    db.session.commit()
