"""The rules of coupons: campaigns, and the life of a coupon session (open, claim, validate, void,
lock). Every state change is a conditional UPDATE whose row count decides the race, written with
its statistics and its event in the caller's transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from opencoupon.accounts import service as accounts
from opencoupon.coupons import expiry, hotpath, repository, stats
from opencoupon.coupons.schemas import CampaignCreate, CampaignFields, CampaignUpdate, required_fields_problem
from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.db import raw
from opencoupon.directories.service import get_category, get_held_category
from opencoupon.errors import ApiError, bad_date, bad_value, missing
from opencoupon.events.service import emit
from opencoupon.kit import ids
from opencoupon.kit.dates import FIRST_YEAR, LAST_YEAR, fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, Campaign, CouponSession
from opencoupon.runtime import Runtime

CAMPAIGN_NOT_FOUND = "Campaign ID not found."
SESSION_NOT_FOUND = "Couponsession not found."
# Wrong PINs typed on one session's page before it locks (staff unlock it with `lock=false`).
MAX_PIN_FAILURES = 5
GENERATED_CODE_LENGTH = 10
METHODS = ("pin", "widget", "custom_code", "qr")
_SESSION_CODE = re.compile(r"^[A-Za-z0-9]+$")
# A staff PIN: a campaign's, and a loyalty card's (loyalty.service), so one PIN habit works at
# every counter.
PIN_RULE = re.compile(r"[0-9A-Za-z]{4,12}")


def check_pin(pin: str) -> None:
    """Refuse (300) a staff PIN that PIN_RULE does not accept."""
    if not PIN_RULE.fullmatch(pin):
        raise bad_value("pin", "Use 4 to 12 letters or digits.")


def methods_of(campaign: Campaign) -> set[str]:
    """The validation methods enabled on the campaign (stored comma-separated)."""
    return set(campaign.validation_methods.split(","))


def _rowcount(session: Session, statement: Any, params: dict[str, Any] | None = None) -> int:
    """Rows an UPDATE changed: the row count decides who won a race."""
    return int(getattr(session.execute(statement, params), "rowcount", 0))


def refused(description: str) -> ApiError:
    """Not allowed in the session's current state: code 308, HTTP 409."""
    return ApiError(308, description)


def campaign_not_found() -> ApiError:
    return ApiError(502, CAMPAIGN_NOT_FOUND)


def session_not_found() -> ApiError:
    return ApiError(505, SESSION_NOT_FOUND)


def account_zone(session: Session, account_id: int) -> ZoneInfo:
    account = session.get(Account, account_id)
    return expiry.zone(account.timezone if account is not None else "UTC")


def campaign_public_id(campaign: Campaign) -> str:
    return ids.public_id("cam_", campaign.id)


# ---------------------------------------------------------------- campaigns


def parse_campaign_id(raw: str, param: str = "campaign") -> int:
    return ids.parse_public_id(raw, "cam_", param, campaign_not_found())


def get_campaign(ctx: ApiContext, raw: str, param: str = "campaign") -> Campaign:
    """A campaign the caller may reach; another account's answers exactly like a missing one."""
    pk = parse_campaign_id(raw, param)
    found = ctx.session.scalars(hotpath.CAMPAIGN_BY_ID, {"id": pk}).first()
    if found is None or not ctx.may_reach(found.account_id):
        raise campaign_not_found()
    return found


def category_id_of(ctx: ApiContext, raw: str | None, owner_id: int | None = None) -> int | None:
    """The ID of a category the caller may reach (its own or its subaccounts'), for coupon/list's
    filter, and with `owner_id` for a campaign's `category`: one the campaign's account may hold
    too (a subaccount's campaign never its master's or a sibling's); None for none. A missing
    category, or another account's, answers 516 as everywhere else."""
    if not raw:
        return None
    if owner_id is None:
        return get_category(ctx, raw).id
    return get_held_category(ctx, owner_id, raw).id


