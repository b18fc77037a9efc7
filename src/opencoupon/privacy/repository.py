"""Every query of the privacy capability: finding one person's rows across the domains.

Emails are stored as typed in some tables (coupon claims, loyalty holders) and lower-cased in
others, so they are compared lower-cased: `lower(column)` against both `lower(<as typed>)` (the
database's own folding: SQLite's lower() folds ASCII letters only) and Python's lower-cased form.
Phones are compared by their digits (no spaces, dashes, dots, brackets or leading +), which no
index serves: a phone reads the caller's rows of each table once, fine for a call made a few
times a month.

Every statement binds at most CHUNK values of a list (SQLite allows 32,766 parameters per
statement, PostgreSQL 65,535): a longer list is read in several statements and merged, or the
list is a subquery."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from opencoupon.db.base import Base
from opencoupon.models import (
    Campaign,
    CouponSession,
    Directory,
    DirectoryUser,
    DistributionSend,
    Event,
    IdempotencyRecord,
    Job,
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyLedgerEntry,
    PushFanout,
    PushSubscription,
    SingleUseBatch,
    Validation,
    WebhookAttempt,
    WebhookPayload,
)
from opencoupon.models.loyalty import email_key

Scope = Callable[[Any], ColumnElement[bool]]

# Event types whose data may carry a person's details as such (the others name rows by ID, and
# coupon events carry the session's customid): the only ones searched by their text. Events of
# the person's rows are found by ID whatever their type.
PERSONAL_EVENT_TYPES = (
    "coupon_opened",
    "coupon_claimed",
    "singleuse_created",
    "singleuse_removed",
    "loyalty_user_created",
    "directory_user_registered",
    "directory_payment_status_changed",
)
# Event types never about a person (their data names erased rows by ID only, an account, an endpoint).
NOT_PERSONAL_EVENT_TYPES = ("privacy_erased", "subaccount_created", "webhook_endpoint_disabled")
# Bound values of a list per statement.
CHUNK = 500


def _bare_phone(column: Any) -> Any:
    for char in (" ", "-", ".", "(", ")", "+"):
        column = func.replace(column, char, "")
    return column


def email_forms(email: str, typed: str) -> list[Any]:
    """What lower(column) is compared with: Python's lower-cased form, and lower(<as typed>) (the
    database's own folding: SQLite's lower() folds ASCII letters only) when they may differ."""
    forms: list[Any] = [email]
    if typed and typed != email:
        forms.append(func.lower(literal(typed)))
    return forms


def email_is(column: Any, email: str, typed: str) -> ColumnElement[bool]:
    """`column` holds `email` in any letter case the database can fold."""
    return func.lower(column).in_(email_forms(email, typed))


def _matches(email_column: Any, phone_column: Any, email: str, typed: str, phone: str) -> ColumnElement[bool]:
    found = email_is(email_column, email, typed)
    if phone:
        found = or_(found, _bare_phone(phone_column) == phone)
    return found


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _session_conditions(email: str, typed: str, phone: str) -> list[ColumnElement[bool]]:
    """The person's coupon sessions, one condition per way of finding them.

    Apart, so the email's query uses ix_coupon_sessions_email_lower (claimed sessions only); a
    phone, compared by its digits, is still found by reading the account's sessions. The '' is
    written out: a bound value cannot prove the partial index's condition to a planner. One
    equality per form of the email: with an IN of two, SQLite's planner (without statistics)
    prefers the account's index and reads all its sessions."""
    conditions = [
        (CouponSession.email != literal_column("''")) & (func.lower(CouponSession.email) == form)
        for form in email_forms(email, typed)
    ]
    if phone:
        conditions.append(_bare_phone(CouponSession.phone) == phone)
    return conditions


