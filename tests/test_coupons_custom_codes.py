"""Imported custom validation codes live in their own table, not in the campaign row that every
validation and consumer page loads: a long list costs nothing per call, codes are handed out in
list order, and migration 0009 moves existing lists (and back)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx2
from sqlalchemy import func, select

from conftest import LiveServer, TestAccount
from coupons_fixtures import PIN, bulk_sessions, create_campaign, csrf_token, open_session, session_status
from helpers import assert_ok
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.coupons import service
from opencoupon.coupons.schemas import CampaignCreate
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.kit.clock import utcnow
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Campaign, CampaignCustomCode
from opencoupon.runtime import Runtime

LONG_LIST = [f"POS-{i:06d}" for i in range(20_000)]


def test_a_long_imported_list_stays_out_of_the_campaign_row(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    campaign = create_campaign(account, custom_codes=LONG_LIST)
    campaign_id = int(campaign["id"].removeprefix("cam_"))
    with runtime.db.read() as session:
        row = session.get_one(Campaign, campaign_id)
        assert len(json.dumps(row.settings)) < 200
        stored = session.scalar(select(func.count()).where(CampaignCustomCode.campaign_id == campaign_id))
        assert stored == len(LONG_LIST)
    sessions = [open_session(live_server, campaign["code"]) for _ in range(3)]
    for code in sessions:
        assert_ok(account.call("/v3/couponsession/update", couponsession=code, claim=True))
    assert [session_status(account, code)["own_validation_code"] for code in sessions] == LONG_LIST[:3]
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True))
    usage = info["coupon_info"]["usage_stats"]
    assert (usage["custom_validation_codes"], usage["claimed_custom_validation_codes"]) == ("20000", "3")

    def replace_list(codes: list[str]) -> str:
        """Replace the list, then the code the next new session gets."""
        updated = account.client.patch(
            f"/v4/campaigns/{campaign['id']}", json={"custom_codes": codes}, headers=account.headers
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["custom_codes_total"] == len(codes)
        late = open_session(live_server, campaign["code"])
        assert_ok(account.call("/v3/couponsession/update", couponsession=late, claim=True))
        return str(session_status(account, late)["own_validation_code"])

    # A fresh list starts at its first code, whatever was handed out before it.
    assert replace_list([f"NEW-{i}" for i in range(1, 6)]) == "NEW-1"
    # The same list given again (here shortened) continues after its codes already held.
    assert replace_list(["NEW-1", "NEW-2"]) == "NEW-2"
    assert replace_list(["NEW-1", "NEW-2"]) == ""
    with runtime.db.read() as session:
        codes = session.scalars(
            select(CampaignCustomCode.code)
            .where(CampaignCustomCode.campaign_id == campaign_id)
            .order_by(CampaignCustomCode.position)
        ).all()
    assert codes == ["NEW-1", "NEW-2"]


def test_migration_0009_moves_lists_out_of_the_settings_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'codes.db'}"
    upgrade(url)
    scratch = Runtime.from_settings(
        Settings(database_url=url, secret_key="k" * 40, var_dir=tmp_path, rate_limit_per_second=0)
    )
    try:
        with scratch.db.transaction() as session:
            owner, _secret = accounts.create_account(session, scratch.keyring, email="codes@example.com")
            ctx = ApiContext(session=session, account=owner, runtime=scratch, now=utcnow())
            made = service.create_campaign(
                ctx, CampaignCreate(name="Codes", custom_codes=["A-1", "B-2", "C-3"])
            )
            plain = service.create_campaign(ctx, CampaignCreate(name="No codes"))
            ids = (made.id, plain.id)
    finally:
        scratch.db.dispose()

    def settings_and_table() -> tuple[list[dict[str, object]], list[tuple[int, int, str]] | None]:
        with sqlite3.connect(tmp_path / "codes.db") as conn:
            settings = [
                json.loads(conn.execute("SELECT settings FROM campaigns WHERE id = ?", (i,)).fetchone()[0])
                for i in ids
            ]
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = None
            if "campaign_custom_codes" in tables:
                rows = conn.execute(
                    "SELECT campaign_id, position, code FROM campaign_custom_codes ORDER BY position"
                ).fetchall()
        return settings, rows

    assert settings_and_table() == (
        [{"custom_code_mode": "imported", "custom_codes_count": 3}, {}],
        [(ids[0], 1, "A-1"), (ids[0], 2, "B-2"), (ids[0], 3, "C-3")],
    )
    downgrade(url, "0008")
    assert settings_and_table() == (
        [{"custom_code_mode": "imported", "custom_codes": ["A-1", "B-2", "C-3"]}, {}],
        None,
    )
    upgrade(url)
    assert settings_and_table() == (
        [{"custom_code_mode": "imported", "custom_codes_count": 3}, {}],
        [(ids[0], 1, "A-1"), (ids[0], 2, "B-2"), (ids[0], 3, "C-3")],
    )


def test_custom_codes_are_found_in_any_letter_case(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """As short codes are: the staff page and the API's searches take a custom validation code
    however it is typed (generated codes are upper case, imported ones as imported)."""
    generated = create_campaign(account, custom_code_mode="generated")
    imported = create_campaign(account, custom_codes=["Bar-0001"])
    generated_session = open_session(live_server, generated["code"])
    imported_session = open_session(live_server, imported["code"])
    generated_code = session_status(account, generated_session)["own_validation_code"]
    assert generated_code
    assert generated_code == generated_code.upper()
    assert session_status(account, imported_session)["own_validation_code"] == "Bar-0001"
    for campaign, typed, session in (
        (generated, generated_code.lower(), generated_session),
        (imported, "bar-0001", imported_session),
    ):
        found = assert_ok(account.call("/v3/couponsession/search", search=typed))
        assert [item["session"] for item in found["data"]] == [session], found
        found = assert_ok(account.call("/v3/campaign/search", campaign=campaign["id"], search=typed.upper()))
        assert [item["session"] for item in found["data"]] == [session], found
        staff = f"/p/{campaign['code']}/staff"
        with httpx2.Client(base_url=live_server.url, timeout=30) as till:
            token = csrf_token(till, staff)
            done = till.post(staff, data={"csrf": token, "pin": PIN, "code": typed}, follow_redirects=True)
            assert done.status_code == 200, done.text
            assert "validated" in done.text
        assert session_status(account, session)["validated"] == "1"


def test_a_custom_code_with_letters_beyond_ascii_is_found_as_typed(
    live_server: LiveServer, account: TestAccount
) -> None:
    """An imported code may hold any printable character: typed exactly, it is found on the staff
    page and by the searches (letter case is ignored for A-Z, as the database lowers them)."""
    campaign = create_campaign(account, custom_codes=["CAFÉ-01"])
    session = open_session(live_server, campaign["code"])
    assert session_status(account, session)["own_validation_code"] == "CAFÉ-01"
    for typed in ("CAFÉ-01", "cafÉ-01"):
        found = assert_ok(account.call("/v3/couponsession/search", search=typed))
        assert [item["session"] for item in found["data"]] == [session], found
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=live_server.url, timeout=30) as till:
        form = {"csrf": csrf_token(till, staff), "pin": PIN, "code": "CAFÉ-01"}
        done = till.post(staff, data=form, follow_redirects=True)
        assert done.status_code == 200, done.text
    assert session_status(account, session)["validated"] == "1"


def test_a_replaced_list_skips_the_codes_sessions_already_hold(
    account: TestAccount, live_server: LiveServer
) -> None:
    """A new list starts after its leading codes that sessions already hold; a code further in
    that a session holds (each code is held once) is skipped, and opening the coupon keeps working."""
    campaign = create_campaign(account, custom_codes=["A-1", "B-2"])
    first = [open_session(live_server, campaign["code"]) for _ in range(2)]
    assert [session_status(account, code)["own_validation_code"] for code in first] == ["A-1", "B-2"]
    replaced = account.client.patch(
        f"/v4/campaigns/{campaign['id']}",
        json={"custom_codes": ["X-9", "Y-8", "A-1", "B-2", "Z-7"]},
        headers=account.headers,
    )
    assert replaced.status_code == 200, replaced.text
    later = [open_session(live_server, campaign["code"]) for _ in range(4)]
    codes = [session_status(account, code)["own_validation_code"] for code in later]
    assert codes == ["X-9", "Y-8", "Z-7", ""]


def test_a_session_made_elsewhere_gets_its_code_when_first_opened(
    account: TestAccount, live_server: LiveServer, runtime: Runtime
) -> None:
    """A single-use link (as a sent coupon, a directory member's or a loyalty reward's session)
    is made without a code; its first visit hands it the list's next one, as a phone's open does."""
    campaign = create_campaign(account, custom_codes=["L-1", "L-2"])
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    assert session_status(account, link)["own_validation_code"] == ""
    with httpx2.Client(base_url=live_server.url) as phone:
        assert phone.get(f"/p/{campaign['code']}/{link}").status_code == 200
        assert phone.get(f"/p/{campaign['code']}/{link}").status_code == 200  # once only
    web = open_session(live_server, campaign["code"])
    assert [session_status(account, code)["own_validation_code"] for code in (link, web)] == ["L-1", "L-2"]
