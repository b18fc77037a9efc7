"""Rules of single-use links: one personal link at a time, up to 100,000 in one transaction, and
removal. Used by the API and by the `opencoupon singleuse` commands, so both behave the same."""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencoupon.accounts.service import normalize_email
from opencoupon.coupons.sessions import new_session
from opencoupon.errors import ApiError, bad_date, bad_value, invalid_character, missing
from opencoupon.events import service as events
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.dates import LAST_YEAR, fmt
from opencoupon.models import Campaign, CouponSession
from opencoupon.singleuse import repository
from opencoupon.singleuse.codes import SESSION_ALPHABET, alphabet_for, random_strings

MAX_AMOUNT = 100_000
DEFAULT_AMOUNT = 10
MIN_CODE_LENGTH = 10
MAX_CODE_LENGTH = 25
CUSTOM_CODE_MAX = 64  # coupon_sessions.custom_validation_code
# Automated codes of one shape (prefix, length, type) may take at most this share of their code
# space in a campaign, so a random guess hits an issued code at most once in 100,000 tries (staff
# validate by typing the code). It also keeps drawing fresh codes fast.
GUESS_FACTOR = 100_000
# Rows per executemany / COPY: bounds the memory of the driver's parameter conversion and
# lets the CLI show progress.
INSERT_CHUNK = 10_000
AUTO_VALCODE_LENGTH = 12
# A batch's singleuse_created event lists its codes up to this many (one event per batch).
EVENT_CODES_LIMIT = 1000
MAX_CLASH_RETRIES = 5

CREATED_ACTION = "single_use_code_created"
BATCH_ACTION = "multiple_single_use_codes_created"
REMOVED_ACTION = "single_use_code_removed"