_WHEN_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _parse_when(
    name: str,
    raw: str,
    formats: tuple[str, ...] = _WHEN_FORMATS,
    shown: str = "yyyy-MM-dd or yyyy-MM-dd HH:mm",
) -> dt.datetime:
    text = raw.strip()
    for f in formats:
        try:
            value = dt.datetime.strptime(text, f)
        except ValueError:
            continue
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise bad_value(name, f"Use a date from the year {FIRST_YEAR} to {LAST_YEAR}.")
        return value
    raise bad_date(name, shown)


def _parse_day(name: str, raw: str) -> dt.date:
    """A date alone (a whole day in the account's time zone): a time given with it is refused (303),
    not dropped."""
    return _parse_when(name, raw, ("%Y-%m-%d",), "yyyy-MM-dd").date()


def _campaign_bound(ctx: ApiContext, campaign: Campaign, name: str, raw: str | None) -> dt.datetime | None:
    """A campaign's start or end (naive UTC). A date and time is UTC, as every date of the API; a
    date alone names a day of the business, in the account's time zone as `expiry_date` does: a
    start on that day's first moment, an end after its last ("end 30 November" includes it)."""
    if not raw:
        return None
    value = _parse_when(name, raw)
    if " " in raw.strip():  # a date and a time
        return value
    tz = account_zone(ctx.session, campaign.account_id)
    if name == "end_date":
        return expiry.end_of_local_day(value.date(), tz)
    return expiry.local_to_utc(value, tz)


def pin_digest(runtime: Runtime, campaign_code: str, pin: str) -> str:
    key = runtime.keyring.derive_key("campaign-pin")
    return hmac.new(key, f"{campaign_code}:{pin}".encode(), hashlib.sha256).hexdigest()


# An expiry window of at most 100 years keeps every limit a representable date.
MAX_EXPIRY_MINUTES = 100 * 365 * 24 * 60


def _new_campaign_code(session: Session) -> str:
    for _ in range(20):
        code = ids.random_code(ids.SHORT_CODE_LENGTH)
        if not repository.code_taken(session, code):
            return code
    raise ApiError(309, "No free campaign code; try again.")


