"""Accounts, API credentials and one-time tokens."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, make_transient_to_detached

from opencoupon.accounts import authcache, repository
from opencoupon.db import raw
from opencoupon.errors import ApiError, AuthFailed
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import Keyring, constant_time_equals, hash_password
from opencoupon.models import Account, ApiSecret, OneTimeToken

# Purposes of one-time tokens (accounts.sso): a dashboard sign-in link; a link that sets the
# password (a reset, or a new subaccount's setup email).
SSO_PURPOSE = "sso"
RESET_PURPOSE = "reset"


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
    password_hash: str | None = None,
    parent: Account | None = None,
    keep_secret_encrypted: bool = False,
    **fields: object,
) -> tuple[Account, str]:
    """Create an account with one API secret; returns the account and the secret in clear
    (shown once). Subaccount secrets are also kept encrypted so the master can read them. The
    password comes in clear or, from an API call, already hashed (kit.params.WithPassword)."""
    now = utcnow()
    account = Account(
        email=normalize_email(email),
        password_hash=password_hash or (hash_password(password) if password else None),
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
    """A new secret; the ones before it keep working for at most `grace`, then stop (a secret
    still in an earlier rotation's grace ends sooner if this grace is shorter: grace 0 after a
    leak ends them all at once). Grace 0 also signs out the dashboard sessions SSO links opened
    into the account (a main account's: into its subaccounts too) and voids its unused SSO links:
    whoever held the old secret could make such links."""
    # Rotations one after another: two at once (a double click) each left a secret that never
    # expired, each UPDATE blind to the secret the other was adding.
    repository.lock_account(session, account.id)
    now = utcnow()
    if grace <= dt.timedelta(0):
        repository.end_sso_sign_ins(session, account.id, SSO_PURPOSE, now)
    ends = now + grace
    session.execute(
        update(ApiSecret)
        .where(
            ApiSecret.account_id == account.id,
            or_(ApiSecret.expires_at.is_(None), ApiSecret.expires_at > ends),
        )
        .values(expires_at=ends)
    )
    authcache.clear_after_commit(session)
    return add_secret(session, keyring, account, encrypted=account.parent_id is not None)


def set_password(session: Session, account: Account, password_hash: str) -> None:
    """A new password (hashed beforehand: argon2 is slow, keep it out of the transaction). Every
    dashboard session signed in before ends (security.py fingerprints the hash), and so do the
    account's open reset and setup links."""
    account.password_hash = password_hash
    account.updated_at = utcnow()
    repository.retire_tokens(session, account.id, RESET_PURPOSE, account.updated_at)


def current_secret(session: Session, keyring: Keyring, account: Account) -> str:
    """The newest secret in clear, where it is kept encrypted (subaccounts); else ""."""
    for secret in repository.active_secrets(session, account.id, utcnow()):
        if secret.secret_encrypted:
            return keyring.decrypt(secret.secret_encrypted) or ""
    return ""


def authenticate_cached(keyring: Keyring, credentials: Credentials | None) -> Account | None:
    """A detached copy of the account from the per-process cache (after the same checks as
    `authenticate`), or None when these credentials were not checked in the last seconds."""
    if credentials is None or not credentials.client_id or not credentials.client_secret:
        raise AuthFailed
    now = utcnow()
    cached = authcache.authentications.get((credentials.client_id, keyring.digest(credentials.client_secret)))
    if cached is authcache.MISSING:
        return None
    if cached.secret_expires_at is not None and cached.secret_expires_at <= now:
        return None
    _check_usable(cached.account, now)
    _check_usable_parent(cached.parent_blocked, cached.parent_expiry, now)
    return cached.account


def authenticate(session: Session, keyring: Keyring, credentials: Credentials | None) -> Account:
    """The account these credentials belong to, or AuthFailed / error 101."""
    cached = authenticate_cached(keyring, credentials)
    if cached is not None:
        return raw.adopt(session, cached)
    assert credentials is not None  # authenticate_cached refuses missing credentials
    read_at = authcache.authentications.generation  # before the rows are read
    now = utcnow()
    digest = keyring.digest(credentials.client_secret)
    found = repository.by_client_id(session, credentials.client_id)
    if found is None:
        raise AuthFailed
    account = found
    matched: ApiSecret | None = None
    for secret in repository.active_secrets(session, account.id, now):
        if constant_time_equals(secret.secret_digest, digest):
            matched = secret
    if matched is None:
        raise AuthFailed
    parent = repository.by_id(session, account.parent_id) if account.parent_id is not None else None
    _check_usable(account, now)
    if parent is not None:
        _check_usable_parent(parent.blocked, parent.expiry_date, now)
    snapshot = Account(**{c.key: getattr(account, c.key) for c in Account.__table__.columns})
    make_transient_to_detached(snapshot)
    authcache.authentications.put(
        (credentials.client_id, digest),
        authcache.CachedAuth(
            account=snapshot,
            parent_blocked=parent.blocked if parent else False,
            parent_expiry=parent.expiry_date if parent else None,
            secret_expires_at=matched.expires_at,
        ),
        read_at,
    )
    return account


def _check_usable(account: Account, now: dt.datetime) -> None:
    _check_usable_parent(account.blocked, account.expiry_date, now)


def _check_usable_parent(blocked: bool, expiry: dt.date | None, now: dt.datetime) -> None:
    if blocked:
        raise ApiError(101, "Account is blocked.")
    if expiry is not None and expiry < now.date():
        raise ApiError(101, "Account has expired.")


def ensure_usable(session: Session, account: Account, now: dt.datetime) -> None:
    """Error 101 for an expired or blocked account (or one whose master is)."""
    _check_usable(account, now)
    if account.parent_id is not None:
        parent = repository.by_id(session, account.parent_id)
        if parent is not None:
            _check_usable_parent(parent.blocked, parent.expiry_date, now)


def ensure_dashboard_access(account: Account) -> None:
    """A subaccount whose `access_dashboard` is off may not use the dashboard (sign-in, SSO links,
    a sign-in made before); its API keys still work."""
    if account.parent_id is not None and not account.access_dashboard:
        raise ApiError(101, "This account has no dashboard access.")


def may_hold(session: Session, owner_id: int, account_id: int) -> bool:
    """Whether an object of `owner_id` (a directory, a campaign, a loyalty card) may hold or take
    over an object of `account_id`: its own account's, and for a master's its subaccounts' too. A
    subaccount's object never holds its master's or a sibling's, even when the master (who
    reaches them all) puts them there: the subaccount's answers and pages would hand them over."""
    if account_id == owner_id:
        return True
    owner = repository.by_id(session, account_id)
    return owner is not None and owner.parent_id == owner_id


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


def update_settings(
    session: Session, account: Account, *, timezone: str | None = None, branding: dict[str, str] | None = None
) -> None:
    """The account's own settings from the dashboard: its time zone (a valid IANA name) and the
    branding JSON (logo URL and colours, read by distribution.mail.parse_branding)."""
    if timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(300, "Invalid value in parameter: timezone.") from None
        account.timezone = timezone
    if branding is not None:
        account.branding = json.dumps(branding, sort_keys=True)
    account.updated_at = utcnow()
    session.flush()
    authcache.clear_after_commit(session)


def check_campaign_allowance(session: Session, account: Account) -> None:
    """An account whose `max_campaigns` is set (a master sets it on its subaccounts; 0 is no
    limit) may hold at most that many campaigns: a new one past it is refused (309). Checked
    when a campaign is made (the API, the dashboard, a directory's template copy)."""
    if not account.max_campaigns:
        return
    # Concurrent creates of one account queue on its row (PostgreSQL; SQLite's write lock does it).
    repository.lock_account(session, account.id)
    if repository.campaign_count(session, account.id) >= account.max_campaigns:
        raise ApiError(309, f"This account may have at most {account.max_campaigns} campaigns.")