EXPIRY_FORMATS = ["%Y-%m-%d:%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
EXPIRY_SHOWN = "yyyy-MM-dd:HH:mm:ss"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Names and references: no control characters (C0, C1), no bidirectional overrides (they can make
# a name on the coupon page read as another), no line separators, no zero-width space or BOM.
# Joiners stay: some scripts (Persian, Indic) need them in names.
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]*")
# A code staff type at the counter: nothing invisible at all (joiners, soft hyphen too).
_TYPABLE = re.compile(
    r"[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*"
)
# All used with fullmatch: `$` also matches before a final line break ("AB\n" passed as a prefix).
_PREFIX = re.compile(r"[!-~]*")
_SESSION_CODE = re.compile(r"[A-Za-z0-9]+")
_DIGITS = re.compile(r"[0-9]+")
# More digits than any bound here needs: int() of thousands of digits is refused (a 500).
_MAX_DIGITS = 9

_PREFILL_LIMITS = {"firstname": 100, "lastname": 100, "email": 254, "phone": 40, "customid": 200}


def _whole(text: str) -> bool:
    """Digits only, and few enough to be a count here (5,000 digits were a 500 in int())."""
    return bool(_DIGITS.fullmatch(text)) and len(text.lstrip("0")) <= _MAX_DIGITS


def campaign_not_found() -> ApiError:
    return ApiError(502, "Campaign ID not found.")


def link_not_found() -> ApiError:
    return ApiError(513, "Single use code not found.")


class _CodeClash(Exception):
    """A generated code met one inserted by someone else after our pre-check."""


def resolve_campaign(session: Session, scope: ColumnElement[bool] | None, raw: str) -> Campaign:
    """`cam_12` -> the campaign, within `scope` (None: any account, for the CLI)."""
    campaign_id = ids.parse_public_id(raw, "cam_", "campaign", campaign_not_found())
    campaign = (
        repository.campaign_by_id(session, campaign_id)
        if scope is None
        else repository.campaign_in_scope(session, scope, campaign_id)
    )
    if campaign is None:
        raise campaign_not_found()
    return campaign


# --- one link -------------------------------------------------------------------------------


@dataclass
class Prefill:
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    phone: str = ""
    customid: str = ""


def clean_prefill(
    firstname: str | None, lastname: str | None, email: str | None, phone: str | None, customid: str | None
) -> Prefill:
    values = {
        "firstname": firstname or "",
        "lastname": lastname or "",
        "email": normalize_email(email) if email else "",
        "phone": phone or "",
        "customid": customid or "",
    }
    for name, value in values.items():
        if not _PRINTABLE.fullmatch(value):
            raise invalid_character(name)
        if len(value) > _PREFILL_LIMITS[name]:
            raise bad_value(name, f"At most {_PREFILL_LIMITS[name]} characters.")
    if values["email"] and not _EMAIL.match(values["email"]):
        raise ApiError(305, "Email address is not valid.")
    return Prefill(**values)


def parse_expiry(raw: str | None, now: dt.datetime) -> dt.datetime | None:
    """`yyyy-MM-dd:HH:mm:ss` (the vendor's) or `yyyy-MM-dd HH:mm:ss`, UTC; must lie ahead."""
    if raw is None or raw == "":
        return None
    text = raw.strip()
    for form in EXPIRY_FORMATS:
        try:
            value = dt.datetime.strptime(text, form)
        except ValueError:
            continue
        if value <= now:
            raise bad_value("expiry_date", "The date lies in the past.")
        if value.year > LAST_YEAR:
            raise bad_value("expiry_date", f"Use a date before the year {LAST_YEAR + 1}.")
        return value
    raise bad_date("expiry_date", EXPIRY_SHOWN)


def clean_custom_code(customvalcode: str | None, autovalcode: bool | None) -> str | None:
    code = customvalcode or ""
    if code and autovalcode:
        raise bad_value("customvalcode", "Use either customvalcode or autovalcode, not both.")
    if not code:
        return None
    if not _TYPABLE.fullmatch(code):
        raise invalid_character("customvalcode")
    if len(code) > CUSTOM_CODE_MAX:
        raise bad_value("customvalcode", f"At most {CUSTOM_CODE_MAX} characters.")
    return code


def _code_in_use() -> ApiError:
    return bad_value("customvalcode", "This custom validation code is already used in this campaign.")


@dataclass
class LinkResult:
    link: CouponSession
    created: bool


def create_link(
    session: Session,
    campaign: Campaign,
    prefill: Prefill,
    *,
    custom_code: str | None,
    autovalcode: bool,
    duplicate_check: bool,
    expires_at: dt.datetime | None,
    now: dt.datetime,
    base_url: str,
) -> LinkResult:
    """A personal link for one consumer, or (with duplicate_check) the one they already hold."""
    if duplicate_check and (prefill.email or prefill.phone or prefill.customid):
        # Two concurrent calls for the same person must not both miss each other's link.
        repository.lock_campaign(session, campaign)
        existing = repository.duplicate_link(
            session,
            campaign.id,
            email=prefill.email,
            phone=prefill.phone,
            customid=prefill.customid,
            now=utcnow(),
        )
        if existing is not None:
            return LinkResult(existing, created=False)
    if custom_code is not None and repository.custom_code_in_use(session, campaign.id, custom_code):
        raise _code_in_use()
    for _attempt in range(MAX_CLASH_RETRIES):
        code = custom_code
        if autovalcode:
            code = random_strings(1, AUTO_VALCODE_LENGTH, alphabet_for("alphanumeric"))[0]
        try:
            link = new_session(
                session,
                campaign,
                source=repository.SOURCE,
                customid=prefill.customid,
                custom_validation_code=code,
                firstname=prefill.firstname,
                lastname=prefill.lastname,
                email=prefill.email,
                phone=prefill.phone,
                expires_at=expires_at,
                now=now,
            )
        except IntegrityError:
            # new_session rolled back its savepoint: either the custom code was taken meanwhile
            # or (rarely) the short code clashed; only the first is the caller's fault.
            if custom_code is not None and repository.custom_code_in_use(session, campaign.id, custom_code):
                raise _code_in_use() from None
            continue
        events.emit(
            session,
            campaign.account_id,
            "singleuse_created",
            {**link_answer(base_url, campaign, link), "sequence_id": link.id, **_prefill_of(link)},
            campaign=f"cam_{campaign.id}",
            coupon_session=link.code,
        )
        return LinkResult(link, created=True)
    raise ApiError(300, "Could not draw a unique code; please retry.")


def _prefill_of(link: CouponSession) -> dict[str, str]:
    return {
        "firstname": link.firstname,
        "lastname": link.lastname,
        "email": link.email,
        "phone": link.phone,
        "status": link.link_status,
        "expiry_date": fmt(link.expires_at),
    }


def link_answer(base_url: str, campaign: Campaign, link: CouponSession) -> dict[str, Any]:
    """The vendor's top-level fields of singleuse/create (without the envelope)."""
    return _answer(base_url, campaign, link.code, link.short_code, link.custom_validation_code, link.customid)


def _answer(
    base_url: str, campaign: Campaign, code: str, short_code: str, custom_code: str | None, customid: str
) -> dict[str, Any]:
    """link_answer's fields from the link's values (a row, a held link, a link being written)."""
    return {
        "campaign": f"cam_{campaign.id}",
        "action": CREATED_ACTION,
        "single_use_code": code,
        "single_use_url": f"{base_url}/p/{campaign.code}/{code}",
        "widget_validation_code": short_code,
        "custom_validation_code": custom_code or "",
        "customid": customid,
    }


# --- many personal links (recipient imports) ------------------------------------------------


@dataclass
class LinkRequest:
    """One recipient's link, as create_link takes it (values already cleaned)."""

    prefill: Prefill
    custom_code: str | None = None
    autovalcode: bool = False


class RecipientRefused(Exception):
    """The recipient at `index` cannot have its link (`error` says why); nothing was created."""

    def __init__(self, index: int, error: ApiError) -> None:
        super().__init__(error.description)
        self.index = index
        self.error = error


@dataclass
class ImportedLink:
    answer: dict[str, Any]  # link_answer's fields and sequence_id
    created: bool


_KEY_COLUMNS = ("email", "phone", "customid")


@dataclass
class _NewLink:
    index: int
    rank: tuple[int, int]  # after every existing link, in the order of the requests
    answer: dict[str, Any] | None = None


def create_links(
    session: Session,
    campaign: Campaign,
    requests: Sequence[LinkRequest],
    *,
    duplicate_check: bool,
    expires_at: dt.datetime | None,
    now: dt.datetime,
    base_url: str,
) -> list[ImportedLink]:
    """One link per request, in the caller's transaction, as create_link makes them one by one
    (the same duplicate check, custom codes and events), written in bulk: a few queries for the
    whole list instead of several per link. RecipientRefused names the first request refused."""
    repository.lock_campaign(session, campaign)
    for _attempt in range(MAX_CLASH_RETRIES):
        try:
            with session.begin_nested():
                return _insert_links(
                    session, campaign, requests, duplicate_check, expires_at, now=now, base_url=base_url
                )
        except _CodeClash:
            continue  # a code inserted meanwhile by someone else: the savepoint is gone, draw again
    raise ApiError(300, "Could not draw unique codes; please retry.")


def _link_keys(prefill: Prefill) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in zip(_KEY_COLUMNS, (prefill.email, prefill.phone, prefill.customid), strict=True)
        if value
    ]