def _apply(ctx: ApiContext, campaign: Campaign, req: CampaignFields) -> list[str] | None:
    """Set the campaign's fields from the request; the imported custom codes it gives (None when
    it gives none), for the caller to store once the campaign has its ID."""
    fields = req.model_fields_set
    for name in ("title", "subtitle", "description", "terms", "folder", "status"):
        if name in fields and getattr(req, name) is not None:
            setattr(campaign, name, getattr(req, name))
    if "name" in fields:
        if not getattr(req, "name", None):
            raise missing("name")  # a campaign always has a name
        campaign.name = req.name  # type: ignore[attr-defined]
    if "image" in fields and req.image is not None:
        campaign.image_url = req.image
    if "tags" in fields:
        campaign.tags = ",".join(req.tags or [])
    if "category" in fields:
        campaign.category_id = category_id_of(ctx, req.category, campaign.account_id)
    if "start_date" in fields:
        campaign.start_at = _campaign_bound(ctx, campaign, "start_date", req.start_date)
    if "end_date" in fields:
        campaign.end_at = _campaign_bound(ctx, campaign, "end_date", req.end_date)
    if req.expiry_mode is not None:
        campaign.expiry_mode = req.expiry_mode
    if "expiry_date" in fields:
        campaign.expiry_date = _parse_day("expiry_date", req.expiry_date) if req.expiry_date else None
    if req.expiry_days is not None:
        if not 0 < req.expiry_days <= MAX_EXPIRY_MINUTES // (24 * 60):
            raise bad_value("expiry_days", f"Use 1 to {MAX_EXPIRY_MINUTES // (24 * 60)} days.")
        campaign.expiry_minutes = req.expiry_days * 24 * 60
    if req.expiry_minutes is not None:
        if not 0 < req.expiry_minutes <= MAX_EXPIRY_MINUTES:
            raise bad_value("expiry_minutes", f"Use 1 to {MAX_EXPIRY_MINUTES} minutes (100 years).")
        campaign.expiry_minutes = req.expiry_minutes
    if campaign.expiry_mode == "fixed_date" and campaign.expiry_date is None:
        raise ApiError(200, "Missing parameter: expiry_date")
    if campaign.expiry_mode in ("after_open", "after_claim") and not campaign.expiry_minutes:
        raise ApiError(200, "Missing parameter: expiry_minutes")
    if campaign.expiry_minutes is not None and campaign.expiry_minutes <= 0:
        raise bad_value("expiry_minutes")
    if "pin" in fields:
        pin = req.pin or ""
        if pin:
            check_pin(pin)
        campaign.pin_digest = pin_digest(ctx.runtime, campaign.code, pin) if pin else ""
    if req.validation_methods is not None:
        if not req.validation_methods:
            raise bad_value("validation_methods", "Choose at least one of pin, widget, custom_code, qr.")
        campaign.validation_methods = ",".join(m for m in METHODS if m in req.validation_methods)
    if req.validations_per_session is not None:
        if req.validations_per_session < 1:
            raise bad_value("validations_per_session")
        campaign.validations_per_session = req.validations_per_session
    if "max_validations" in fields:
        if req.max_validations is not None and req.max_validations < 0:
            raise bad_value("max_validations", "Use 0 or more, or empty for no limit.")
        if req.max_validations is not None and req.max_validations < campaign.validations_count:
            made = campaign.validations_count
            raise bad_value(
                "max_validations",
                f"It cannot be lower than the {made} validations already made (or empty for no limit).",
            )
        campaign.max_validations = req.max_validations
    settings = dict(campaign.settings or {})
    if req.custom_code_mode is not None:
        settings["custom_code_mode"] = req.custom_code_mode
    codes: list[str] | None = None
    if req.custom_codes is not None:
        codes = list(dict.fromkeys(c for c in req.custom_codes if c))
        if any(len(c) > 64 for c in codes):
            raise bad_value("custom_codes", "Codes are at most 64 characters.")
        # The list itself goes to its own table (repository.replace_custom_codes).
        settings["custom_codes_count"] = len(codes)
        if req.custom_code_mode is None:
            settings["custom_code_mode"] = "imported"  # a list given is a list to use
    campaign.settings = settings
    form = dict(campaign.claim_form or {})
    if req.claim_fields is not None:
        form["fields"] = list(req.claim_fields)
    if req.required_fields is not None:
        form["required"] = list(req.required_fields)
    if req.custom_fields is not None:
        form["custom_fields"] = list(req.custom_fields)
    if req.consent_text is not None:
        form["consent_text"] = req.consent_text
    campaign.claim_form = form
    if req.require_claim is not None:
        campaign.require_claim = req.require_claim
    _refuse_nonsense(campaign)
    return codes


def _refuse_nonsense(campaign: Campaign) -> None:
    """Settings that contradict each other, checked on the campaign as it would be saved (a
    change may contradict what was saved before)."""
    if campaign.start_at is not None and campaign.end_at is not None and campaign.end_at <= campaign.start_at:
        raise bad_value("end_date", "The end date must be after the start date.")
    problem = required_fields_problem(campaign.claim_form or {})
    if problem:
        raise bad_value("required_fields", problem)


def create_campaign(ctx: ApiContext, req: CampaignCreate) -> Campaign:
    accounts.check_campaign_allowance(ctx.session, ctx.account)
    now = ctx.now
    campaign = Campaign(
        account_id=ctx.account.id,
        code=_new_campaign_code(ctx.session),
        name=req.name,
        title=req.title or req.name,
        subtitle="",
        description="",
        terms="",
        image_url="",
        status="active",
        kind="coupon",
        tags="",
        folder="",
        expiry_mode="none",
        pin_digest="",
        validation_methods=",".join(METHODS),
        validations_per_session=1,
        validations_count=0,
        opens_count=0,
        claims_count=0,
        custom_codes_issued=0,
        custom_codes_position=0,
        require_claim=False,
        claim_form={"fields": ["firstname", "lastname", "email"], "required": [], "custom_fields": []},
        settings={},
        created_at=now,
        updated_at=now,
    )
    codes = _apply(ctx, campaign, req)
    ctx.session.add(campaign)
    ctx.session.flush()
    if codes is not None:
        repository.replace_custom_codes(ctx.session, campaign.id, codes)
    return campaign


