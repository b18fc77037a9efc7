"""Subaccounts: created and managed by a master account through the API."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import service as accounts
from opencoupon.accounts.sso import RESET_PURPOSE
from opencoupon.errors import ApiError, bad_date, bad_value, missing
from opencoupon.events import service as events
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.dates import fmt, fmt_date
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account
from opencoupon.subaccounts import repository
from opencoupon.subaccounts.schemas import MIN_PASSWORD_LENGTH, SubaccountCreate, SubaccountUpdate
from opencoupon.subaccounts.tasks import PASSWORD_SETUP
from opencoupon.webhooks import ssrf
from opencoupon.worker import queue

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A bare address only: with a display name, angle brackets, quotes or a list separator the stored
# text is not the address mail goes to (`"a"<attacker@evil.com>` was sent to attacker@evil.com)
# nor the one its owner signs in with.
NOT_IN_ADDRESS = frozenset('<>()[]\\,;:"')
SUBACCOUNT_NOT_FOUND = ApiError(510, "Subaccount ID not correct.")
EMAIL_EXISTS = ApiError(304, "Email already exists.")


def require_master(ctx: ApiContext) -> None:
    if ctx.account.parent_id is not None:
        raise ApiError(102, "You are trying to use subaccount credentials to manage subaccounts.")


def get_subaccount(ctx: ApiContext, raw_id: str) -> Account:
    require_master(ctx)
    sub_id = ids.parse_public_id(raw_id, "sub_", "subaccount", SUBACCOUNT_NOT_FOUND)
    found = accounts_repo.subaccount(ctx.session, ctx.account.id, sub_id)
    if found is None:
        raise SUBACCOUNT_NOT_FOUND
    return found


def to_public(session: Session, ctx: ApiContext, sub: Account, *, detail: bool) -> dict[str, Any]:
    campaigns = repository.campaigns_of(session, sub.id) if detail else []
    data: dict[str, Any] = {
        "ID": f"sub_{sub.id}",
        "email": sub.email,
        "language": sub.language,
        "lastlogin": fmt(sub.last_login_at),
        "amountlogin": str(sub.login_count),
        "currency": sub.currency,
        "max_campaigns": str(sub.max_campaigns),
        "expiry_date": fmt_date(sub.expiry_date),
        "status": sub.plan_status,
        "blocked": "1" if sub.blocked else "0",
        "package": sub.package,
        "country": sub.country,
        "timezone": sub.timezone,
        "first_name": sub.first_name,
        "last_name": sub.last_name,
        "company_name": sub.company_name,
        "username": sub.username,
        "webhook_endpoint": sub.webhook_endpoint,
        "access_dashboard": sub.access_dashboard,
        "access_directory": sub.access_directory,
        "created_date_utc": fmt(sub.created_at),
    }
    if detail:
        data["api_key"] = sub.client_id
        data["api_secret"] = accounts.current_secret(session, ctx.runtime.keyring, sub)
        data["has_campaigns"] = str(len(campaigns))
        # Campaigns it may still make under max_campaigns; "" when max_campaigns is 0 (no limit).
        left = sub.max_campaigns - len(campaigns)
        data["available_campaigns"] = str(max(0, left)) if sub.max_campaigns else ""
        data["campaigns"] = [
            {"ID": f"cam_{c.id}", "code": c.code, "url": ctx.url(f"/p/{c.code}"), "status": c.status}
            for c in campaigns
        ]
    return data


def _expiry(raw: str | None) -> dt.date | None:
    if raw is None or raw == "":
        return None
    try:
        return dt.date.fromisoformat(raw) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw) else _fail_date()
    except ValueError:
        return _fail_date()


def _fail_date() -> dt.date:
    raise bad_date("expiry_date", "yyyy-MM-dd")


def _bare(address: str) -> bool:
    """No display-name syntax, and no separator (Z*) or invisible control (C*) character."""
    return not any(ch in NOT_IN_ADDRESS or unicodedata.category(ch)[0] in "CZ" for ch in address)


def check_email(session: Session, email: str, current: Account | None = None) -> str:
    normalized = accounts.normalize_email(email)
    if not EMAIL.match(normalized) or len(normalized) > 254 or not _bare(normalized):
        raise ApiError(305, "Email address is not valid.")
    existing = accounts_repo.by_email(session, normalized)
    if existing is not None and (current is None or existing.id != current.id):
        raise EMAIL_EXISTS
    return normalized


_PLAIN_FIELDS = (
    "package",
    "first_name",
    "last_name",
    "company_name",
    "username",
    "timezone",
    "max_campaigns",
    "webhook_endpoint",
    "access_dashboard",
    "access_directory",
)


def _validate_country(country: str | None) -> str | None:
    if country is None:
        return None
    if country and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise ApiError(300, "Invalid value in parameter: country. Use an ISO 3166 alpha-2 code.")
    return country.upper()


def _validate_language(language: str | None) -> str | None:
    """A two-letter ISO 639-1 code (the vendor's sample: "en"), lower-cased; empty is not given."""
    if not language:
        return None
    if not re.fullmatch(r"[A-Za-z]{2}", language):
        raise bad_value("language", "Use a two-letter ISO 639-1 code such as en or fr.")
    return language.lower()


def _validate_timezone(tz: str | None) -> None:
    if tz is None:
        return
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(300, "Invalid value in parameter: timezone.") from None


def _validate_webhook_endpoint(ctx: ApiContext, url: str | None) -> None:
    """The rules of `/v4/webhooks` (https, a public host): a URL its deliveries would refuse must
    not be accepted here, or the integration gets OK and never an event. Empty clears the field."""
    if not url:
        return
    try:
        ssrf.check_url(url, allow_private=ctx.runtime.settings.allow_private_webhooks)
    except ssrf.UnsafeTarget as exc:
        raise bad_value("webhook_endpoint", f"{exc}.") from None


def checked_password(raw: str | None) -> str | None:
    """The password to set; None (none given, or empty) sets none. The reset page's minimum
    applies here too: a password it would refuse must not be settable through the API."""
    if not raw:
        return None
    if len(raw) < MIN_PASSWORD_LENGTH:
        raise bad_value("password", f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    return raw


def create(ctx: ApiContext, req: SubaccountCreate) -> Account:
    require_master(ctx)
    session = ctx.session
    if not req.email.strip():
        raise missing("email")  # as when it is left out (the vendor's 200)
    email = check_email(session, req.email)
    password = checked_password(req.password)
    expiry = _expiry(req.expiry_date)
    country = _validate_country(req.country)
    language = _validate_language(req.language)
    _validate_timezone(req.timezone)
    _validate_webhook_endpoint(ctx, req.webhook_endpoint)
    fields: dict[str, Any] = {k: getattr(req, k) for k in _PLAIN_FIELDS if getattr(req, k) is not None}
    if req.status:
        fields["plan_status"] = req.status
    if country is not None:
        fields["country"] = country
    if language is not None:
        fields["language"] = language
    try:
        sub, _secret = accounts.create_account(
            session,
            ctx.runtime.keyring,
            email=email,
            password_hash=req.password_hash if password else None,
            parent=ctx.account,
            expiry_date=expiry,
            **fields,
        )
    except IntegrityError:
        # A concurrent create with the same email won the unique index (PostgreSQL).
        raise EMAIL_EXISTS from None
    events.emit(
        session, ctx.account.id, "subaccount_created", {"subaccount": f"sub_{sub.id}", "email": email}
    )
    if password is None:
        queue.enqueue(session, PASSWORD_SETUP, {"account_id": sub.id})  # sent once committed
    return sub


def _dashboard_usable(session: Session, sub: Account, now: dt.datetime) -> bool:
    try:
        accounts.ensure_usable(session, sub, now)
        accounts.ensure_dashboard_access(sub)
    except ApiError:
        return False
    return True


def update(ctx: ApiContext, req: SubaccountUpdate) -> Account:
    sub = get_subaccount(ctx, req.subaccount)
    session = ctx.session
    usable_before = _dashboard_usable(session, sub, ctx.now)
    if req.email is not None:
        email = check_email(session, req.email, current=sub)
        if email != sub.email:
            # Links sent to (or made for) the old address must not set the corrected account's
            # password: its setup email and reset links stop working.
            accounts_repo.retire_tokens(session, sub.id, RESET_PURPOSE, ctx.now)
        sub.email = email
    if req.expiry_date is not None:
        sub.expiry_date = _expiry(req.expiry_date)
    if checked_password(req.password) is not None and req.password_hash is not None:
        # Hashed before the transaction (WithPassword). A password set by the master voids the
        # reset links still open (its setup email's too) and ends the subaccount's sessions.
        accounts.set_password(session, sub, req.password_hash)
    country = _validate_country(req.country)
    if country is not None:
        sub.country = country
    language = _validate_language(req.language)
    if language is not None:
        sub.language = language
    _validate_timezone(req.timezone)
    _validate_webhook_endpoint(ctx, req.webhook_endpoint)
    if req.status:
        sub.plan_status = req.status
    if req.block is not None:
        if req.block and not sub.blocked:
            # An unblock must not bring back a reset or setup link made before the block.
            accounts_repo.retire_tokens(session, sub.id, RESET_PURPOSE, ctx.now)
        sub.blocked = req.block
    for name in _PLAIN_FIELDS:
        value = getattr(req, name)
        if value is not None:
            setattr(sub, name, value)
    if not usable_before or not _dashboard_usable(session, sub, ctx.now):
        # Blocked, expired or without dashboard access, now or until now: its dashboard sessions
        # end for good (a block lifted later does not bring back a session signed in before it).
        sub.sessions_generation += 1
    sub.updated_at = utcnow()
    try:
        session.flush()
    except IntegrityError:
        raise EMAIL_EXISTS from None
    return sub