def _insert_links(
    session: Session,
    campaign: Campaign,
    requests: Sequence[LinkRequest],
    duplicate_check: bool,
    expires_at: dt.datetime | None,
    *,
    now: dt.datetime,
    base_url: str,
) -> list[ImportedLink]:
    # Who already holds a link: the campaign's live links (oldest first), then the links made
    # here for earlier requests, as create_link one by one would find them.
    held: dict[str, dict[str, Any]] = {name: {} for name in _KEY_COLUMNS}
    if duplicate_check:
        for name in _KEY_COLUMNS:
            values = {getattr(r.prefill, name) for r in requests} - {""}
            held[name] = repository.live_links_by(session, campaign.id, name, values, utcnow())
    wanted = {r.custom_code for r in requests if r.custom_code is not None}
    in_use = (
        repository.taken(session, campaign.id, "custom_validation_code", list(wanted)) if wanted else set()
    )
    # Each request's link, and whether this request made it.
    plan: list[tuple[_NewLink | repository.HeldLink, bool]] = []
    fresh: list[_NewLink] = []
    for index, request in enumerate(requests):
        keys = _link_keys(request.prefill) if duplicate_check else []
        found = [held[name][value] for name, value in keys if value in held[name]]
        if found:
            plan.append((min(found, key=lambda link: link.rank), False))
            continue
        if request.custom_code is not None:
            if request.custom_code in in_use:
                raise RecipientRefused(index, _code_in_use())
            in_use.add(request.custom_code)
        link = _NewLink(index, (1, index))
        for name, value in keys:
            held[name].setdefault(value, link)
        plan.append((link, True))
        fresh.append(link)
    if fresh:
        _write_links(session, campaign, requests, fresh, in_use, expires_at, now=now, base_url=base_url)
    results = []
    for entry, created in plan:
        if isinstance(entry, _NewLink):
            assert entry.answer is not None
            results.append(ImportedLink(entry.answer, created))
        else:
            results.append(ImportedLink(_held_answer(base_url, campaign, entry), created))
    return results