def update_campaign(ctx: ApiContext, campaign: Campaign, req: CampaignUpdate) -> Campaign:
    codes = _apply(ctx, campaign, req)
    campaign.updated_at = ctx.now
    ctx.session.flush()
    if codes is not None:
        repository.replace_custom_codes(ctx.session, campaign.id, codes)
        # The new list starts after its leading codes that sessions already hold (the same list
        # given again with codes added continues where it was), not after the number handed out
        # so far, which counts generated codes and other lists too. Read after the flush above,
        # which holds the campaign row: an open handing out a code waits for this call.
        campaign.custom_codes_position = repository.leading_codes_held(ctx.session, campaign.id, codes)
        ctx.session.flush()
    return campaign


def delete_campaign(ctx: ApiContext, campaign: Campaign) -> None:
    campaign.deleted_at = ctx.now
    campaign.status = "inactive"
    ctx.session.flush()


# ---------------------------------------------------------------- finding sessions


def find_session(ctx: ApiContext, given: str, campaign_raw: str | None) -> tuple[Campaign, CouponSession]:
    """A session by its 21-character code or its 6-character short form, in any letter case.

    Short forms are unique within a campaign only: when one matches sessions of several of the
    caller's campaigns the call fails (code 300) and asks for `campaign` or the full code.
    A `campaign` that is not the caller's (or is deleted) answers 502, as everywhere."""
    code = given.strip()
    if not code:
        raise missing("couponsession")
    if not _SESSION_CODE.match(code):
        raise ApiError(301, "Invalid character in parameter: couponsession.")
    # Codes are issued in lower case (ids.session_code) and taken in any case, as on the staff page.
    code = code.lower()
    campaign_id = get_campaign(ctx, campaign_raw).id if campaign_raw else None
    row: CouponSession | None = None
    campaign: Campaign | None = None
    if len(code) == ids.SHORT_CODE_LENGTH:
        scope = ctx.scope(CouponSession.account_id)
        rows = repository.sessions_by_short_code(ctx.session, scope, code, campaign_id)
        if len(rows) > 1:
            raise ApiError(
                300,
                "Invalid value in parameter: couponsession. This short code matches sessions of "
                "several campaigns; pass campaign or the full 21-character code.",
            )
        row = rows[0] if rows else None
        if row is not None:
            campaign = ctx.session.get(Campaign, row.campaign_id)
    else:
        # By the unique code, then the tenancy check in Python: cheaper than a scoped query, and
        # another account's session still answers exactly like a missing one.
        found = raw.load_one(ctx.session, hotpath.SESSION_BY_CODE, {"code": code}, CouponSession, Campaign)
        if found is not None and ctx.may_reach(found[0].account_id):
            row, campaign = found[0], found[1]
        if row is not None and campaign_id is not None and row.campaign_id != campaign_id:
            row = None
    if row is None or campaign is None or campaign.deleted_at is not None:
        raise session_not_found()
    return campaign, row


# ---------------------------------------------------------------- state of a session


def _event_data(
    session: Session, runtime: Runtime, campaign: Campaign, row: CouponSession, now: dt.datetime, **extra: Any
) -> dict[str, Any]:
    """A coupon event's data: the session as `couponsession/data` shows it once the change is
    made (`status` and `user`, the vendor's "full object"), and what the change itself was."""
    from opencoupon.coupons.views import session_status, session_user  # views imports this module

    return {
        "campaign": campaign_public_id(campaign),
        "couponsession": row.code,
        "short_code": row.short_code,
        "sequenceid": str(row.id),
        "session_url": runtime.url(session_path(campaign, row)),
        "customid": row.customid,
        **extra,
        "status": session_status(campaign, row, account_zone(session, campaign.account_id), now),
        "user": session_user(row),
    }


