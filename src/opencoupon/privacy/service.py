"""One person's data (GDPR right of access and right to erasure), within the caller's tenancy.

A person is named by an email address and optionally a phone number: every coupon session,
loyalty holder, directory user and email/SMS send whose email (any letter case) or phone matches
is theirs. Export lists those rows; erase empties their personal fields in one transaction and
keeps what the books and the exactly-once guarantees rest on: sessions, validations and their
counts, validation values, balances, the ledger, statistics, IDs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from opencoupon.coupons.schemas import STANDARD_CLAIM_FIELDS
from opencoupon.coupons.sessions import session_path
from opencoupon.directories import service as directories
from opencoupon.directories.schemas import DirectoryUserCreate
from opencoupon.directories.service import MEMBER_SOURCE as DIRECTORY_SOURCE
from opencoupon.distribution import service as distribution
from opencoupon.distribution.tasks import ERASED_NOT_SENT
from opencoupon.errors import ApiError, bad_value, missing
from opencoupon.events import service as events
from opencoupon.kit import idempotency
from opencoupon.kit.crypto import ERASED_PASSWORD
from opencoupon.kit.dates import fmt, fmt_date
from opencoupon.kit.endpoint import ApiContext
from opencoupon.loyalty.schemas import HolderIn
from opencoupon.loyalty.service import holder_path
from opencoupon.models import (
    Campaign,
    CouponSession,
    Directory,
    DirectoryUser,
    DistributionSend,
    Event,
    LoyaltyCard,
    LoyaltyHolder,
    PushFanout,
)
from opencoupon.privacy import repository as repo
from opencoupon.privacy.schemas import PersonRef
from opencoupon.push.service import PREFIX as PUSH_PREFIX
from opencoupon.push.service import page_path as push_page_path
from opencoupon.singleuse import batches
from opencoupon.webhooks import signing
from opencoupon.worker import queue

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^[0-9]{6,15}$")
# A leading + is dropped too: a form-encoded "+44…" arrives as " 44…".
_PHONE_SEPARATORS = re.compile(r"[\s().+-]")
INVALID_EMAIL = ApiError(305, "Email address is not valid.")

# What erased free text and unique columns hold instead (the password marker: kit.crypto).
ERASED = "[erased]"
# Keys of stored JSON (event data, kept answers) that hold a person's details: every field a
# person's record takes in (a loyalty holder's address, zip and custom_1…custom_8, which its v4
# answer repeats; a directory user's; a claim's), and how other answers and events name them.
PERSONAL_KEYS = frozenset(
    {
        *HolderIn.model_fields,
        *DirectoryUserCreate.model_fields,
        *STANDARD_CLAIM_FIELDS,
        "gender",
        "birthday",
        "custom_fields",
        "recipient",
        "recipient_name",
    }
    - {"password"}  # never in an answer or event; not a detail of the person either
)
_EMAIL_KEYS = ("email", "recipient")
_PHONE_KEYS = ("phone", "recipient")
# How answers name a coupon session by its code (a link, a session's data, a batch result).
_SESSION_CODE_KEYS = ("single_use_code", "session", "couponsession")
PENDING_SENDS = ("queued", "retrying")
# IDs of one kind named in a privacy_erased event at most.
ERASED_EVENT_IDS = 1000
KINDS = (
    "coupon_sessions",
    "loyalty_users",
    "directory_users",
    "sends",
    "push_notifications",
    "push_subscriptions",
    "events",
    "webhook_attempts",
    "singleuse_batches",
    "kept_answers",
)


@dataclass(frozen=True)
class Person:
    email: str  # lower-cased
    phone: str  # digits only; "" when not given
    # As typed (trimmed): SQLite's lower() folds ASCII letters only, so a stored "ZOË@…" is found
    # by lower(<as typed>), not by Python's "zoë@…".
    typed_email: str = ""


def bare_phone(raw: str) -> str:
    return _PHONE_SEPARATORS.sub("", raw)


def person_of(req: PersonRef) -> Person:
    """The person named by the request: 200 without an email, 305 for a malformed one."""
    typed = (req.email or "").strip()
    email = typed.lower()
    if not email:
        raise missing("email")
    if len(email) > 254 or not EMAIL.match(email):
        raise INVALID_EMAIL
    typed_phone = (req.phone or "").strip()
    phone = bare_phone(typed_phone)
    # Separators alone ("+", "--") are no phone: refused, not taken as none given.
    if (phone or typed_phone) and not PHONE.match(phone):
        raise bad_value("phone", "6 to 15 digits, with an optional leading + and separators.")
    return Person(email, phone, typed)


@dataclass
class Found:
    """The person's rows within the caller's tenancy."""

    sessions: Sequence[tuple[CouponSession, Campaign]]
    holders: Sequence[tuple[LoyaltyHolder, LoyaltyCard | None]]
    users: Sequence[tuple[DirectoryUser, Directory]]
    sends: Sequence[DistributionSend]

    # Built once: every event of an export or erasure is checked against them.
    @cached_property
    def session_codes(self) -> list[str]:
        return [row.code for row, _ in self.sessions]

    @cached_property
    def session_code_set(self) -> frozenset[str]:
        return frozenset(self.session_codes)

    @cached_property
    def holder_ids(self) -> list[int]:
        return [holder.id for holder, _ in self.holders]

    @cached_property
    def holder_id_texts(self) -> frozenset[str]:
        return frozenset(str(holder_id) for holder_id in self.holder_ids)

    @cached_property
    def user_ids(self) -> frozenset[str]:
        return frozenset(f"reg_{user.id}" for user, _ in self.users)

    def id_texts(self) -> list[str]:
        """How events name these rows: `"user": "reg_7"`, a holder object's `"ID": "12"`, a
        points or reward event's `"user": "12"`."""
        texts = [f'"reg_{user.id}"' for user, _ in self.users]
        texts += [f'"ID": "{holder_id}"' for holder_id in self.holder_ids]
        return texts + [f'"user": "{holder_id}"' for holder_id in self.holder_ids]


