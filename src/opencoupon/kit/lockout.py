"""Limits on attempts (wrong PINs typed on pages, sign-ins), counted in the database so that every
API process (`serve --workers N`, several machines on one PostgreSQL) shares one count: N processes
no longer allow N times the attempts.

Counts are kept per key in fixed windows: a key's window starts at its first attempt and lasts
`window`; the attempts of a new window count from zero again. Within a window:

- a limit on attempts (`attempt`) counts every attempt and lets the first `limit` through;
- a limit on guesses (PINs) counts a guess before it is checked (`attempt`) and gives the count
  back when the guess was right (`refund`), so only wrong guesses use up the limit. Counting
  first makes the limit exact under concurrency: a hundred guesses sent at once get `limit`
  checks, not a hundred that all read "not blocked yet" (the count's row stays locked on
  PostgreSQL, and SQLite has one writer, until the guess's transaction ends);
- `count` reads where a key stands, `add` counts without deciding.

So at most `limit` attempts pass per window, and at most 2 x `limit` in any `window`-long stretch
(the end of one window and the start of the next). Checking costs one read by primary key;
counting one INSERT … ON CONFLICT DO UPDATE … RETURNING, atomic on SQLite and PostgreSQL alike, so
concurrent attempts never lose a count. Keys are stored as "<purpose>:<keyed digest>": client
addresses and emails never in clear. Rows whose window is over are deleted by the worker's
housekeeping (opencoupon.worker.housekeeping), which keeps the table bounded.

The calls run in the caller's session, so its transaction commits the count; callers run them in
the thread pool like their other database work (on SQLite a count takes the write lock)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session

from opencoupon.db.session import upsert_insert
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import Keyring
from opencoupon.models import AttemptCounter

_counters = AttemptCounter.__table__
# Sign-in attempts per client address are allowed at this many times the rate per email: one
# address trying a password on many emails is held back, an office behind one NAT is not.
ADDRESS_FACTOR = 6
# Guesses at one PIN from all addresses together are allowed at this many times the limit per
# address (GuessLimit).
BACKSTOP_FACTOR = 10


@dataclass(frozen=True)
class Lockout:
    """Attempts under keys of one `purpose` (a short name, unique per limit): `limit` per
    `window` and key. The key parts (campaign id, client address, email) are joined and digested."""

    purpose: str
    limit: int = 10
    window: dt.timedelta = dt.timedelta(minutes=15)

    def key(self, keyring: Keyring, *parts: object) -> str:
        joined = "\x1f".join(str(part) for part in (self.purpose, *parts))
        return f"{self.purpose}:{keyring.digest(joined)}"

    def count(
        self, session: Session, keyring: Keyring, *parts: object, now: dt.datetime | None = None
    ) -> int:
        """Attempts counted under the key in its current window (0 once the window is over)."""
        found = session.execute(
            select(AttemptCounter.count, AttemptCounter.expires_at).where(
                AttemptCounter.key == self.key(keyring, *parts)
            )
        ).first()
        if found is None:
            return 0
        count, expires_at = found
        return int(count) if expires_at > (now or utcnow()) else 0

    def seconds_left(
        self, session: Session, keyring: Keyring, *parts: object, now: dt.datetime | None = None
    ) -> float:
        """Seconds until the key's current window ends (0 when none is running): what a refused
        client is told to wait (Retry-After)."""
        expires_at = session.execute(
            select(AttemptCounter.expires_at).where(AttemptCounter.key == self.key(keyring, *parts))
        ).scalar_one_or_none()
        if expires_at is None:
            return 0.0
        return max(0.0, (expires_at - (now or utcnow())).total_seconds())

    def add(self, session: Session, keyring: Keyring, *parts: object, now: dt.datetime | None = None) -> int:
        """Count one attempt under the key; the count in the window, this one included."""
        now = now or utcnow()
        insert = upsert_insert(session, _counters).values(
            key=self.key(keyring, *parts), count=1, expires_at=now + self.window
        )
        over = _counters.c.expires_at <= now
        statement = insert.on_conflict_do_update(
            index_elements=[_counters.c.key],
            # Both right-hand sides read the row as it was: a window that is over starts again.
            set_={
                "count": case((over, 1), else_=_counters.c.count + 1),
                "expires_at": case((over, insert.excluded.expires_at), else_=_counters.c.expires_at),
            },
        ).returning(_counters.c.count)
        return int(session.execute(statement).scalar_one())

    def attempt(
        self, session: Session, keyring: Keyring, *parts: object, now: dt.datetime | None = None
    ) -> bool:
        """Count one attempt under the key; whether it is within the limit (every attempt counts,
        refused ones too)."""
        return self.add(session, keyring, *parts, now=now) <= self.limit

    def refund(self, session: Session, keyring: Keyring, *parts: object) -> None:
        """Give back one counted attempt under the key (a right guess must not use up the limit)."""
        session.execute(
            update(AttemptCounter)
            .where(AttemptCounter.key == self.key(keyring, *parts), AttemptCounter.count > 0)
            .values(count=AttemptCounter.count - 1)
        )

    def reset(self, session: Session) -> None:
        """Forget every count of this purpose (tests start from a clean slate)."""
        session.execute(
            delete(AttemptCounter).where(AttemptCounter.key.startswith(f"{self.purpose}:", autoescape=True))
        )


def forget_all(session: Session) -> None:
    """Forget every count of every purpose (tests start from a clean slate)."""
    session.execute(delete(AttemptCounter))


@dataclass(frozen=True)
class GuessLimit:
    """Guesses at one short secret (a campaign's or a card's PIN), counted before they are checked:
    `per_client` per secret and client address, then `per_secret` for the secret from all
    addresses together, a backstop against guesses spread over many addresses. A guess the
    client's own limit refuses is not counted for the secret, so one address cannot use up
    everyone's backstop (which would lock the staff out)."""

    per_client: Lockout
    per_secret: Lockout

    def attempt(self, session: Session, keyring: Keyring, secret: object, client: str) -> bool:
        """Count one guess; whether it may be checked."""
        if not self.per_client.attempt(session, keyring, secret, client):
            return False
        return self.per_secret.attempt(session, keyring, secret)

    def refund(self, session: Session, keyring: Keyring, secret: object, client: str) -> None:
        """The guess was right: give both counts back."""
        self.per_client.refund(session, keyring, secret, client)
        self.per_secret.refund(session, keyring, secret)