def _emit(
    session: Session,
    runtime: Runtime,
    campaign: Campaign,
    row: CouponSession,
    now: dt.datetime,
    kind: str,
    **extra: Any,
) -> None:
    emit(
        session,
        row.account_id,
        kind,
        _event_data(session, runtime, campaign, row, now, **extra),
        campaign=campaign_public_id(campaign),
        coupon_session=row.code,
    )


_REFUSALS = {
    "removed": "This coupon is no longer available.",
    "voided": "This coupon has been voided.",
    "locked": "This coupon is locked.",
    "inactive": "This campaign is not active.",
    "scheduled": "This campaign has not started yet.",
    "validated": "This coupon has already been validated.",
    "expired": "This coupon has expired.",
}


def refusal(campaign: Campaign, row: CouponSession, tz: ZoneInfo, now: dt.datetime) -> str | None:
    """Why this session cannot be validated now, in words for people; None when it can."""
    return _REFUSALS.get(state(campaign, row, tz, now))


def state(campaign: Campaign, row: CouponSession, tz: ZoneInfo, now: dt.datetime) -> str:
    """One word for the page: removed, voided, locked, inactive, validated, scheduled (the
    campaign starts later: a single-use link made in advance waits for it), expired, claimed,
    open."""
    if row.removed_at is not None:
        return "removed"
    if row.link_status == "voided":
        return "voided"
    if row.locked:
        return "locked"
    if campaign.status != "active" or campaign.deleted_at is not None:
        return "inactive"
    if row.validation_count >= campaign.validations_per_session:
        return "validated"
    if campaign.start_at is not None and now < campaign.start_at:
        return "scheduled"
    if expiry.is_expired(campaign, row, tz, now):
        return "expired"
    if row.claimed_at is not None:
        return "claimed"
    return "open"


def campaign_open_problem(campaign: Campaign, now: dt.datetime) -> str | None:
    """Why no new session of this campaign can be opened now."""
    if campaign.status != "active" or campaign.deleted_at is not None:
        return "This campaign is not active."
    if campaign.start_at is not None and now < campaign.start_at:
        return "This campaign has not started yet."
    if campaign.end_at is not None and now >= campaign.end_at:
        return "This campaign has ended."
    return None


# ---------------------------------------------------------------- transitions


# Codes of a replaced list that sessions already hold are skipped, this many in a row at most
# (then the session gets none and validates by PIN or widget code).
MAX_HELD_CODES_SKIPPED = 100


