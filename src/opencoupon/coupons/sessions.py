"""Creating coupon sessions: shared by the consumer pages, single-use links, loyalty rewards,
directories and distribution, so every session gets its code the same way."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencoupon.coupons import stats  # noqa: F401  (takes removed sessions out of the statistics)
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession

MAX_CODE_ATTEMPTS = 8


def new_session(
    session: Session,
    campaign: Campaign,
    *,
    source: str = "web",
    device_id: str = "",
    link_status: str = "normal",
    customid: str = "",
    custom_validation_code: str | None = None,
    firstname: str = "",
    lastname: str = "",
    email: str = "",
    phone: str = "",
    expires_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> CouponSession:
    """A new session of `campaign`, flushed (so `id`, the vendor's sequenceid, is set).

    The short code (first 6 characters, the widget validation code) is unique within the campaign;
    on the rare clash a new code is drawn inside a savepoint.
    """
    now = now or utcnow()
    for attempt in range(MAX_CODE_ATTEMPTS):
        code = ids.session_code()
        row = CouponSession(
            account_id=campaign.account_id,
            campaign_id=campaign.id,
            code=code,
            short_code=code[: ids.SHORT_CODE_LENGTH],
            device_id=device_id,
            source=source,
            link_status=link_status,
            customid=customid,
            custom_validation_code=custom_validation_code,
            firstname=firstname,
            lastname=lastname,
            email=email,
            phone=phone,
            expires_at=expires_at,
            validation_count=0,
            locked=False,
            claimtype="",
            value="",
            custom_fields={},
            consent=False,
            saved_to_passbook=False,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            if custom_validation_code is not None or attempt == MAX_CODE_ATTEMPTS - 1:
                raise
            continue
        return row
    raise RuntimeError("unreachable")


def session_path(campaign: Campaign, coupon_session: CouponSession) -> str:
    """The vendor's session URL shape: /p/<campaign code>/<session code>."""
    return f"/p/{campaign.code}/{coupon_session.code}"
