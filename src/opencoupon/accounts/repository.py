"""Queries on accounts and their API secrets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from opencoupon.db.session import upsert_insert
from opencoupon.models import Account, ApiSecret, Campaign, OneTimeToken


def by_client_id(session: Session, client_id: str) -> Account | None:
    return session.scalar(select(Account).where(Account.client_id == client_id))


def by_email(session: Session, email: str) -> Account | None:
    return session.scalar(select(Account).where(Account.email == email.lower()))


def by_id(session: Session, account_id: int) -> Account | None:
    return session.get(Account, account_id)


# Built once: every API call runs it, and building the expression costs more than running it.
_WITH_ACTIVE_SECRETS = (
    select(Account, ApiSecret.secret_digest)
    .join(ApiSecret, ApiSecret.account_id == Account.id)
    .where(
        Account.client_id == bindparam("client_id"),
        or_(ApiSecret.expires_at.is_(None), ApiSecret.expires_at > bindparam("now")),
    )
)


def active_secrets(session: Session, account_id: int, now: dt.datetime) -> Sequence[ApiSecret]:
    return session.scalars(
        select(ApiSecret)
        .where(ApiSecret.account_id == account_id)
        .where(or_(ApiSecret.expires_at.is_(None), ApiSecret.expires_at > now))
        .order_by(ApiSecret.id.desc())
    ).all()


_SUBACCOUNTS = select(Account).where(Account.parent_id == bindparam("parent_id")).order_by(Account.id)


def subaccounts(session: Session, parent_id: int) -> Sequence[Account]:
    return session.scalars(_SUBACCOUNTS, {"parent_id": parent_id}).all()


def subaccount(session: Session, parent_id: int, subaccount_id: int) -> Account | None:
    return session.scalar(select(Account).where(Account.id == subaccount_id, Account.parent_id == parent_id))


def token_by_digest(session: Session, digest: str, purpose: str) -> OneTimeToken | None:
    return session.scalar(
        select(OneTimeToken).where(OneTimeToken.token_digest == digest, OneTimeToken.purpose == purpose)
    )


def record_ended_session(
    session: Session, account_id: int, purpose: str, digest: str, now: dt.datetime, lifetime: dt.timedelta
) -> None:
    """Remember a signed-out session (by the digest of its ID) until its cookie would have expired
    anyway; signing out twice, even at the same moment, records it once."""
    session.execute(
        upsert_insert(session, OneTimeToken)
        .values(
            account_id=account_id,
            purpose=purpose,
            token_digest=digest,
            page="",
            target="",
            created_at=now,
            expires_at=now + lifetime,
            used_at=now,
        )
        .on_conflict_do_nothing()
    )


def consume_token(session: Session, token_id: int, now: dt.datetime) -> bool:
    """Mark a one-time token used; True only for the one caller that wins."""
    result = session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.id == token_id, OneTimeToken.used_at.is_(None), OneTimeToken.expires_at > now)
        .values(used_at=now)
    )
    return (result.rowcount or 0) == 1  # type: ignore[attr-defined]


def retire_tokens(session: Session, account_id: int, purpose: str, now: dt.datetime) -> None:
    """Mark every unused token of this purpose of the account used (a password set makes the
    account's other reset links void)."""
    session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.account_id == account_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=now)
    )


def end_sso_sign_ins(session: Session, account_id: int, purpose: str, now: dt.datetime) -> None:
    """Sign out every dashboard session an SSO link opened into the account or, for a main
    account, into one of its subaccounts (their `sso_generation` moves on), and void their SSO
    links (`purpose`) not used yet."""
    family = or_(Account.id == account_id, Account.parent_id == account_id)
    session.execute(update(Account).where(family).values(sso_generation=Account.sso_generation + 1))
    session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.account_id.in_(select(Account.id).where(family)),
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=now),
        execution_options={"synchronize_session": False},
    )


def lock_account(session: Session, account_id: int) -> None:
    """Hold the account's row until the transaction ends (FOR UPDATE; a no-op on SQLite)."""
    session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


def campaign_count(session: Session, account_id: int) -> int:
    """The account's campaigns (not deleted), of every kind."""
    query = select(func.count()).where(Campaign.account_id == account_id, Campaign.deleted_at.is_(None))
    return int(session.scalar(query) or 0)