def _assign_custom_code(session: Session, campaign: Campaign, row: CouponSession) -> None:
    mode = (campaign.settings or {}).get("custom_code_mode", "none")
    if mode == "none" or row.custom_validation_code:
        return
    for _attempt in range(MAX_HELD_CODES_SKIPPED + 1):
        if mode == "imported":
            # The list's own cursor moves on, only while a code follows it (read in the same
            # statement, so a list replaced meanwhile counts as it is now).
            position = session.execute(
                update(Campaign)
                .where(Campaign.id == campaign.id, repository.next_custom_code_exists())
                .values(custom_codes_position=Campaign.custom_codes_position + 1)
                .returning(Campaign.custom_codes_position)
                .execution_options(synchronize_session=False),
            ).scalar_one_or_none()
            if position is None:
                return  # the list is used up; the session still validates by PIN or widget code
            set_committed_value(campaign, "custom_codes_position", position)
            code = repository.custom_code_at(session, campaign.id, position) or ""
        else:
            code = ids.random_code(GENERATED_CODE_LENGTH, ids.UNAMBIGUOUS)
        # A replaced list may repeat a code a session already holds (each is held once): skip it.
        if code and not repository.custom_code_held(session, campaign.id, code):
            break
    else:
        return
    # Every code handed out, generated or imported, whatever list it came from.
    issued = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(custom_codes_issued=Campaign.custom_codes_issued + 1)
        .returning(Campaign.custom_codes_issued)
        .execution_options(synchronize_session=False),
    ).scalar_one()
    set_committed_value(campaign, "custom_codes_issued", issued)
    session.execute(
        update(CouponSession)
        .where(CouponSession.id == row.id)
        .values(custom_validation_code=code)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(row, "custom_validation_code", code)


def open_new(
    session: Session, runtime: Runtime, campaign: Campaign, device_id: str, now: dt.datetime
) -> CouponSession:
    """A new web session of `campaign`, opened by this device."""
    row = new_session(session, campaign, source="web", device_id=device_id, now=now)
    mark_opened(session, runtime, campaign, row, now)
    return row


def mark_opened(
    session: Session, runtime: Runtime, campaign: Campaign, row: CouponSession, now: dt.datetime
) -> bool:
    """First open of a session (a web visit, or the first visit of a single-use link, a sent
    coupon, a directory member's or a loyalty reward's session): it gets the campaign's next
    custom validation code then, whichever way it was made."""
    if row.opened_at is not None or row.removed_at is not None:
        return False
    changed = _rowcount(
        session,
        update(CouponSession)
        .where(
            CouponSession.id == row.id, CouponSession.opened_at.is_(None), CouponSession.removed_at.is_(None)
        )
        .values(opened_at=now, updated_at=now)
        .execution_options(synchronize_session=False),
    )
    if changed != 1:
        return False
    set_committed_value(row, "opened_at", now)
    _assign_custom_code(session, campaign, row)
    # Campaign row before the day row, in every transition, so PostgreSQL never deadlocks.
    stats.add_counters(session, campaign.id, opens=1)
    stats.bump_day(session, campaign.id, now.date(), opens=1)
    _emit(session, runtime, campaign, row, now, "coupon_opened", open_date_utc=fmt(now))
    return True


CLAIM_FIELDS = ("firstname", "lastname", "email", "phone")


def claim(
    session: Session,
    runtime: Runtime,
    campaign: Campaign,
    row: CouponSession,
    now: dt.datetime,
    *,
    claimtype: str,
    details: dict[str, Any] | None = None,
) -> bool:
    """Claim the session (once). Refused (308) when it is removed, voided or expired; False
    (nothing changes) when it was claimed already; refused too, as a validation is, when it is
    locked, its campaign inactive or not started yet, and once it is validated, even once of
    several allowed (a coupon used at the counter is not claimed afterwards)."""
    tz = account_zone(session, campaign.account_id)
    word = state(campaign, row, tz, now)
    if word in ("removed", "voided"):
        raise refused(_REFUSALS[word])
    if expiry.is_expired(campaign, row, tz, now):
        raise refused(_REFUSALS["expired"])
    if row.claimed_at is not None:
        return False
    if word in ("locked", "inactive", "scheduled", "validated"):
        raise refused(_REFUSALS[word])
    if row.validation_count > 0:
        # Validated once of several allowed: still "open", but used at the counter all the same.
        raise refused(_REFUSALS["validated"])
    values: dict[str, Any] = {"claimed_at": now, "claimtype": claimtype, "updated_at": now}
    for key, value in (details or {}).items():
        if value not in (None, "", {}):
            values[key] = value
    changed = _rowcount(
        session,
        update(CouponSession)
        # Not removed meanwhile either (a removal takes the claim out of the statistics), nor
        # validated meanwhile: a validation committed while this ran wins, as if it came first.
        .where(
            CouponSession.id == row.id,
            CouponSession.claimed_at.is_(None),
            CouponSession.removed_at.is_(None),
            CouponSession.validation_count == 0,
        )
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    if changed != 1:
        now_claimed, now_validated = session.execute(
            select(CouponSession.claimed_at, CouponSession.validation_count).where(CouponSession.id == row.id)
        ).one()
        if now_claimed is None and now_validated > 0:
            raise refused(_REFUSALS["validated"])
        return False
    for key, value in values.items():
        set_committed_value(row, key, value)
    stats.add_counters(session, campaign.id, claims=1)
    stats.bump_day(session, campaign.id, now.date(), claims=1)
    _emit(
        session,
        runtime,
        campaign,
        row,
        now,
        "coupon_claimed",
        claim_date_utc=fmt(now),
        claimtype=claimtype,
        firstname=row.firstname,
        lastname=row.lastname,
        email=row.email,
        phone=row.phone,
    )
    return True


# Money as people write it: 12, 12.5, 12,50, 12., .50 (not -0, 1_000 or 1e3, which Decimal
# takes). Unambiguous, so matching is linear in the text (`[0-9]*[.,]?[0-9]+` backtracked
# quadratically on a long run of digits, holding the event loop).
_MONEY = re.compile(r"[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+")
_MONEY_LENGTH = 40


def parse_money(raw: str | None) -> Decimal | None:
    if raw is None or raw == "":
        return None
    if len(raw) > _MONEY_LENGTH or not _MONEY.fullmatch(raw.strip()):
        raise bad_value("validation_value", "Use a number such as 12.50.")
    try:
        amount = Decimal(raw.strip().replace(",", "."))
    except InvalidOperation:
        raise bad_value("validation_value", "Use a number such as 12.50.") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal("1e12"):
        raise bad_value("validation_value", "Use a number such as 12.50.")
    # Half a cent rounds up (12.505 → 12.51), as tills and receipts round money.
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def validate(
    session: Session,
    runtime: Runtime,
    campaign: Campaign,
    row: CouponSession,
    now: dt.datetime,
    *,
    method: str,
    validation_value: Decimal | None = None,
    value: str | None = None,
) -> int:
    """Validate once. Exactly-once under races: the conditional UPDATE on the session (count below
    the allowance) and on the campaign (total below its limit) decide, and the unique
    (session, ordinal) of the Validation row backs them up. Raises code 308 when refused; the
    caller's transaction must then roll back (the campaign check comes after the session UPDATE)."""
    tz = account_zone(session, campaign.account_id)
    reason = refusal(campaign, row, tz, now)
    if reason is not None:
        raise refused(reason)
    if method != "api" and method not in methods_of(campaign):
        raise refused("This validation method is not enabled for this campaign.")
    if method != "api" and campaign.require_claim and row.claimed_at is None:
        raise refused("This coupon must be claimed before it can be validated.")
    ordinal = raw.scalar(
        session,
        hotpath.VALIDATE_SESSION,
        {
            "now": now,
            "money": validation_value,
            "value": value,
            "id": row.id,
            "allowed": campaign.validations_per_session,
            "no": False,
        },
    )
    if ordinal is None:
        raise refused("This coupon has already been validated.")
    if raw.rowcount(session, hotpath.COUNT_CAMPAIGN_VALIDATION, {"id": campaign.id}) != 1:
        raise refused("The campaign has reached its limit of validations.")
    set_committed_value(row, "validation_count", int(ordinal))
    set_committed_value(row, "validated_at", now)
    set_committed_value(row, "updated_at", now)
    if validation_value is not None:
        set_committed_value(row, "validation_value", validation_value)
    if value is not None:
        set_committed_value(row, "value", value)
    # The unique (session, ordinal) backs up the conditional UPDATE; on a clash the caller's
    # transaction (or its savepoint in update/multiple) rolls back.
    try:
        raw.execute(
            session,
            hotpath.INSERT_VALIDATION,
            {
                "account_id": row.account_id,
                "campaign_id": campaign.id,
                "session_id": row.id,
                "ordinal": int(ordinal),
                "method": method,
                "money": validation_value,
                "now": now,
            },
        )
    except IntegrityError:
        raise refused("This coupon has already been validated.") from None
    stats.bump_day(session, campaign.id, now.date(), validations=1)
    _emit(
        session,
        runtime,
        campaign,
        row,
        now,
        "coupon_validated",
        validation_date_utc=fmt(now),
        method=method,
        validation=int(ordinal),
        validation_value="" if validation_value is None else str(validation_value),
        value=row.value,
    )
    return int(ordinal)


def void(
    session: Session, runtime: Runtime, campaign: Campaign, row: CouponSession, now: dt.datetime
) -> bool:
    changed = _rowcount(
        session,
        update(CouponSession)
        .where(
            CouponSession.id == row.id,
            CouponSession.link_status != "voided",
            CouponSession.removed_at.is_(None),
        )
        .values(link_status="voided", voided_at=now, updated_at=now)
        .execution_options(synchronize_session=False),
    )
    if changed != 1:
        return False
    set_committed_value(row, "link_status", "voided")
    set_committed_value(row, "voided_at", now)
    _emit(session, runtime, campaign, row, now, "coupon_voided", voided_date_utc=fmt(now))
    return True


def activate(session: Session, row: CouponSession, now: dt.datetime) -> bool:
    """Undo a void (`void=false`): single-use links become 'activated', other sessions 'normal'."""
    status = "activated" if row.source == "single_use" else "normal"
    changed = _rowcount(
        session,
        update(CouponSession)
        .where(
            CouponSession.id == row.id,
            CouponSession.link_status == "voided",
            CouponSession.removed_at.is_(None),
        )
        .values(link_status=status, voided_at=None, updated_at=now)
        .execution_options(synchronize_session=False),
    )
    if changed == 1:
        set_committed_value(row, "link_status", status)
        set_committed_value(row, "voided_at", None)
    return changed == 1


def ensure_not_removed(row: CouponSession) -> None:
    """A removed session (a single-use link taken back) changes no more: 308, as for a claim or
    a validation."""
    if row.removed_at is not None:
        raise refused(_REFUSALS["removed"])


def set_lock(session: Session, row: CouponSession, locked: bool, now: dt.datetime) -> None:
    values: dict[str, Any] = {"locked": locked, "locked_at": now if locked else None, "updated_at": now}
    if not locked:
        values["pin_failures"] = 0
    session.execute(
        update(CouponSession)
        .where(CouponSession.id == row.id, CouponSession.removed_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    for key, value in values.items():
        set_committed_value(row, key, value)


def pin_matches(runtime: Runtime, campaign: Campaign, pin: str) -> bool:
    if not campaign.pin_digest or not pin:
        return False
    return hmac.compare_digest(campaign.pin_digest, pin_digest(runtime, campaign.code, pin.strip()))


def record_pin_failure(session: Session, row: CouponSession, now: dt.datetime) -> bool:
    """Count a wrong PIN typed on this session's page; True when the session is now locked."""
    failures = session.execute(
        update(CouponSession)
        .where(CouponSession.id == row.id)
        .values(pin_failures=CouponSession.pin_failures + 1, updated_at=now)
        .returning(CouponSession.pin_failures)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    set_committed_value(row, "pin_failures", failures)
    if failures >= MAX_PIN_FAILURES and not row.locked:
        set_lock(session, row, True, now)
        return True
    return False


def clear_pin_failures(session: Session, row: CouponSession, now: dt.datetime) -> None:
    """A right PIN starts the count of wrong ones again: a coupon used many times is not locked
    by five slips spread over weeks."""
    if row.pin_failures:
        session.execute(
            update(CouponSession)
            .where(CouponSession.id == row.id)
            .values(pin_failures=0, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(row, "pin_failures", 0)


def set_values(
    session: Session,
    row: CouponSession,
    validation_value: Decimal | None,
    value: str | None,
    now: dt.datetime,
) -> None:
    """Record money spent or a free value without validating."""
    values: dict[str, Any] = {"updated_at": now}
    if validation_value is not None:
        values["validation_value"] = validation_value
    if value is not None:
        values["value"] = value
    session.execute(
        update(CouponSession)
        .where(CouponSession.id == row.id, CouponSession.removed_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    for key, item in values.items():
        set_committed_value(row, key, item)
