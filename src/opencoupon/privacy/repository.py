"""Every query of the privacy capability: finding one person's rows across the domains.

Emails are stored as typed in some tables (coupon claims, loyalty holders) and lower-cased in
others, so they are compared lower-cased; phones by their digits (no spaces, dashes, dots,
brackets or leading +). Neither comparison can use the (campaign, email) indexes: a request scans
the caller's rows of each table once, which is fine for a call made a few times a month."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, false, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from opencoupon.models import (
    Campaign,
    CouponSession,
    Directory,
    DirectoryUser,
    DistributionSend,
    Event,
    IdempotencyRecord,
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyLedgerEntry,
    PushSubscription,
    SingleUseBatch,
    Validation,
    WebhookAttempt,
    WebhookPayload,
)

Scope = Callable[[Any], ColumnElement[bool]]

# Event types whose data may carry a person's details (the others carry IDs and amounts only).
PERSONAL_EVENT_TYPES = (
    "coupon_opened",
    "coupon_claimed",
    "singleuse_created",
    "singleuse_removed",
    "loyalty_user_created",
    "directory_user_registered",
    "directory_payment_status_changed",
)
# Bound parameters per IN list: SQLite allows 32,766 per statement, PostgreSQL 65,535.
CHUNK = 500


def _bare_phone(column: Any) -> Any:
    for char in (" ", "-", ".", "(", ")", "+"):
        column = func.replace(column, char, "")
    return column


def _matches(email_column: Any, phone_column: Any, email: str, phone: str) -> ColumnElement[bool]:
    found = func.lower(email_column) == email
    if phone:
        found = or_(found, _bare_phone(phone_column) == phone)
    return found


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def coupon_sessions(
    session: Session, scope: Scope, email: str, phone: str
) -> Sequence[tuple[CouponSession, Campaign]]:
    # Apart, so the email's query uses ix_coupon_sessions_email_lower (claimed sessions only); a
    # phone, compared by its digits, is still found by reading the account's sessions.
    # The '' is written out: a bound value cannot prove the partial index's condition to a planner.
    conditions = [(CouponSession.email != literal_column("''")) & (func.lower(CouponSession.email) == email)]
    if phone:
        conditions.append(_bare_phone(CouponSession.phone) == phone)
    found: dict[int, tuple[CouponSession, Campaign]] = {}
    for condition in conditions:
        rows = session.execute(
            select(CouponSession, Campaign)
            .join(Campaign, Campaign.id == CouponSession.campaign_id)
            .where(condition, scope(CouponSession.account_id))
        ).all()
        found.update((row.id, (row, campaign)) for row, campaign in rows)
    return [found[key] for key in sorted(found)]


def validations(session: Session, session_ids: Sequence[int]) -> Sequence[Validation]:
    found: list[Validation] = []
    for part in _chunks(session_ids):
        found += session.scalars(
            select(Validation).where(Validation.session_id.in_(part)).order_by(Validation.id)
        ).all()
    return found


def loyalty_holders(
    session: Session, scope: Scope, email: str, phone: str
) -> Sequence[tuple[LoyaltyHolder, LoyaltyCard | None]]:
    return session.execute(
        select(LoyaltyHolder, LoyaltyCard)
        .outerjoin(LoyaltyCard, LoyaltyCard.id == LoyaltyHolder.card_id)
        .where(
            scope(LoyaltyHolder.account_id),
            _matches(LoyaltyHolder.email, LoyaltyHolder.phone, email, phone),
        )
        .order_by(LoyaltyHolder.id)
    ).all()


def ledger(session: Session, holder_ids: Sequence[int]) -> Sequence[LoyaltyLedgerEntry]:
    found: list[LoyaltyLedgerEntry] = []
    for part in _chunks(holder_ids):
        found += session.scalars(
            select(LoyaltyLedgerEntry)
            .where(LoyaltyLedgerEntry.holder_id.in_(part))
            .order_by(LoyaltyLedgerEntry.id)
        ).all()
    return found


def directory_users(
    session: Session, scope: Scope, email: str, phone: str
) -> Sequence[tuple[DirectoryUser, Directory]]:
    return session.execute(
        select(DirectoryUser, Directory)
        .join(Directory, Directory.id == DirectoryUser.directory_id)
        .where(
            scope(DirectoryUser.account_id),
            _matches(DirectoryUser.email, DirectoryUser.phone, email, phone),
        )
        .order_by(DirectoryUser.id)
    ).all()


def sends(session: Session, scope: Scope, email: str, phone: str) -> Sequence[DistributionSend]:
    # recipient_key is the lower-cased email or the E.164 number (distribution.service).
    keys = [email] + ([phone, "+" + phone] if phone else [])
    return session.scalars(
        select(DistributionSend)
        .where(
            scope(DistributionSend.account_id),
            or_(DistributionSend.recipient_key.in_(keys), func.lower(DistributionSend.recipient).in_(keys)),
        )
        .order_by(DistributionSend.id)
    ).all()


def push_subscriptions(
    session: Session, scope: Scope, session_codes: Sequence[str], holder_ids: Sequence[int]
) -> Sequence[PushSubscription]:
    targets = [("coupon_session", code) for code in session_codes]
    targets += [("loyalty_holder", str(holder_id)) for holder_id in holder_ids]
    found: list[PushSubscription] = []
    for part in _chunks(targets):
        found += session.scalars(
            select(PushSubscription)
            .where(
                scope(PushSubscription.account_id),
                or_(
                    false(),
                    *(
                        (PushSubscription.target_kind == kind) & (PushSubscription.target_key == key)
                        for kind, key in part
                    ),
                ),
            )
            .order_by(PushSubscription.id)
        ).all()
    return found


def events(
    session: Session,
    scope: Scope,
    *,
    session_codes: Sequence[str],
    texts: Sequence[str],
    id_texts: Sequence[str],
) -> Sequence[Event]:
    """Events that may be about the person: of one of their sessions, or whose data holds one of
    `texts` (emails and phones, compared lower-cased) or `id_texts` (quoted public IDs). The
    caller decides from the parsed data what really is theirs."""
    conditions: list[ColumnElement[bool]] = []
    for part in _chunks(list(session_codes)):
        conditions.append(Event.session.in_(part))
    lowered = func.lower(Event.data)
    conditions += [lowered.contains(text, autoescape=True) for text in texts if text]
    conditions += [Event.data.contains(text, autoescape=True) for text in id_texts]
    if not conditions:
        return []
    return session.scalars(
        select(Event)
        .where(scope(Event.account_id), Event.type.in_(PERSONAL_EVENT_TYPES), or_(*conditions))
        .order_by(Event.id)
    ).all()


def set_payload(session: Session, event_id: int, body: str) -> None:
    session.execute(update(WebhookPayload).where(WebhookPayload.event_id == event_id).values(body=body))


def clear_attempt_responses(session: Session, event_ids: Sequence[int]) -> int:
    """The receivers' answers to these events' deliveries (they may echo what was sent)."""
    changed = 0
    for part in _chunks(event_ids):
        result = session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.event_id.in_(part), WebhookAttempt.response_body != "")
            .values(response_body="")
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


def finished_batches(session: Session, scope: Scope) -> Sequence[SingleUseBatch]:
    return session.scalars(
        select(SingleUseBatch)
        .where(scope(SingleUseBatch.account_id), SingleUseBatch.result.is_not(None))
        .order_by(SingleUseBatch.id)
    ).all()


def idempotency_records(session: Session, scope: Scope) -> Sequence[IdempotencyRecord]:
    return session.scalars(
        select(IdempotencyRecord)
        .where(scope(IdempotencyRecord.account_id), IdempotencyRecord.response_body != "")
        .order_by(IdempotencyRecord.id)
    ).all()
