"""Session codes: 21 characters, the short code is their first 6, unique within a campaign."""

from __future__ import annotations

from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime


def test_new_sessions_have_vendor_shaped_codes(runtime: Runtime, account: object) -> None:
    with runtime.db.transaction() as session:
        now = utcnow()
        campaign = Campaign(
            account_id=account.id,
            code=f"t{account.id:05d}"[-6:],
            name="Test",
            created_at=now,
            updated_at=now,  # type: ignore[attr-defined]
        )
        session.add(campaign)
        session.flush()
        rows = [new_session(session, campaign) for _ in range(50)]
        codes = {r.code for r in rows}
        assert len(codes) == 50
        assert all(len(r.code) == 21 and r.code[:6] == r.short_code for r in rows)
        assert len({r.short_code for r in rows}) == 50
        assert session_path(campaign, rows[0]) == f"/p/{campaign.code}/{rows[0].code}"