def _held_answer(base_url: str, campaign: Campaign, link: repository.HeldLink) -> dict[str, Any]:
    """link_answer of a link someone already holds, with its sequence_id."""
    answer = _answer(
        base_url, campaign, link.code, link.short_code, link.custom_validation_code, link.customid
    )
    return {**answer, "sequence_id": link.id}


def _write_links(
    session: Session,
    campaign: Campaign,
    requests: Sequence[LinkRequest],
    fresh: list[_NewLink],
    custom_in_use: set[str],
    expires_at: dt.datetime | None,
    *,
    now: dt.datetime,
    base_url: str,
) -> None:
    """Insert the new links in bulk (as create_batch does) with one singleuse_created event each."""
    count = len(fresh)
    codes = draw_unique(
        session,
        campaign.id,
        "short_code",
        count,
        lambda n: random_strings(n, ids.SESSION_CODE_LENGTH, SESSION_ALPHABET),
        ids.SHORT_CODE_LENGTH,
    )
    # In code order with ids in the same order, the rows reach the indexes in ascending order.
    codes.sort()
    generated: list[str] = []
    automated = sum(requests[link.index].autovalcode for link in fresh)
    if automated:
        alphabet = alphabet_for("alphanumeric")
        generated = draw_unique(
            session,
            campaign.id,
            "custom_validation_code",
            automated,
            # Not one a request of this list asks for by name either.
            lambda n: [c for c in random_strings(n, AUTO_VALCODE_LENGTH, alphabet) if c not in custom_in_use],
        )
    sequence_ids = repository.reserve_ids(session, count)
    rows = []
    events: list[tuple[str, dict[str, Any]]] = []
    for link, code, sequence_id in zip(fresh, codes, sequence_ids, strict=True):
        request = requests[link.index]
        prefill = request.prefill
        custom = generated.pop() if request.autovalcode else request.custom_code
        short = code[: ids.SHORT_CODE_LENGTH]
        rows.append(
            (sequence_id, code, short, custom, prefill.customid, prefill.firstname, prefill.lastname,
             prefill.email, prefill.phone)
        )  # fmt: skip
        answer = _answer(base_url, campaign, code, short, custom, prefill.customid)
        link.answer = {**answer, "sequence_id": sequence_id}
        event = {
            **link.answer,
            "firstname": prefill.firstname,
            "lastname": prefill.lastname,
            "email": prefill.email,
            "phone": prefill.phone,
            "status": "normal",
            "expiry_date": fmt(expires_at),
        }
        events.append((code, event))
    writer = repository.BulkInsert(
        session,
        (
            "id",
            "code",
            "short_code",
            "custom_validation_code",
            "customid",
            "firstname",
            "lastname",
            "email",
            "phone",
        ),
        {
            "account_id": campaign.account_id,
            "campaign_id": campaign.id,
            "source": repository.SOURCE,
            "link_status": "normal",
            "expires_at": expires_at,
            "created_at": now,
            "updated_at": now,
        },
    )
    try:
        for start in range(0, count, INSERT_CHUNK):
            writer.write(rows[start : start + INSERT_CHUNK])
    except writer.integrity_error as exc:
        raise _CodeClash() from exc
    repository.insert_events(session, campaign.account_id, "singleuse_created", f"cam_{campaign.id}", events)


# --- many links -----------------------------------------------------------------------------


@dataclass
class BatchSpec:
    amount: int = DEFAULT_AMOUNT
    status: str = "normal"
    automated_codes: bool = False
    code_prefix: str = ""
    code_length: int = 0
    code_type: str = ""


