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
(the end of one window and the start of the next). A backstop on a short secret guessed from many
addresses (a campaign's staff PIN) uses `EscalatingLockout`: a day's count, and lockouts that
double each time the limit is reached again. Checking costs one read by primary key;
counting one INSERT … ON CONFLICT DO UPDATE … RETURNING, atomic on SQLite and PostgreSQL alike, so
concurrent attempts never lose a count. Keys are stored as "<purpose>:<keyed digest>": client
addresses and emails never in clear. Rows whose window is over are deleted by the worker's
housekeeping (opencoupon.worker.housekeeping), which keeps the table bounded.

The calls run in the caller's session, so its transaction commits the count; callers run them in
the thread pool like their other database work (on SQLite a count takes the write lock)."""

from __future__ import annotations

import datetime as dt
import math
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


@dataclass(frozen=True)
class EscalatingLockout(Lockout):
    """A backstop whose lockouts grow, for a short secret guessed from many addresses.

    Wrong guesses count over `window` (a day: a search that stays just under the limit gains no
    fresh allowance every few minutes). The guess that finds `limit` of them counted locks the key
    for `first_lockout`, the next time the limit is reached for twice as long, and so on up to
    `longest_lockout`; each `quiet` period after a lockout without the limit reached again takes
    one doubling back (waiting out one quiet day does not restore the short lockouts). After a
    lockout the count starts from zero. The doublings are kept in a second row of the key's
    purpose: `count` the doublings, `expires_at` when the last of them is forgotten."""

    window: dt.timedelta = dt.timedelta(days=1)
    first_lockout: dt.timedelta = dt.timedelta(minutes=15)
    longest_lockout: dt.timedelta = dt.timedelta(days=1)
    quiet: dt.timedelta = dt.timedelta(days=1)

    def attempt(
        self, session: Session, keyring: Keyring, *parts: object, now: dt.datetime | None = None
    ) -> bool:
        now = now or utcnow()
        counted = self.add(session, keyring, *parts, now=now)
        if counted == self.limit + 1:
            # Exactly one guess reads this number: the count's row stays locked until its
            # transaction ends, and refused guesses are never given back.
            self._lock(session, keyring, parts, now)
        return counted <= self.limit

    def _doublings(self) -> int:
        """Doublings after which the lockout is the longest."""
        lockout, doublings = self.first_lockout, 0
        while lockout < self.longest_lockout:
            lockout, doublings = lockout * 2, doublings + 1
        return doublings

    def _lock(self, session: Session, keyring: Keyring, parts: tuple[object, ...], now: dt.datetime) -> None:
        escalation = self.key(keyring, *parts, "escalation")
        kept = session.execute(
            select(AttemptCounter.count, AttemptCounter.expires_at).where(AttemptCounter.key == escalation)
        ).first()
        doublings = 0
        if kept is not None and kept[1] > now:
            # One doubling forgotten per quiet period since the last lockout ended.
            doublings = min(int(kept[0]), math.ceil((kept[1] - now) / self.quiet))
        until = now + min(self.first_lockout * 2**doublings, self.longest_lockout)
        doublings = min(doublings + 1, self._doublings())
        insert = upsert_insert(session, _counters).values(
            key=escalation, count=doublings, expires_at=until + self.quiet * doublings
        )
        session.execute(
            insert.on_conflict_do_update(
                index_elements=[_counters.c.key],
                set_={"count": insert.excluded.count, "expires_at": insert.excluded.expires_at},
            )
        )
        # The key is refused until then (its count is past the limit); the next guess after it
        # starts a new count.
        session.execute(
            update(AttemptCounter)
            .where(AttemptCounter.key == self.key(keyring, *parts))
            .values(expires_at=until)
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

    def attempt(
        self, session: Session, keyring: Keyring, secret: object, client: str, *, proven: bool = False
    ) -> bool:
        """Count one guess; whether it may be checked. `proven`: the client showed it knew the
        secret lately (e.g. a signed cookie given for a right guess): only its own limit applies,
        and its guesses are not counted for the secret, so a search from other addresses that
        fills the backstop does not lock it out."""
        if not self.per_client.attempt(session, keyring, secret, client):
            return False
        return proven or self.per_secret.attempt(session, keyring, secret)

    def refund(
        self, session: Session, keyring: Keyring, secret: object, client: str, *, proven: bool = False
    ) -> None:
        """The guess was right: give its counts back (`proven` as for `attempt`)."""
        self.per_client.refund(session, keyring, secret, client)
        if not proven:
            self.per_secret.refund(session, keyring, secret)