def find(ctx: ApiContext, person: Person, *, for_erasure: bool = False) -> Found:
    session, scope = ctx.session, ctx.scope
    email, typed, phone = person.email, person.typed_email, person.phone
    return Found(
        sessions=repo.coupon_sessions(session, scope, email, typed, phone),
        holders=repo.loyalty_holders(session, scope, email, typed, phone),
        users=repo.directory_users(session, scope, email, typed, phone),
        sends=repo.sends(session, scope, email, typed, phone, lock=for_erasure),
    )


@dataclass(frozen=True)
class Idents:
    """Emails (lower-cased) and phones (digits) that are a person's."""

    emails: frozenset[str]
    phones: frozenset[str]

    def is_one(self, value: str) -> bool:
        """Whether the whole value (trimmed, any letter case; a phone by its digits) is one."""
        text = value.strip()
        if not text:
            return False
        if text.lower() in self.emails:
            return True
        digits = bare_phone(text)
        return digits.isdigit() and digits in self.phones


def _text(value: Any) -> str:
    """A string as it is, anything else as "" (an update result's `session` is an object)."""
    return value if isinstance(value, str) else ""


class Scrubber:
    """Finds and blanks the person's details in free text and in stored JSON.

    Two sets of details. `claim`: the email (and phone) the request named; only these decide
    that a row or an object found elsewhere is theirs, and only as a whole value. `own`: those
    plus every email and phone their own rows hold (a row matched by phone may hold another
    email): removed only inside their own rows and the events about those rows (by ID), as whole
    values or, in text, as whole addresses and numbers. Names are only blanked under a personal
    key or, in free text of their own sends, as whole words."""

    def __init__(self, person: Person, found: Found) -> None:
        emails = {person.email}
        phones = {person.phone} if person.phone else set()
        names: set[str] = set()
        # As the rows write the request's phone, for the text search of events.
        self._typed_phones: set[str] = set()
        details: list[tuple[str, str]] = []
        for row, _ in found.sessions:
            details.append((row.email, row.phone))
            names |= {row.firstname, row.lastname}
        for holder, _ in found.holders:
            details.append((holder.email, holder.phone))
            names |= {holder.first_name, holder.last_name}
        for user, _ in found.users:
            details.append((user.email, user.phone))
            names |= {user.first_name, user.last_name}
        for send in found.sends:
            names |= {send.recipient_name, send.firstname}
        for email, phone in details:
            emails.add(email.strip().lower())
            digits = bare_phone(phone)
            # Shorter numbers would match inside unrelated figures.
            if len(digits) >= 6 and digits.isdigit():
                phones.add(digits)
                if person.phone and digits == person.phone:
                    self._typed_phones.add(phone.strip().lower())
        self.claim = Idents(frozenset({person.email}), frozenset({person.phone} if person.phone else set()))
        self.own = Idents(frozenset(e for e in emails if e), frozenset(phones))
        self.names = {n.strip() for n in names if len(n.strip()) >= 2}
        self._pattern = self._compile(self.own)
        self._names = (
            re.compile(
                r"\b(?:" + "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True)) + r")\b",
                re.IGNORECASE,
            )
            if self.names
            else None
        )

    @staticmethod
    def _compile(idents: Idents) -> re.Pattern[str] | None:
        """Whole addresses and numbers only: not `ann@d.com` inside `joann@d.com` or
        `ann@d.com.au`, not `5551234` inside `8855512349` (a sentence's full stop may follow)."""
        parts = [
            rf"(?<![\w.+-]){re.escape(email)}(?![\w-]|\.[\w-])"
            for email in sorted(idents.emails, key=len, reverse=True)
        ]
        parts += [
            r"(?<![\d+])\+?" + r"[\s().-]{0,2}".join(phone) + r"(?!\d)"
            for phone in sorted(idents.phones, key=len, reverse=True)
        ]
        return re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def search_texts(self) -> list[str]:
        """What to look for in stored JSON text (lower-cased), as json.dumps writes it too: the
        request's email and phone (also as the person's rows write that phone)."""
        found: set[str] = set()
        for text in [*self.claim.emails, *self.claim.phones, *self._typed_phones]:
            if text:
                found |= {text.lower(), json.dumps(text.lower())[1:-1]}
        return sorted(found)

    def text(self, value: str, *, names: bool = False) -> str:
        """Free text of the person's own rows: their addresses and numbers (and names) blanked."""
        if self._pattern is not None:
            value = self._pattern.sub(ERASED, value)
        if names and self._names is not None:
            value = self._names.sub(ERASED, value)
        return value

    def value(self, value: str, *, theirs: bool) -> str:
        """A single value (customid, a CSV cell): blanked when it is wholly their email or phone
        (in their own rows also where it holds one as a whole address or number)."""
        if theirs:
            return ERASED if self.own.is_one(value) else self.text(value)
        return ERASED if self.claim.is_one(value) else value

    def _claims(self, data: dict[str, Any]) -> bool:
        """An object (found by text, not by ID) is theirs when its email or phone is the request's."""
        for key in _EMAIL_KEYS:
            item = data.get(key)
            if isinstance(item, str) and item.strip().lower() in self.claim.emails:
                return True
        for key in _PHONE_KEYS:
            item = data.get(key)
            if isinstance(item, str) and self.claim.phones and bare_phone(item) in self.claim.phones:
                return True
        return False

    def json(self, value: Any, *, theirs: bool = False, codes: frozenset[str] = frozenset()) -> Any:
        """`value` with the person's details blanked: every personal key of an object that is
        theirs (`theirs`: the whole value is, by ID; or an object whose email or phone is the
        request's, and what it holds) and their email or phone in other strings (see `value`).
        An object naming one of `codes` (their session codes) as its session is theirs by ID."""
        return self._json(value, blank=theirs, by_id=theirs, codes=codes)

    def _json(self, value: Any, *, blank: bool, by_id: bool, codes: frozenset[str]) -> Any:
        if isinstance(value, dict):
            if not by_id and any(_text(value.get(key)) in codes for key in _SESSION_CODE_KEYS):
                blank = by_id = True
            mine = blank or self._claims(value)
            out: dict[str, Any] = {}
            for key, item in value.items():
                if mine and key in PERSONAL_KEYS:
                    out[key] = {} if isinstance(item, dict) else "" if isinstance(item, str) else item
                else:
                    out[key] = self._json(item, blank=mine, by_id=by_id, codes=codes)
            return out
        if isinstance(value, list):
            return [self._json(item, blank=blank, by_id=by_id, codes=codes) for item in value]
        if isinstance(value, str):
            return self.value(value, theirs=by_id)
        return value


