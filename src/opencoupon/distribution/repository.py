"""Every query of the distribution capability."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.models import Campaign, CouponSession, DistributionSend, EmailIntegration, SmsIntegration

PAGE_SIZE = 100
PENDING = ("queued", "sending", "retrying")


def email_integration(session: Session, account_id: int, *, lock: bool = False) -> EmailIntegration | None:
    """`lock`: hold the row until commit (PostgreSQL), so a PUT checks what it overwrites: the
    latest committed row, not one another PUT is changing. SQLite transactions already run one
    at a time."""
    query = select(EmailIntegration).where(EmailIntegration.account_id == account_id)
    return session.scalar(query.with_for_update() if lock else query)


def sms_integration(session: Session, account_id: int, *, lock: bool = False) -> SmsIntegration | None:
    """`lock`: as for email_integration."""
    query = select(SmsIntegration).where(SmsIntegration.account_id == account_id)
    return session.scalar(query.with_for_update() if lock else query)


def campaign(session: Session, campaign_id: int, scope: ColumnElement[bool] | None = None) -> Campaign | None:
    query = select(Campaign).where(Campaign.id == campaign_id, Campaign.deleted_at.is_(None))
    if scope is not None:
        query = query.where(scope)
    return session.scalar(query)


def directory(
    session: Session, directory_id: int, scope: Callable[[Any], ColumnElement[bool]] | None = None
) -> Any | None:
    """A live directory row, or None. Directories are another capability's table: while its model
    is not part of the build, no directory exists. `scope(account_column)` limits the owners."""
    from opencoupon import models

    model: Any = getattr(models, "Directory", None)
    if model is None:
        return None
    query = select(model).where(model.id == directory_id, model.deleted_at.is_(None))
    if scope is not None:
        query = query.where(scope(model.account_id))
    return session.scalar(query)


def coupon_session_in_campaign(session: Session, campaign_id: int, code: str) -> CouponSession | None:
    """By the 21-character code or the 6-character short form, within one campaign."""
    column = CouponSession.short_code if len(code) <= 8 else CouponSession.code
    return session.scalar(
        select(CouponSession).where(
            CouponSession.campaign_id == campaign_id, column == code, CouponSession.removed_at.is_(None)
        )
    )


def coupon_session_by_code(session: Session, code: str, scope: ColumnElement[bool]) -> CouponSession | None:
    column = CouponSession.short_code if len(code) <= 8 else CouponSession.code
    return session.scalar(
        select(CouponSession).where(column == code, scope).order_by(CouponSession.id).limit(1)
    )


def previous_send(
    session: Session,
    channel: str,
    recipient_key: str,
    *,
    campaign_id: int | None,
    directory_id: int | None,
) -> DistributionSend | None:
    """The latest send of this coupon (or directory) to this recipient that did not fail."""
    query = select(DistributionSend).where(
        DistributionSend.channel == channel,
        DistributionSend.recipient_key == recipient_key,
        DistributionSend.status != "failed",
    )
    if campaign_id is not None:
        query = query.where(DistributionSend.campaign_id == campaign_id)
    else:
        query = query.where(DistributionSend.directory_id == directory_id)
    return session.scalar(query.order_by(DistributionSend.id.desc()).limit(1))


def send_for_update(session: Session, send_id: int) -> DistributionSend | None:
    return session.scalar(select(DistributionSend).where(DistributionSend.id == send_id).with_for_update())


def send_in_scope(session: Session, send_id: int, scope: ColumnElement[bool]) -> DistributionSend | None:
    return session.scalar(select(DistributionSend).where(DistributionSend.id == send_id, scope))


def sends(
    session: Session,
    scope: ColumnElement[bool],
    *,
    filters: list[ColumnElement[bool]],
    page: int,
) -> tuple[int, Sequence[DistributionSend]]:
    where = [scope, *filters]
    total = session.scalar(select(func.count()).select_from(DistributionSend).where(*where)) or 0
    rows = session.scalars(
        select(DistributionSend)
        .where(*where)
        .order_by(DistributionSend.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return total, rows


# Built once: every couponsession/data call runs it, and building it cost more than running it.
_SENDS_OF_SESSION = (
    select(DistributionSend)
    .where(DistributionSend.session_id == bindparam("session_id"))
    .order_by(DistributionSend.id)
)


# Most sessions were never sent: a raw existence check answers those without the ORM query.
_ANY_SEND_OF_SESSION = raw.RawStatement(
    "SELECT 1 FROM distribution_sends WHERE session_id = :session_id LIMIT 1"
)


def sends_of_session(session: Session, coupon_session_id: int) -> Sequence[DistributionSend]:
    if raw.scalar(session, _ANY_SEND_OF_SESSION, {"session_id": coupon_session_id}) is None:
        return []
    return session.scalars(_SENDS_OF_SESSION, {"session_id": coupon_session_id}).all()


def codes_for(session: Session, rows: Sequence[DistributionSend]) -> tuple[dict[int, str], dict[int, str]]:
    """Campaign codes and session codes of these sends, in two queries."""
    campaign_ids = {r.campaign_id for r in rows if r.campaign_id is not None}
    session_ids = {r.session_id for r in rows if r.session_id is not None}
    campaigns: dict[int, str] = {}
    sessions: dict[int, str] = {}
    if campaign_ids:
        query = select(Campaign.id, Campaign.code).where(Campaign.id.in_(campaign_ids))
        campaigns = dict(session.execute(query).all())
    if session_ids:
        query = select(CouponSession.id, CouponSession.code).where(CouponSession.id.in_(session_ids))
        sessions = dict(session.execute(query).all())
    return campaigns, sessions


def bulk_counts(session: Session, campaign_id: int) -> dict[str, int]:
    """Counts of this campaign's bulk sends by status."""
    query = (
        select(DistributionSend.status, func.count())
        .where(DistributionSend.campaign_id == campaign_id, DistributionSend.origin == "bulk")
        .group_by(DistributionSend.status)
    )
    return dict(session.execute(query).all())