def parse_batch(
    amount: str | None,
    status: str | None,
    automated_codes: bool | None,
    code_prefix: str | None,
    code_length: str | None,
    code_type: str | None,
) -> BatchSpec:
    spec = BatchSpec(status=status or "normal", automated_codes=bool(automated_codes))
    if amount not in (None, ""):
        if not _DIGITS.fullmatch(amount) or not amount.strip("0"):
            raise bad_value("amount", f"Digits only, from 1 to {MAX_AMOUNT}.")
        spec.amount = int(amount) if _whole(amount) else MAX_AMOUNT + 1
        if spec.amount > MAX_AMOUNT:
            raise ApiError(
                309, f"Limit exceeded in parameter: amount. At most {MAX_AMOUNT} single use links per call."
            )
    if not spec.automated_codes:
        return spec
    if not code_length or not code_type:
        absent = [missing(n) for n, v in (("code_length", code_length), ("code_type", code_type)) if not v]
        first, *rest = absent
        raise ApiError(first.code, first.description, more=[(e.code, e.description) for e in rest])
    if not _whole(code_length) or not MIN_CODE_LENGTH <= int(code_length) <= MAX_CODE_LENGTH:
        raise bad_value("code_length", f"From {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH}.")
    spec.code_length = int(code_length)
    spec.code_type = code_type
    spec.code_prefix = code_prefix or ""
    if not _PREFIX.fullmatch(spec.code_prefix):
        raise invalid_character("code_prefix")
    if len(spec.code_prefix) + spec.code_length > CUSTOM_CODE_MAX:
        raise bad_value(
            "code_prefix", f"code_prefix and code_length together allow at most {CUSTOM_CODE_MAX} characters."
        )
    return spec