# --- export ---------------------------------------------------------------------------------------


def export(ctx: ApiContext, person: Person) -> dict[str, Any]:
    found = find(ctx, person)
    runtime = ctx.runtime
    validations: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in repo.validations(ctx.session, [row.id for row, _ in found.sessions]):
        validations[item.session_id].append(
            {
                "ordinal": item.ordinal,
                "method": item.method,
                "validation_value": _money(item.validation_value),
                "created_at": fmt(item.created_at),
            }
        )
    ledger: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in repo.ledger(ctx.session, found.holder_ids):
        ledger[entry.holder_id].append(
            {
                "unit": entry.unit,
                "delta": entry.delta,
                "balance_after": entry.balance_after,
                "kind": entry.kind,
                "source": entry.source,
                "created_at": fmt(entry.created_at),
            }
        )
    codes = {row.id: row.code for row, _ in found.sessions}
    scrubber = Scrubber(person, found)
    about = _candidate_events(ctx, person, found, scrubber)
    return {
        "email": person.email,
        "phone": person.phone or None,
        "coupon_sessions": [
            _session_out(ctx, row, campaign, validations[row.id]) for row, campaign in found.sessions
        ],
        "loyalty_users": [
            {
                "id": holder.id,
                "code": holder.short_code,
                "account_id": holder.account_id,
                "loyalty_card_id": holder.card_id,
                "loyalty_card_name": card.name if card else None,
                "url": runtime.url(holder_path(card, holder)) if card else None,
                "first_name": holder.first_name,
                "last_name": holder.last_name,
                "email": holder.email,
                "phone": holder.phone,
                "gender": holder.gender,
                "birthday": fmt_date(holder.birthday) or None,
                "city": holder.city,
                "custom_fields": holder.custom_fields or {},
                "points": holder.points,
                "stamps": holder.stamps,
                "completed_cards": holder.cycle,
                "voided": holder.voided,
                "last_collected_at": fmt(holder.last_collected_at) or None,
                "created_at": fmt(holder.created_at),
                "ledger": ledger[holder.id],
            }
            for holder, card in found.holders
        ],
        "directory_users": [
            # The v4 directory call's user (never the password), and whose it is.
            {
                **directories.user_v4(directory, user, ctx.now),
                "account_id": user.account_id,
                "directory_name": directory.name,
            }
            for user, directory in found.users
        ],
        "sends": [
            {
                "id": f"snd_{send.id}",
                "account_id": send.account_id,
                "channel": send.channel,
                "campaign": f"cam_{send.campaign_id}" if send.campaign_id else None,
                "directory": f"dir_{send.directory_id}" if send.directory_id else None,
                "couponsession": codes.get(send.session_id or 0),
                "recipient": send.recipient,
                "recipient_name": send.recipient_name,
                "subject": send.subject,
                "body": send.body,
                "status": send.status,
                "created_at": fmt(send.created_at),
                "sent_at": fmt(send.sent_at) or None,
                "failed_at": fmt(send.failed_at) or None,
            }
            for send in found.sends
        ],
        "push_notifications": [
            # Pushes sent to this person alone (their text was written for them).
            {
                "id": f"{PUSH_PREFIX}{fanout.id}",
                "account_id": fanout.account_id,
                "target": fanout.target_kind,
                "target_id": fanout.target_key,
                "title": fanout.title,
                "message": fanout.message,
                # The page the notification opened (its stored form is a template per target).
                "url": runtime.url(push_page_path(fanout.url, fanout.target_key)) if fanout.url else None,
                "status": fanout.status,
                "created_at": fmt(fanout.created_at),
            }
            for fanout in repo.push_fanouts(ctx.session, ctx.scope, found.session_codes, found.holder_ids)
        ],
        "push_subscriptions": [
            {
                "target": sub.target_kind,
                "target_id": sub.target_key,
                # The endpoint URL is the browser's push address (a capability): its host says
                # which push service, the rest would let anyone push to the device.
                "push_service": urlsplit(sub.endpoint).hostname or "",
                "created_at": fmt(sub.created_at),
                "last_sent_at": fmt(sub.last_sent_at) or None,
            }
            for sub in repo.push_subscriptions(ctx.session, ctx.scope, found.session_codes, found.holder_ids)
        ],
        "events": [
            {"id": event.public_id, "type": event.type, "created_at": fmt(event.created_at)}
            for event in about
            if _event_is_theirs(event, found, scrubber)
        ],
    }