def coupon_sessions(
    session: Session, scope: Scope, email: str, typed: str, phone: str
) -> Sequence[tuple[CouponSession, Campaign]]:
    found: dict[int, tuple[CouponSession, Campaign]] = {}
    for condition in _session_conditions(email, typed, phone):
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
    session: Session, scope: Scope, email: str, typed: str, phone: str
) -> Sequence[tuple[LoyaltyHolder, LoyaltyCard | None]]:
    return session.execute(
        select(LoyaltyHolder, LoyaltyCard)
        .outerjoin(LoyaltyCard, LoyaltyCard.id == LoyaltyHolder.card_id)
        .where(
            scope(LoyaltyHolder.account_id),
            # email_key is folded by Python's rules (É and é alike on SQLite too).
            or_(
                LoyaltyHolder.email_key == email_key(email),
                _matches(LoyaltyHolder.email, LoyaltyHolder.phone, email, typed, phone),
            ),
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
    session: Session, scope: Scope, email: str, typed: str, phone: str
) -> Sequence[tuple[DirectoryUser, Directory]]:
    return session.execute(
        select(DirectoryUser, Directory)
        .join(Directory, Directory.id == DirectoryUser.directory_id)
        .where(
            scope(DirectoryUser.account_id),
            _matches(DirectoryUser.email, DirectoryUser.phone, email, typed, phone),
        )
        .order_by(DirectoryUser.id)
    ).all()


def sends(
    session: Session, scope: Scope, email: str, typed: str, phone: str, *, lock: bool = False
) -> Sequence[DistributionSend]:
    """`lock` (an erasure; PostgreSQL): the rows are read as a worker finishing an attempt left
    them, and it waits for the erasure: a provider's answer recorded in between is not kept."""
    # recipient_key is the lower-cased email or the E.164 number (distribution.service).
    keys = [email] + ([phone, "+" + phone] if phone else [])
    found = or_(DistributionSend.recipient_key.in_(keys), email_is(DistributionSend.recipient, email, typed))
    if phone:
        found = or_(found, func.lower(DistributionSend.recipient).in_(keys[1:]))
    query = (
        select(DistributionSend)
        .where(scope(DistributionSend.account_id), found)
        .order_by(DistributionSend.id)
    )
    return session.scalars(query.with_for_update() if lock else query).all()


def _push_targets(session_codes: Sequence[str], holder_ids: Sequence[int]) -> list[tuple[str, Sequence[str]]]:
    """How push names the person's sessions and loyalty holders: (target kind, keys)."""
    return [
        ("coupon_session", session_codes),
        ("loyalty_holder", [str(holder_id) for holder_id in holder_ids]),
    ]


_Targeted = TypeVar("_Targeted", PushSubscription, PushFanout)


def _rows_for_targets(
    session: Session,
    model: type[_Targeted],
    scope: Scope,
    session_codes: Sequence[str],
    holder_ids: Sequence[int],
) -> Sequence[_Targeted]:
    """The account's `model` rows whose target is one of these sessions or holders, by ID."""
    found: list[_Targeted] = []
    for kind, keys in _push_targets(session_codes, holder_ids):
        for part in _chunks(keys):
            found += session.scalars(
                select(model).where(
                    scope(model.account_id), model.target_kind == kind, model.target_key.in_(part)
                )
            ).all()
    return sorted(found, key=lambda row: row.id)


def push_subscriptions(
    session: Session, scope: Scope, session_codes: Sequence[str], holder_ids: Sequence[int]
) -> Sequence[PushSubscription]:
    return _rows_for_targets(session, PushSubscription, scope, session_codes, holder_ids)


def push_fanouts(
    session: Session, scope: Scope, session_codes: Sequence[str], holder_ids: Sequence[int]
) -> Sequence[PushFanout]:
    """Pushes sent to one of the person's sessions or holders (`pushnotification/single`): their
    text was written for that one person. Pushes to a whole campaign or card are not theirs."""
    return _rows_for_targets(session, PushFanout, scope, session_codes, holder_ids)


def events(
    session: Session,
    scope: Scope,
    *,
    email: str,
    typed: str,
    phone: str,
    texts: Sequence[str],
    id_texts: Sequence[str],
) -> Sequence[Event]:
    """Events that may be about the person: any event of one of their sessions (found again as
    `coupon_sessions` finds them, in a subquery: a person may have more sessions than a statement
    may bind values) or naming one of their rows (`id_texts`, quoted public IDs), and events of the
    person-data types whose data holds one of `texts` (their email and phone, compared
    lower-cased). The caller decides from the parsed data what really is theirs.

    Events have no index but the account's: each statement reads the account's events once, so
    everything is asked in one statement (more only for over CHUNK ID texts)."""
    their_sessions = select(CouponSession.code).where(
        scope(CouponSession.account_id), or_(*_session_conditions(email, typed, phone))
    )
    lowered = func.lower(Event.data)
    by_text = Event.type.in_(PERSONAL_EVENT_TYPES) & or_(
        false(), *(lowered.contains(text, autoescape=True) for text in texts if text)
    )
    parts = list(_chunks(list(id_texts))) or [[]]
    found: dict[int, Event] = {}
    for index, part in enumerate(parts):
        conditions = [Event.data.contains(text, autoescape=True) for text in part]
        if index == 0:
            conditions += [Event.session.in_(their_sessions), by_text]
        for event in session.scalars(select(Event).where(scope(Event.account_id), or_(*conditions))):
            # Never about a person (left out here: one test fewer per row of the scan).
            if event.type not in NOT_PERSONAL_EVENT_TYPES:
                found[event.id] = event
    return [found[key] for key in sorted(found)]


def send_jobs(session: Session, kinds: Sequence[str], payloads: Sequence[str]) -> Sequence[Job]:
    """The outbox jobs of these sends (their payloads as stored: `{"send_id": N}`)."""
    found: list[Job] = []
    for part in _chunks(list(payloads)):
        found += session.scalars(
            select(Job)
            .where(Job.kind.in_(kinds), Job.payload.in_(part), Job.last_error != "")
            .order_by(Job.id)
        ).all()
    return found


def write_rows(session: Session, model: type[Base], changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Each (row ID, new values) written: one core statement per set of columns, run for every
    row at once (executemany). The ORM's per-row updates and flush bookkeeping made an erasure
    quadratic in the person's rows; the loaded objects are not refreshed (the erasure does not
    read them again)."""
    table = model.__table__
    assert isinstance(table, Table)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row_id, values in changes:
        groups[tuple(sorted(values))].append(
            {"target_id": row_id, **{f"new_{k}": v for k, v in values.items()}}
        )
    for names, rows in groups.items():
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("target_id"))
            .values({name: bindparam(f"new_{name}") for name in names}),
            rows,
        )


def set_payloads(session: Session, bodies: Sequence[tuple[int, str]]) -> None:
    """The webhook bodies of these events, (event ID, body), in one executemany."""
    table = WebhookPayload.__table__
    assert isinstance(table, Table)
    if bodies:
        session.connection().execute(
            update(table)
            .where(table.c.event_id == bindparam("target_id"))
            .values(body=bindparam("new_body")),
            [{"target_id": event_id, "new_body": body} for event_id, body in bodies],
        )


def clear_attempt_responses(session: Session, event_ids: Sequence[int]) -> int:
    """The receivers' answers to these events' deliveries (they may echo what was sent)."""
    changed = 0
    for part in _chunks(event_ids):
        result = session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.event_id.in_(part), WebhookAttempt.response_body != "")
            .values(response_body="")
            # No loaded attempt to update: not the ORM's walk of every loaded row per statement.
            .execution_options(synchronize_session=False)
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


def finished_batches(session: Session, scope: Scope) -> Sequence[SingleUseBatch]:
    return session.scalars(
        select(SingleUseBatch)
        .where(scope(SingleUseBatch.account_id), SingleUseBatch.result.is_not(None))
        .order_by(SingleUseBatch.id)
    ).all()


def kept_answers(session: Session, scope: Scope, after_id: int = 0) -> Sequence[tuple[int, str]]:
    """(ID, stored body) of every answer kept for an Idempotency-Key retry in the scope, with an
    ID above `after_id`."""
    rows = session.execute(
        select(IdempotencyRecord.id, IdempotencyRecord.response_body).where(
            scope(IdempotencyRecord.account_id),
            IdempotencyRecord.response_status != 0,
            IdempotencyRecord.id > after_id,
        )
    )
    return [(row[0], row[1]) for row in rows]


def kept_answer(session: Session, record_id: int) -> IdempotencyRecord | None:
    return session.get(IdempotencyRecord, record_id)
