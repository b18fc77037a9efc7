"""Answers in the vendor's shapes: coupon_info, session data (string flags, *_date_utc in UTC),
usage-data items; and the v4 campaign object (bare JSON, natural types)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from opencoupon.coupons import expiry, stats
from opencoupon.coupons.service import account_zone, campaign_public_id
from opencoupon.coupons.sessions import session_path
from opencoupon.kit.dates import fmt, fmt_date
from opencoupon.models import Account, Campaign, CouponSession
from opencoupon.runtime import Runtime


def flag(value: object) -> str:
    return "1" if value else "0"


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{Decimal(value):.2f}"


def session_status(campaign: Campaign, row: CouponSession, tz: ZoneInfo, now: dt.datetime) -> dict[str, str]:
    limit = expiry.session_expiry(campaign, row, tz)
    return {
        "created_date_utc": fmt(row.created_at),
        "opened": flag(row.opened_at),
        "open_date_utc": fmt(row.opened_at),
        "played": flag(row.played_at),
        "played_date_utc": fmt(row.played_at),
        "claimed": flag(row.claimed_at),
        "claim_date_utc": fmt(row.claimed_at),
        "claimtype": row.claimtype,
        "saved_to_passbook": flag(row.saved_to_passbook),
        "validated": flag(row.validation_count),
        "validation_date_utc": fmt(row.validated_at),
        "validations": str(row.validation_count),
        "validations_allowed": str(campaign.validations_per_session),
        "voided": flag(row.link_status == "voided"),
        "voided_date_utc": fmt(row.voided_at),
        "locked": flag(row.locked),
        "locked_date_utc": fmt(row.locked_at),
        "expired": flag(limit is not None and now >= limit),
        # The last valid second, as coupon_info's `expirydate` (…23:59:59), not the first expired.
        "expiry_date_utc": fmt(limit - dt.timedelta(microseconds=1)) if limit else "",
        "removed": flag(row.removed_at),
        "removed_date_utc": fmt(row.removed_at),
        "link_status": row.link_status,
        "validation_value": money(row.validation_value),
        "value": row.value,
        "own_validation_code": row.custom_validation_code or "",
    }


def session_user(row: CouponSession) -> dict[str, Any]:
    return {
        "firstname": row.firstname,
        "lastname": row.lastname,
        "email": row.email,
        "phone": row.phone,
        "birthday": fmt_date(row.birthday),
        "customid": row.customid,
        "custom_fields": {str(k): str(v) for k, v in (row.custom_fields or {}).items()},
        "consent": flag(row.consent),
    }


def session_data(
    session: Session,
    runtime: Runtime,
    campaign: Campaign,
    row: CouponSession,
    now: dt.datetime,
    action: str = "retrieve_all_session_data",
) -> dict[str, Any]:
    tz = account_zone(session, campaign.account_id)
    return {
        "campaign": campaign_public_id(campaign),
        "action": action,
        "session": row.code,
        "short_code": row.short_code,
        "session_url": runtime.url(session_path(campaign, row)),
        "sequenceid": str(row.id),
        "customid": row.customid,
        "data": {"status": session_status(campaign, row, tz, now), "user": session_user(row)},
    }


def usage_item(
    runtime: Runtime, campaign: Campaign, row: CouponSession, tz: ZoneInfo, now: dt.datetime
) -> dict[str, Any]:
    return {
        "sequenceid": str(row.id),
        "session": row.code,
        "campaign": campaign_public_id(campaign),
        "session_url": runtime.url(session_path(campaign, row)),
        "customid": row.customid,
        "status": session_status(campaign, row, tz, now),
        "user": session_user(row),
    }


def _subaccount(session: Session, campaign: Campaign) -> str:
    owner = session.get(Account, campaign.account_id)
    return f"sub_{owner.id}" if owner is not None and owner.parent_id is not None else ""


def expiry_text(campaign: Campaign) -> str:
    """`expirydate` of coupon_info: the last valid local moment of a fixed-date campaign."""
    if campaign.expiry_mode == "fixed_date" and campaign.expiry_date is not None:
        return f"{fmt_date(campaign.expiry_date)} 23:59:59"
    return ""


def coupon_info(session: Session, runtime: Runtime, campaign: Campaign) -> dict[str, Any]:
    settings = campaign.settings or {}
    return {
        "ID": campaign_public_id(campaign),
        "code": campaign.code,
        "name": campaign.name,
        "title": campaign.title,
        "subtitle": campaign.subtitle,
        "description": campaign.description,
        "terms": campaign.terms,
        "image": campaign.image_url,
        "status": campaign.status,
        "type": campaign.kind,
        "url": runtime.url(f"/p/{campaign.code}"),
        "qr_code_url": runtime.url(f"/qr/p/{campaign.code}.png"),
        "tags": campaign.tags,
        "folder": campaign.folder,
        "category": f"cat_{campaign.category_id}" if campaign.category_id else "",
        "start_date": fmt(campaign.start_at),
        "end_date": fmt(campaign.end_at),
        "expiry_mode": campaign.expiry_mode,
        "expirydate": expiry_text(campaign),
        "expiry_minutes": str(campaign.expiry_minutes or ""),
        "validations_per_session": str(campaign.validations_per_session),
        # "" is no limit; 0 is a limit of none (every validation refused).
        "max_validations": "" if campaign.max_validations is None else str(campaign.max_validations),
        "validation_methods": campaign.validation_methods,
        "custom_code_mode": settings.get("custom_code_mode", "none"),
        "subaccount": _subaccount(session, campaign),
        "created_date_utc": fmt(campaign.created_at),
    }


def usage_stats(session: Session, campaign: Campaign, since: dt.date) -> dict[str, Any]:
    opens, claims, validations = stats.totals(session, campaign.id)
    settings = campaign.settings or {}
    mode = settings.get("custom_code_mode", "none")
    imported = int(settings.get("custom_codes_count") or 0)
    total_codes = imported if mode == "imported" else campaign.custom_codes_issued
    # Of the current list: its codes handed out or skipped (codes issued before it, generated or of
    # another list, are not its own, and counting them could exceed its total).
    claimed_codes = campaign.custom_codes_position if mode == "imported" else campaign.custom_codes_issued
    return {
        "opens": str(opens),
        "claims": str(claims),
        "validations": str(validations),
        "custom_validation_codes": str(total_codes if mode != "none" else 0),
        "claimed_custom_validation_codes": str(claimed_codes),
        "per_day_since": since.isoformat(),
        "per_day": [
            {"date": day.isoformat(), "opens": str(o), "claims": str(c), "validations": str(v)}
            for day, o, c, v in stats.per_day(session, campaign.id, since)
        ],
    }


def campaign_v4(session: Session, runtime: Runtime, campaign: Campaign) -> dict[str, Any]:
    settings = campaign.settings or {}
    form = campaign.claim_form or {}
    return {
        "id": campaign_public_id(campaign),
        "code": campaign.code,
        "url": runtime.url(f"/p/{campaign.code}"),
        "qr_code_url": runtime.url(f"/qr/p/{campaign.code}.png"),
        "name": campaign.name,
        "title": campaign.title,
        "subtitle": campaign.subtitle,
        "description": campaign.description,
        "terms": campaign.terms,
        "image": campaign.image_url,
        "status": campaign.status,
        "tags": [t for t in campaign.tags.split(",") if t],
        "folder": campaign.folder,
        "category": f"cat_{campaign.category_id}" if campaign.category_id else None,
        "start_date": fmt(campaign.start_at) or None,
        "end_date": fmt(campaign.end_at) or None,
        "expiry_mode": campaign.expiry_mode,
        "expiry_date": fmt_date(campaign.expiry_date) or None,
        "expiry_minutes": campaign.expiry_minutes,
        "pin_set": bool(campaign.pin_digest),
        "validation_methods": [m for m in campaign.validation_methods.split(",") if m],
        "validations_per_session": campaign.validations_per_session,
        "max_validations": campaign.max_validations,
        "custom_code_mode": settings.get("custom_code_mode", "none"),
        "custom_codes_total": int(settings.get("custom_codes_count") or 0),
        "custom_codes_issued": campaign.custom_codes_issued,
        "require_claim": campaign.require_claim,
        "claim_fields": list(form.get("fields", [])),
        "required_fields": list(form.get("required", [])),
        "custom_fields": list(form.get("custom_fields", [])),
        "consent_text": form.get("consent_text", ""),
        "opens": campaign.opens_count,
        "claims": campaign.claims_count,
        "validations": campaign.validations_count,
        "subaccount": _subaccount(session, campaign) or None,
        "created_at": fmt(campaign.created_at),
        "updated_at": fmt(campaign.updated_at),
    }