def _money(value: Any) -> str | None:
    return None if value is None else f"{value:.2f}"


def _session_out(
    ctx: ApiContext, row: CouponSession, campaign: Campaign, validations: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "couponsession": row.code,
        "sequenceid": row.id,
        "account_id": row.account_id,
        "campaign": f"cam_{campaign.id}",
        "campaign_name": campaign.name,
        "url": ctx.url(session_path(campaign, row)),
        "source": row.source,
        "link_status": row.link_status,
        "firstname": row.firstname,
        "lastname": row.lastname,
        "email": row.email,
        "phone": row.phone,
        "birthday": fmt_date(row.birthday) or None,
        "custom_fields": row.custom_fields or {},
        "consent": row.consent,
        "customid": row.customid,
        "claimtype": row.claimtype,
        "opened_at": fmt(row.opened_at) or None,
        "claimed_at": fmt(row.claimed_at) or None,
        "validated_at": fmt(row.validated_at) or None,
        "voided_at": fmt(row.voided_at) or None,
        "removed_at": fmt(row.removed_at) or None,
        "expires_at": fmt(row.expires_at) or None,
        "created_at": fmt(row.created_at),
        "validation_count": row.validation_count,
        "validation_value": _money(row.validation_value),
        "validations": validations,
    }


def _event_data(event: Event) -> Any:
    try:
        return json.loads(event.data or "{}")
    except ValueError:
        return {}


