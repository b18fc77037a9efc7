"""Accounts, API credentials and one-time tokens."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from opencoupon.accounts import repository
from opencoupon.errors import ApiError, AuthFailed
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import Keyring, constant_time_equals, hash_password
from opencoupon.models import Account, ApiSecret, OneTimeToken


@dataclass
class Credentials:
    client_id: str
    client_secret: str


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_account(
    session: Session,
    keyring: Keyring,
    *,
    email: str,
    password: str | None = None,
    parent: Account | None = None,
    keep_secret_encrypted: bool = False,
    **fields: object,
) -> tuple[Account, str]:
    """Create an account with one API secret; returns the account and the secret in clear
    (shown once). Subaccount secrets are also kept encrypted so the master can read them."""
    now = utcnow()
    account = Account(
        email=normalize_email(email),
        password_hash=hash_password(password) if password else None,
        client_id=ids.numeric_client_id(),
        parent_id=parent.id if parent else None,
        created_at=now,
        updated_at=now,
        **fields,
    )
    session.add(account)
    session.flush()
    secret = add_secret(session, keyring, account, encrypted=keep_secret_encrypted or parent is not None)
    return account, secret


def add_secret(session: Session, keyring: Keyring, account: Account, *, encrypted: bool) -> str:
    secret = ids.client_secret()
    session.add(
        ApiSecret(
            account_id=account.id,
            secret_digest=keyring.digest(secret),
            secret_encrypted=keyring.encrypt(secret) if encrypted else None,
            created_at=utcnow(),
        )
    )
    session.flush()
    return secret


def rotate_secret(session: Session, keyring: Keyring, account: Account, grace: dt.timedelta) -> str:
    """A new secret; the ones before it keep working for `grace`, then stop."""
    now = utcnow()
    session.execute(
        update(ApiSecret)
        .where(ApiSecret.account_id == account.id, ApiSecret.expires_at.is_(None))
        .values(expires_at=now + grace)
    )
    return add_secret(session, keyring, account, encrypted=account.parent_id is not None)


def current_secret(session: Session, keyring: Keyring, account: Account) -> str:
    """The newest secret in clear, where it is kept encrypted (subaccounts); else ""."""
    for secret in repository.active_secrets(session, account.id, utcnow()):
        if secret.secret_encrypted:
            return keyring.decrypt(secret.secret_encrypted) or ""
    return ""


def authenticate(session: Session, keyring: Keyring, credentials: Credentials | None) -> Account:
    """The account these credentials belong to, or AuthFailed / error 101.

    One query fetches the account and the HMACs of its active secrets (two during a rotation);
    the HMAC of the presented secret is compared with each in constant time."""
    if credentials is None or not credentials.client_id or not credentials.client_secret:
        raise AuthFailed
    now = utcnow()
    digest = keyring.digest(credentials.client_secret)  # same work whether or not the client exists
    account, digests = repository.with_active_secret_digests(session, credentials.client_id, now)
    matched = False
    for stored in digests:
        matched |= constant_time_equals(stored, digest)
    if account is None or not matched:
        raise AuthFailed
    ensure_usable(session, account, now)
    return account


def ensure_usable(session: Session, account: Account, now: dt.datetime) -> None:
    """Error 101 for an expired or blocked account (or one whose master is)."""
    chain = [account]
    if account.parent_id is not None:
        parent = repository.by_id(session, account.parent_id)
        if parent is not None:
            chain.append(parent)
    for acc in chain:
        if acc.blocked:
            raise ApiError(101, "Account is blocked.")
        if acc.expiry_date is not None and acc.expiry_date < now.date():
            raise ApiError(101, "Account has expired.")


def issue_token(
    session: Session,
    keyring: Keyring,
    account: Account,
    *,
    purpose: str,
    ttl: dt.timedelta,
    page: str = "",
    target: str = "",
) -> str:
    """A one-time token (only its digest is stored): 49 letters and digits, as in the vendor sample."""
    raw = ids.random_code(49, ids.ALNUM)
    now = utcnow()
    session.add(
        OneTimeToken(
            account_id=account.id,
            purpose=purpose,
            token_digest=keyring.digest(raw),
            page=page,
            target=target,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    session.flush()
    return raw


def redeem_token(session: Session, keyring: Keyring, raw: str, purpose: str) -> OneTimeToken | None:
    """The token if it exists, is unused and unexpired — and marks it used, exactly once."""
    found = repository.token_by_digest(session, keyring.digest(raw), purpose)
    if found is None:
        return None
    if not repository.consume_token(session, found.id, utcnow()):
        return None
    return found