def check_code_space(session: Session, campaign: Campaign, spec: BatchSpec) -> None:
    """Refuse up front a batch whose automated codes would crowd their code space (309)."""
    space = len(alphabet_for(spec.code_type)) ** spec.code_length
    used = repository.count_custom_codes_of_shape(
        session, campaign.id, spec.code_prefix, len(spec.code_prefix) + spec.code_length
    )
    room = max(space // GUESS_FACTOR - used, 0)
    if spec.amount > room:
        shape = f"{spec.code_type} codes of {spec.code_length} characters"
        if spec.code_prefix:
            shape += f' after the prefix "{spec.code_prefix}"'
        raise ApiError(
            309,
            f"Code space too small: {shape} leave room for {room} more in this campaign "
            f"({used} issued; at most 1 in {GUESS_FACTOR} of the possible codes is handed out so "
            "codes cannot be guessed). Use a larger code_length, alphanumeric codes or another code_prefix.",
        )


def draw_unique(
    session: Session,
    campaign_id: int,
    column: str,
    count: int,
    draw: Callable[[int], list[str]],
    key_length: int | None = None,
) -> list[str]:
    """`count` codes whose key (their first `key_length` characters, or the whole code) is new
    to the campaign and to each other: drawn in memory, then the campaign's unique index is
    checked for the rare clash."""
    chosen: list[str] = []
    seen: set[str] = set()
    while len(chosen) < count:
        batch = draw(count - len(chosen))
        fresh = {code[:key_length]: code for code in batch} if key_length else dict.fromkeys(batch, "")
        for key in seen.intersection(fresh) if seen else ():
            del fresh[key]
        seen.update(fresh)
        for key in repository.taken(session, campaign_id, column, list(fresh)):
            del fresh[key]
        chosen.extend(fresh.values() if key_length else fresh)
    return chosen


def create_batch(
    session: Session,
    campaign: Campaign,
    spec: BatchSpec,
    *,
    now: dt.datetime,
    base_url: str,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """`spec.amount` links in the caller's transaction (all or nothing): codes drawn in memory,
    clashes with the campaign's existing rows pre-checked, rows written in bulk through the driver.
    Returns the vendor's `data[]` items."""
    repository.lock_campaign(session, campaign)
    if spec.automated_codes:
        check_code_space(session, campaign, spec)
    for _attempt in range(MAX_CLASH_RETRIES):
        try:
            with session.begin_nested():
                return _insert_batch(session, campaign, spec, now=now, base_url=base_url, progress=progress)
        except _CodeClash:
            # Someone inserted a clashing code after our pre-check (a consumer opening the
            # coupon at that moment): the savepoint is gone, draw again.
            continue
    raise ApiError(300, "Could not draw unique codes; please retry.")


def _insert_batch(
    session: Session,
    campaign: Campaign,
    spec: BatchSpec,
    *,
    now: dt.datetime,
    base_url: str,
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    amount = spec.amount
    codes = draw_unique(
        session,
        campaign.id,
        "short_code",
        amount,
        lambda n: random_strings(n, ids.SESSION_CODE_LENGTH, SESSION_ALPHABET),
        ids.SHORT_CODE_LENGTH,
    )
    # In code order, the rows reach the indexes on code and short code (and, with ids handed
    # out in the same order, the primary key) in ascending order: each index page is filled once
    # instead of being revisited at random, which is most of the cost of a large insert.
    codes.sort()
    custom: Sequence[str | None]
    if spec.automated_codes:
        alphabet = alphabet_for(spec.code_type)
        prefix = spec.code_prefix
        custom_codes = draw_unique(
            session,
            campaign.id,
            "custom_validation_code",
            amount,
            lambda n: [prefix + body for body in random_strings(n, spec.code_length, alphabet)],
        )
        # Sorted too, for the two indexes on the custom code. Which random custom code goes with
        # which random link does not matter: the pairing reveals nothing a link's own page does
        # not already show.
        custom_codes.sort()
        custom = custom_codes
    else:
        custom = [None] * amount
    shorts = [code[: ids.SHORT_CODE_LENGTH] for code in codes]
    sequence_ids = repository.reserve_ids(session, amount)
    writer = repository.BulkInsert(
        session,
        ("id", "code", "short_code", "custom_validation_code"),
        {
            "account_id": campaign.account_id,
            "campaign_id": campaign.id,
            "source": repository.SOURCE,
            "link_status": spec.status,
            "created_at": now,
            "updated_at": now,
        },
    )
    try:
        with repository.bulk_cache(session):
            for start in range(0, amount, INSERT_CHUNK):
                end = min(start + INSERT_CHUNK, amount)
                writer.write(
                    zip(
                        sequence_ids[start:end],
                        codes[start:end],
                        shorts[start:end],
                        custom[start:end],
                        strict=True,
                    )
                )
                if progress is not None:
                    progress(end - start)
    except writer.integrity_error as exc:
        raise _CodeClash() from exc
    url_base = f"{base_url}/p/{campaign.code}/"
    items = [
        {
            "single_use_code": code,
            "sequence_id": seq,
            "single_use_url": url_base + code,
            "widget_validation_code": short,
            "custom_validation_code": value or "",
        }
        for code, short, seq, value in zip(codes, shorts, sequence_ids, custom, strict=True)
    ]
    data: dict[str, Any] = {
        "campaign": f"cam_{campaign.id}",
        "action": BATCH_ACTION,
        "amount": amount,
        "status": spec.status,
        "automated_codes": spec.automated_codes,
        "first_sequence_id": sequence_ids[0],
        "last_sequence_id": sequence_ids[-1],
        "created_date_utc": fmt(now),
    }
    if amount <= EVENT_CODES_LIMIT:
        data["single_use_codes"] = list(codes)
    events.emit(session, campaign.account_id, "singleuse_created", data, campaign=f"cam_{campaign.id}")
    return items


# --- removal --------------------------------------------------------------------------------


def remove_link(
    session: Session, scope: ColumnElement[bool], raw_code: str, now: dt.datetime
) -> tuple[CouponSession, Campaign]:
    """The link stops working and leaves the usage data; removing it again changes nothing."""
    code = raw_code.strip()
    if not code:
        raise missing("single_use_code")  # an empty form field (PHP sends unset variables so)
    if not _SESSION_CODE.fullmatch(code):
        raise invalid_character("single_use_code")
    found = repository.link_by_code(session, scope, code)
    if found is None:
        raise link_not_found()
    link, campaign = found
    if link.removed_at is None:
        link.removed_at = now
        link.updated_at = now
        session.flush()
        _leave_usage_statistics(session, link)
        events.emit(
            session,
            campaign.account_id,
            "singleuse_removed",
            {
                "campaign": f"cam_{campaign.id}",
                "single_use_code": link.code,
                "sequence_id": link.id,
                "customid": link.customid,
                "removed_date_utc": fmt(now),
            },
            campaign=f"cam_{campaign.id}",
            coupon_session=link.code,
        )
    return link, campaign


def _leave_usage_statistics(session: Session, link: CouponSession) -> None:
    """A removed link leaves the usage statistics, which the coupons capability keeps up to date
    per change (coupons/stats.py, `on_session_removed`, called in the removing transaction).
    Looked up at run time so this package also works where that module is absent."""
    try:
        stats = importlib.import_module("opencoupon.coupons.stats")
    except ModuleNotFoundError as exc:
        if exc.name != "opencoupon.coupons.stats":
            raise
        return
    stats.on_session_removed(session, link)