def _refers_to(event: Event, found: Found) -> bool:
    """Whether the event is about one of the person's rows by ID, whatever its type (its details
    then go, whoever they were matched by)."""
    if event.session and event.session in found.session_code_set:
        return True
    data = _event_data(event)
    if not isinstance(data, dict):
        return False
    user = data.get("user")
    if event.type.startswith("directory_"):
        return isinstance(user, str) and user in found.user_ids
    if event.type.startswith("loyalty_"):
        holders = found.holder_id_texts
        if isinstance(user, dict):
            return str(user.get("ID")) in holders
        return isinstance(user, str) and user in holders
    return False


def _event_is_theirs(event: Event, found: Found, scrubber: Scrubber) -> bool:
    data = _event_data(event)
    return _refers_to(event, found) or scrubber.json(data) != data


# --- erase ----------------------------------------------------------------------------------------


@dataclass
class Erased:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Per account: the public IDs of its rows that changed (the privacy_erased event's data).
    touched: dict[int, dict[str, list[Any]]] = field(default_factory=dict)

    def add(self, kind: str, account_id: int, public_id: Any) -> None:
        self.counts[kind] += 1
        rows = self.touched.setdefault(account_id, {})
        rows.setdefault(kind, []).append(public_id)


@dataclass(frozen=True)
class KeptAnswer:
    """An answer kept for an Idempotency-Key retry that may show the person, opened."""

    id: int
    stored: str  # as stored (encrypted): unchanged when the erasure rewrites it
    answer: Any


@dataclass
class KeptAnswers:
    """What `kept_answers` found, and the highest record ID it looked at: answers kept after it
    (while the erasure waited for its write transaction) are opened by the erasure itself."""

    found: list[KeptAnswer]
    last_id: int


def kept_answers(ctx: ApiContext, person: Person, after_id: int = 0) -> KeptAnswers:
    """The kept answers (encrypted at rest) that quote the person's email or phone, opened and
    read. Run in a read transaction before the erasure's write transaction: opening every kept
    answer of a busy account takes seconds (about 37 µs each), and on SQLite no one else could
    write meanwhile. What is theirs in each is decided by `erase`, on the parsed answer."""
    quoting = Scrubber._compile(Idents(frozenset({person.email}), frozenset({person.phone} - {""})))
    assert quoting is not None  # an email is always given
    found: list[KeptAnswer] = []
    last_id = after_id
    for record_id, stored in repo.kept_answers(ctx.session, ctx.scope, after_id):
        last_id = max(last_id, record_id)
        answer = _quoting_answer(ctx, quoting, stored)
        if answer is not None:
            found.append(KeptAnswer(record_id, stored, answer))
    return KeptAnswers(found, last_id)


def _quoting_answer(ctx: ApiContext, quoting: re.Pattern[str], stored: str) -> Any:
    """The kept answer `stored`, parsed, when it quotes the person; else None."""
    text = idempotency.opened(ctx.runtime.keyring, stored)
    if quoting.search(text) is None and not ("\\u" in text and _quotes_escaped(quoting, text)):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # not an answer this code kept


def _quotes_escaped(quoting: re.Pattern[str], text: str) -> bool:
    """Letters beyond ASCII are kept escaped (json.dumps), in whatever case they were typed."""
    try:
        return quoting.search(json.dumps(json.loads(text), ensure_ascii=False)) is not None
    except ValueError:
        return False


def erase(ctx: ApiContext, person: Person, kept: KeptAnswers | None = None) -> dict[str, int]:
    """Blank the person's details everywhere the caller reaches, in the call's one transaction
    (and in the kept answers: those `kept_answers` found before it, and those kept since, opened
    here). Only rows that changed are counted, so erasing again answers zero counts."""
    found = find(ctx, person, for_erasure=True)
    scrubber = Scrubber(person, found)
    now = ctx.now
    done = Erased()
    # Events first: which are theirs is decided by the rows' IDs, and their sessions are found
    # again by their details (repo.events), before those rows change.
    _erase_events(ctx, person, found, scrubber, done)
    sessions: list[tuple[int, dict[str, Any]]] = []
    for row, _ in found.sessions:
        erased = _erased_session(row, scrubber, now)
        if erased is not None:
            sessions.append((row.id, erased))
            done.add("coupon_sessions", row.account_id, row.code)
    repo.write_rows(ctx.session, CouponSession, sessions)
    for holder, _ in found.holders:
        if _erase_holder(holder, now):
            done.add("loyalty_users", holder.account_id, str(holder.id))
    for user, _ in found.users:
        if _erase_user(user, now):
            done.add("directory_users", user.account_id, f"reg_{user.id}")
    for send in found.sends:
        if _erase_send(send, scrubber, now):
            done.add("sends", send.account_id, f"snd_{send.id}")
    for fanout in repo.push_fanouts(ctx.session, ctx.scope, found.session_codes, found.holder_ids):
        if _erase_push(fanout, scrubber):
            done.add("push_notifications", fanout.account_id, f"{PUSH_PREFIX}{fanout.id}")
    for sub in repo.push_subscriptions(ctx.session, ctx.scope, found.session_codes, found.holder_ids):
        # A subscription is the person's device: it goes, and pushes to it stop.
        ctx.session.delete(sub)
        done.counts["push_subscriptions"] += 1
    _erase_send_jobs(ctx, found, scrubber)
    _erase_batches(ctx, found, scrubber, done)
    earlier = kept or KeptAnswers([], 0)
    since = kept_answers(ctx, person, earlier.last_id)  # kept while this call waited to write
    _erase_kept_answers(ctx, person, found, [*earlier.found, *since.found], scrubber, done)
    ctx.session.flush()
    for account_id, rows in done.touched.items():
        events.emit(ctx.session, account_id, "privacy_erased", erased_event_data(rows, now))
    return done.counts


def erased_event_data(rows: dict[str, list[Any]], now: dt.datetime) -> dict[str, Any]:
    """The privacy_erased event's data: the first ERASED_EVENT_IDS IDs of each kind (a person's
    10,000 rows made a 530 KB event, sent to every receiver), how many there were, and whether
    a list was cut."""
    data: dict[str, Any] = {kind: ids[:ERASED_EVENT_IDS] for kind, ids in rows.items()}
    data["counts"] = {kind: len(ids) for kind, ids in rows.items()}
    data["truncated"] = any(len(ids) > ERASED_EVENT_IDS for ids in rows.values())
    data["erased_date_utc"] = fmt(now)
    return data


def _erased_session(row: CouponSession, scrubber: Scrubber, now: dt.datetime) -> dict[str, Any] | None:
    """The session's columns once erased; None when that changes nothing. Written by the caller
    for all of the person's sessions at once (a busy person has thousands)."""
    values: dict[str, Any] = {
        "firstname": "",
        "lastname": "",
        "email": "",
        "phone": "",
        "birthday": None,
        "custom_fields": {},
        # The browser cookie that reopens this session on the person's device. A directory
        # member's session keeps its `reg_<id>`: no cookie, it names the member's (erased) row,
        # whose payment status the counter pages still ask; without it a cancelled member's
        # coupon validated again.
        "device_id": row.device_id if row.source == DIRECTORY_SOURCE else "",
        # The business's own reference stays, unless it holds the person's email or phone.
        "customid": scrubber.value(row.customid, theirs=True),
    }
    if tuple(values.values()) == _snapshot(row, tuple(values)):
        return None
    return {**values, "updated_at": now}


def _erase_holder(holder: LoyaltyHolder, now: dt.datetime) -> bool:
    before = _snapshot(holder, _HOLDER_FIELDS)
    holder.first_name = holder.last_name = holder.email = holder.phone = ""
    holder.gender = holder.city = ""
    holder.birthday = None
    holder.custom_fields = {}
    if holder.password_hash is not None:
        holder.password_hash = ERASED_PASSWORD
    if _snapshot(holder, _HOLDER_FIELDS) == before:
        return False
    holder.updated_at = now
    return True


def _erase_user(user: DirectoryUser, now: dt.datetime) -> bool:
    before = _snapshot(user, _USER_FIELDS)
    # Unique per directory and never empty: a marker that no real address can be.
    user.email = f"erased-{user.id}@invalid"
    user.first_name = user.last_name = user.phone = ""
    user.address = user.zip = user.city = ""
    user.custom_1 = user.custom_2 = user.custom_3 = ""
    user.birth_date = None
    user.password_hash = ERASED_PASSWORD
    if _snapshot(user, _USER_FIELDS) == before:
        return False
    user.updated_at = now
    return True


def _erase_push(fanout: PushFanout, scrubber: Scrubber) -> bool:
    """A push to this one person: its words lose their details, as a send's do."""
    before = (fanout.title, fanout.message, fanout.url)
    fanout.title = scrubber.text(fanout.title, names=True)
    fanout.message = scrubber.text(fanout.message, names=True)
    fanout.url = scrubber.text(fanout.url, names=True)
    return (fanout.title, fanout.message, fanout.url) != before


def _erase_send(send: DistributionSend, scrubber: Scrubber, now: dt.datetime) -> bool:
    before = _snapshot(send, _SEND_FIELDS)
    # An empty recipient_key also tells the worker of a send in flight (`sending`) that the
    # recipient was erased meanwhile: it records no provider answer and does not retry
    # (distribution.tasks._finish).
    send.recipient = send.recipient_key = send.recipient_name = send.firstname = ""
    # It holds the recipient's address; without it a later unique send may reach them again,
    # which an erased person cannot be protected from anyway (nobody knows them any more).
    send.dedup_key = None
    send.subject = scrubber.text(send.subject, names=True)
    send.body = scrubber.text(send.body, names=True)
    send.provider_response = scrubber.text(send.provider_response, names=True)
    send.last_error = scrubber.text(send.last_error, names=True)
    if send.status in PENDING_SENDS:
        # Not yet handed to the provider: it is not sent (the worker skips failed sends).
        send.status = "failed"
        send.failed_at = now
        send.next_attempt_at = None
        send.last_error = ERASED_NOT_SENT
    if _snapshot(send, _SEND_FIELDS) == before:
        return False
    send.updated_at = now
    return True


def _candidate_events(ctx: ApiContext, person: Person, found: Found, scrubber: Scrubber) -> Sequence[Event]:
    """Events that may be about the person (of their records by ID, or quoting their details);
    the caller decides from each event's data what really is theirs."""
    return repo.events(
        ctx.session,
        ctx.scope,
        email=person.email,
        typed=person.typed_email,
        phone=person.phone,
        texts=scrubber.search_texts(),
        id_texts=found.id_texts(),
    )


def _erase_events(ctx: ApiContext, person: Person, found: Found, scrubber: Scrubber, done: Erased) -> None:
    """Event data and the webhook bodies built from it: retries and replays send the blanked
    body from now on. What receivers already got cannot be recalled (the privacy_erased event
    tells them which rows to forget)."""
    candidates = _candidate_events(ctx, person, found, scrubber)
    changed: list[int] = []
    texts: list[tuple[int, dict[str, Any]]] = []
    bodies: list[tuple[int, str]] = []
    for event in candidates:
        data = _event_data(event)
        clean = scrubber.json(data, theirs=_refers_to(event, found))
        if clean == data:
            continue
        text = json.dumps(clean, default=str)
        texts.append((event.id, {"data": text}))
        # The body as the webhook dispatch builds it, from the blanked data.
        erased = Event(
            public_id=event.public_id,
            type=event.type,
            created_at=event.created_at,
            campaign=event.campaign,
            session=event.session,
            data=text,
        )
        bodies.append((event.id, signing.build_body(erased)))
        changed.append(event.id)
        done.add("events", event.account_id, event.public_id)
    repo.write_rows(ctx.session, Event, texts)
    repo.set_payloads(ctx.session, bodies)
    done.counts["webhook_attempts"] += repo.clear_attempt_responses(ctx.session, changed)


def _erase_send_jobs(ctx: ApiContext, found: Found, scrubber: Scrubber) -> None:
    """The outbox jobs of their sends keep the last attempt's error, which may quote the
    recipient (an SMTP or SMS provider's answer)."""
    payloads = [queue.encode({"send_id": send.id}) for send in found.sends]
    for job in repo.send_jobs(ctx.session, (distribution.EMAIL_JOB, distribution.SMS_JOB), payloads):
        job.last_error = scrubber.text(job.last_error, names=True)


def _erase_kept_answers(
    ctx: ApiContext,
    person: Person,
    found: Found,
    kept: Sequence[KeptAnswer],
    scrubber: Scrubber,
    done: Erased,
) -> None:
    """A retry with the same Idempotency-Key then replays the answer with the person's details
    blanked (as in stored events: objects whose email or phone is theirs, and values that are
    wholly their email or phone). An object of one of their sessions (by code, as for the batch
    CSVs) is theirs by ID: its customid loses their address inside a longer reference too, as
    the live session's does. An answer kept again since it was read is read again."""
    quoting = Scrubber._compile(Idents(frozenset({person.email}), frozenset({person.phone} - {""})))
    assert quoting is not None
    for item in kept:
        record = repo.kept_answer(ctx.session, item.id)
        if record is None:
            continue
        answer = item.answer
        if record.response_body != item.stored:
            answer = _quoting_answer(ctx, quoting, record.response_body)
            if answer is None:
                continue
        clean = scrubber.json(answer, codes=found.session_code_set)
        if clean != answer:
            record.response_body = idempotency.sealed(ctx.runtime.keyring, json.dumps(clean))
            done.counts["kept_answers"] += 1


def _erase_batches(ctx: ApiContext, found: Found, scrubber: Scrubber, done: Erased) -> None:
    """Link lists of finished single-use batches (CSV kept for download, 7 days): only the
    customid column can hold a person's detail, when the business used their email or phone as
    its reference, and only a whole value is theirs (codes are never touched). A link of the
    person's own sessions (by code) also loses their address inside a longer reference."""
    codes = set(found.session_codes)
    for batch in repo.finished_batches(ctx.session, ctx.scope):
        if batch.result is None:
            continue
        text = batches.unpack(batch.result)
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or "customid" not in rows[0]:
            continue
        header = rows[0]
        customid, code = header.index("customid"), header.index("single_use_code")
        changed = False
        for row in rows[1:]:
            if len(row) <= max(customid, code) or not row[customid]:
                continue
            clean = scrubber.value(row[customid], theirs=row[code] in codes)
            if clean != row[customid]:
                row[customid] = clean
                changed = True
        if changed:
            out = io.StringIO()
            csv.writer(out).writerows(rows)
            batch.result = batches.pack(out.getvalue())
            batch.updated_at = ctx.now
            done.add("singleuse_batches", batch.account_id, batches.public_id(batch))


_HOLDER_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "gender",
    "city",
    "birthday",
    "custom_fields",
    "password_hash",
)
_USER_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "address",
    "zip",
    "city",
    "custom_1",
    "custom_2",
    "custom_3",
    "birth_date",
    "password_hash",
)
_SEND_FIELDS = (
    "recipient",
    "recipient_key",
    "recipient_name",
    "firstname",
    "dedup_key",
    "subject",
    "body",
    "provider_response",
    "last_error",
    "status",
)


def _snapshot(row: Any, names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in names)
