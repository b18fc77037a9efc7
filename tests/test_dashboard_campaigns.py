"""Dashboard campaign pages over real HTTP: list, create/edit with server-side validation, the
campaign page (funnel, chart, QR), the sessions table (search, filter, CSV, void/unvoid/validate),
CSRF on every form, and tenancy (SSO subaccount sees its own, master sees its subaccounts')."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

from conftest import LiveServer, TestAccount
from coupons_fixtures import bulk_sessions
from dashboard_fixtures import YES, browser_fields, post_form, signed_in, sso_client
from foundation_fixtures import browser
from helpers import assert_ok
from opencoupon.coupons.sessions import new_session
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

NEW = "/dashboard/campaigns/new"


def _create(client: object, **fields: object) -> str:
    data = {"name": "Spring sale", "status": "active", "validation_methods": ["pin", "widget"], **fields}
    answer = post_form(client, NEW, NEW, data)  # type: ignore[arg-type]
    assert answer.status_code == 303, answer.text
    match = re.match(r"/dashboard/campaigns/(cam_\d+)\?created=1", answer.headers["location"])
    assert match, answer.headers["location"]
    return match.group(1)


def test_create_edit_and_list_with_validation_messages(live_server: LiveServer, account: TestAccount) -> None:
    with signed_in(live_server.url, account.email) as web:
        home = web.get("/dashboard/")
        for label in (
            "Campaigns",
            "Single-use",
            "Loyalty",
            "Directories",
            "Subaccounts",
            "Webhooks",
            "Account",
        ):
            assert f">{label}</a>" in home.text
        assert '<script src="/static/vendor/htmx.min.js"' in home.text
        assert web.get("/static/vendor/htmx.min.js").status_code == 200

        # Server-side validation says what is wrong and keeps what was typed.
        bad = post_form(web, NEW, NEW, {"name": "", "title": "Kept", "validation_methods": "pin"})
        assert bad.status_code == 422
        assert "Name: enter a name" in bad.text
        assert 'value="Kept"' in bad.text
        bad = post_form(web, NEW, NEW, {"name": "X", "pin": "1!", "validation_methods": "pin"})
        assert bad.status_code == 422
        assert "4 to 12 letters or digits" in bad.text
        bad = post_form(
            web, NEW, NEW, {"name": "X", "expiry_mode": "fixed_date", "validation_methods": "pin"}
        )
        assert bad.status_code == 422
        assert "expiry_date" in bad.text
        bad = post_form(web, NEW, NEW, {"name": "X"})
        assert bad.status_code == 422
        assert "choose at least one" in bad.text

        cid = _create(
            web,
            pin="4321",
            tags="spring,food",
            expiry_mode="after_claim",
            expiry_minutes="60",
            claim_fields=["firstname", "email"],
            required_fields=["email"],
            require_claim="1",
            max_validations="10",
            image="https://example.com/a.png",
        )
        page = web.get(f"/dashboard/campaigns/{cid}?created=1")
        assert page.status_code == 200
        assert "Campaign created." in page.text
        assert "after_claim" in page.text
        assert "PIN set" in page.text
        edit = web.get(f"/dashboard/campaigns/{cid}/edit")
        assert 'value="spring,food"' in edit.text
        assert 'value="60"' in edit.text
        saved = post_form(
            web,
            f"/dashboard/campaigns/{cid}/edit",
            f"/dashboard/campaigns/{cid}/edit",
            {
                "name": "Spring sale 2",
                "status": "inactive",
                "tags": "spring",
                "validation_methods": "pin",
                "expiry_mode": "none",
                "validations_per_session": "2",
            },
        )
        assert saved.status_code == 303
        listing = web.get("/dashboard/campaigns")
        assert "Spring sale 2" in listing.text
        assert "inactive" in listing.text
        assert web.get("/dashboard/campaigns?tag=food").text.count("Spring sale 2") == 0
        # Same rules as the API: the API sees what the dashboard saved.
        body = assert_ok(account.call("/v3/coupon/info", campaign=cid))
        assert "Spring sale 2" in str(body)


def test_forged_posts_are_refused(live_server: LiveServer, account: TestAccount) -> None:
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web)
        for path in (NEW, f"/dashboard/campaigns/{cid}/edit"):
            for token in (None, "forged"):
                data = {"name": "Evil", "validation_methods": "pin"}
                if token:
                    data["csrf_token"] = token
                answer = web.post(path, data=data)
                assert answer.status_code == 403, path
        listing = web.get("/dashboard/campaigns")
        assert "Evil" not in listing.text


def test_sessions_table_actions_and_csv(live_server: LiveServer, account: TestAccount) -> None:
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, pin="1234")
        code = re.search(r"/qr/p/([A-Za-z0-9]+)\.svg", web.get(f"/dashboard/campaigns/{cid}").text).group(1)  # type: ignore[union-attr]
        for _ in range(3):
            with browser(live_server.url) as consumer:
                assert consumer.get(f"/p/{code}").status_code in (200, 303)
        page = web.get(f"/dashboard/campaigns/{cid}")
        shorts = re.findall(r'data-session="([^"]+)"', page.text)
        assert len(shorts) == 3
        assert '<strong data-funnel="opens">3</strong>' in page.text
        assert 'data-chart-total="opens">3<' in page.text
        first = re.search(r"/sessions/(\d+)/validate", page.text).group(1)  # type: ignore[union-attr]
        base = f"/dashboard/campaigns/{cid}"
        done = post_form(web, base, f"{base}/sessions/{first}/validate", {"back": base, **YES})
        assert done.status_code == 303
        page = web.get(done.headers["location"])
        assert "Validated" in page.text
        assert '<strong data-funnel="validations">1</strong>' in page.text
        again = post_form(web, base, f"{base}/sessions/{first}/validate", {"back": base, **YES})
        assert "already been validated" in web.get(again.headers["location"]).text
        second = re.findall(r"/sessions/(\d+)/void", page.text)[-1]
        post_form(web, base, f"{base}/sessions/{second}/void", {"back": base, **YES})
        voided = web.get(f"{base}?state=voided")
        assert len(re.findall(r'data-session="', voided.text)) == 1
        assert "Unvoid" in voided.text
        assert len(re.findall(r'data-session="', web.get(f"{base}?state=validated").text)) == 1
        assert len(re.findall(r'data-session="', web.get(f"{base}?state=open").text)) == 1
        post_form(web, base, f"{base}/sessions/{second}/unvoid", {"back": base})
        assert "data-session" not in web.get(f"{base}?state=voided").text
        found = web.get(f"{base}?q={shorts[0]}")
        assert re.findall(r'data-session="([^"]+)"', found.text) == [shorts[0]]

        exported = web.get(f"{base}/sessions.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 3
        assert {r["state"] for r in rows} == {"open", "validated"}
        assert all(r["url"].endswith(r["session"]) for r in rows)
        assert web.get(f"{base}/sessions/999999/void").status_code == 405


def test_tenancy_subaccount_sees_own_master_sees_all(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount, other_account: TestAccount
) -> None:
    with signed_in(live_server.url, account.email) as master:
        master_cid = _create(master, name="Master campaign")
    with sso_client(live_server.url, account, subaccount.id) as sub:
        sub_cid = _create(sub, name="Sub campaign")
        listing = sub.get("/dashboard/campaigns").text
        assert "Sub campaign" in listing
        assert "Master campaign" not in listing
        assert sub.get(f"/dashboard/campaigns/{master_cid}").status_code == 404
        assert ">Subaccounts</a>" not in listing
    with signed_in(live_server.url, account.email) as master:
        listing = master.get("/dashboard/campaigns").text
        assert "Sub campaign" in listing
        assert "Master campaign" in listing
        assert master.get(f"/dashboard/campaigns/{sub_cid}").status_code == 200
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(f"/dashboard/campaigns/{sub_cid}").status_code == 404
        assert stranger.get(f"/dashboard/campaigns/{sub_cid}/sessions.csv").status_code == 404
        assert "Sub campaign" not in stranger.get("/dashboard/campaigns").text


def test_consumer_page_preview_counts_nothing(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, title="Half-price pizza", claim_fields=["firstname", "phone"], pin="9999")
        base = f"/dashboard/campaigns/{cid}"
        assert f'src="{base}/preview"' in web.get(base).text
        preview = web.get(f"{base}/preview")
        assert preview.status_code == 200
        assert "Half-price pizza" in preview.text
        assert 'name="phone"' in preview.text
        assert "Staff PIN" in preview.text
        assert preview.headers["content-security-policy"] == "frame-ancestors 'self'"
        page = web.get(base).text
        assert '<strong data-funnel="opens">0</strong>' in page
        assert "data-session" not in page
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(f"/dashboard/campaigns/{cid}/preview").status_code == 404


def test_sessions_table_locks_and_unlocks(live_server: LiveServer, account: TestAccount) -> None:
    """A coupon locked by wrong PINs is unlocked from its row (and any coupon can be locked), by a
    plain form with CSRF as Unvoid is."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, pin="1234")
        base = f"/dashboard/campaigns/{cid}"
        code = re.search(r"/qr/p/([A-Za-z0-9]+)\.svg", web.get(base).text).group(1)  # type: ignore[union-attr]
        with browser(live_server.url) as consumer:
            location = consumer.get(f"/p/{code}").headers["location"]
            token = re.search(r'name="csrf" value="([^"]+)"', consumer.get(location).text).group(1)  # type: ignore[union-attr]
            for _ in range(5):
                consumer.post(f"{location}/validate", data={"csrf": token, "pin": "0000"})
            assert "This coupon is locked" in consumer.get(location).text
            page = web.get(base)
            session_id = re.search(r"/sessions/(\d+)/unlock", page.text).group(1)  # type: ignore[union-attr]
            assert "Unlock" in page.text
            assert web.post(f"{base}/sessions/{session_id}/unlock", data={"back": base}).status_code == 403
            done = post_form(web, base, f"{base}/sessions/{session_id}/unlock", {"back": base})
            assert done.status_code == 303
            page = web.get(done.headers["location"])
            assert "Unlocked" in page.text
            assert f"/sessions/{session_id}/lock" in page.text
            assert "This coupon is locked" not in consumer.get(location).text
            done = post_form(web, base, f"{base}/sessions/{session_id}/lock", {"back": base})
            assert "Locked" in web.get(done.headers["location"]).text
            assert "This coupon is locked" in consumer.get(location).text
            post_form(web, base, f"{base}/sessions/{session_id}/unlock", {"back": base})
            validated = consumer.post(f"{location}/validate", data={"csrf": token, "pin": "1234"})
            assert validated.status_code == 303


def test_contradictory_settings_show_the_form_again_with_the_reason(
    live_server: LiveServer, account: TestAccount
) -> None:
    with signed_in(live_server.url, account.email) as web:
        base = {"name": "Spring sale", "title": "Kept", "validation_methods": "pin"}
        bad = post_form(web, NEW, NEW, {**base, "start_date": "2027-03-10", "end_date": "2027-03-01"})
        assert bad.status_code == 422
        assert "The end date must be after the start date." in bad.text
        assert 'value="Kept"' in bad.text
        assert 'value="2027-03-01"' in bad.text
        bad = post_form(web, NEW, NEW, {**base, "claim_fields": ["email"], "required_fields": ["phone"]})
        assert bad.status_code == 422
        assert "phone cannot be required without being asked" in bad.text
        bad = post_form(web, NEW, NEW, {**base, "max_validations": "-1"})
        assert bad.status_code == 422
        assert "Use 0 or more, or empty for no limit." in bad.text
        assert "already made" not in bad.text
        cid = _create(web, claim_fields=["email", "phone"], required_fields=["phone"])
        edit = f"/dashboard/campaigns/{cid}/edit"
        # Dates alone name whole days: 10 to 10 March is one day; 10 to 9 March is refused.
        bad = post_form(web, edit, edit, {**base, "start_date": "2027-03-10", "end_date": "2027-03-09"})
        assert bad.status_code == 422
        assert "The end date must be after the start date." in bad.text
        # No opens yet: the funnel shows no percentages of nothing.
        page = web.get(f"/dashboard/campaigns/{cid}")
        assert '<strong data-funnel="opens">0</strong> <span class="muted">–</span>' in page.text
        assert "100%" not in page.text


def test_an_emptied_limit_and_folder_are_removed(live_server: LiveServer, account: TestAccount) -> None:
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, max_validations="5", folder="Spring")
        edit = f"/dashboard/campaigns/{cid}/edit"
        base = {"name": "Spring sale", "status": "active", "validation_methods": ["pin"]}
        saved = post_form(web, edit, edit, {**base, "max_validations": "", "folder": ""})
        assert saved.status_code == 303, saved.text
    stored = account.client.get(f"/v4/campaigns/{cid}", headers=account.headers).json()
    assert (stored["max_validations"], stored["folder"]) == (None, "")


def test_a_refused_session_action_is_shown_as_an_error(live_server: LiveServer, account: TestAccount) -> None:
    """Validating a coupon already validated is refused: the page says so as an error (the alert
    style the other dashboard pages use), not in the green notice that says what was done."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, pin="1234")
        base = f"/dashboard/campaigns/{cid}"
        code = re.search(r"/qr/p/([A-Za-z0-9]+)\.svg", web.get(base).text).group(1)  # type: ignore[union-attr]
        with browser(live_server.url) as consumer:
            assert consumer.get(f"/p/{code}").status_code in (200, 303)
        session_id = re.search(r"/sessions/(\d+)/validate", web.get(base).text).group(1)  # type: ignore[union-attr]
        action = f"{base}/sessions/{session_id}/validate"
        done = post_form(web, base, action, {"back": f"{base}?state=", **YES})
        page = web.get(done.headers["location"]).text
        assert re.search(r'class="notice" role="status">Validated \w+\.<', page)
        # The page it came back to (with the first notice in its address) is where the second
        # action is taken from: its answer carries only its own notice.
        again = post_form(web, done.headers["location"], action, {"back": done.headers["location"], **YES})
        assert again.status_code == 303
        assert "problem=" in again.headers["location"]
        assert "done=" not in again.headers["location"]
        page = web.get(again.headers["location"]).text
        assert '<p class="error" role="alert">This coupon has already been validated.</p>' in page
        assert 'role="status">This coupon' not in page
        assert "Validated " not in page


def _campaign_api(account: TestAccount, cid: str) -> dict[str, Any]:
    """The campaign as GET /v4/campaigns/{id} gives it."""
    answer = account.client.get(f"/v4/campaigns/{cid}", headers=account.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_an_emptied_title_is_saved_as_the_api_saves_it(live_server: LiveServer, account: TestAccount) -> None:
    """Emptying the title on the edit form clears it, as PATCH {"title": ""} does; the consumer page
    then shows the campaign's name. Before, the old title stayed while the page said saved."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, name="Inner name", title="Old title")
        edit = f"/dashboard/campaigns/{cid}/edit"
        form = {
            "name": "Inner name",
            "title": "",
            "status": "active",
            "validation_methods": ["pin", "widget"],
        }
        saved = post_form(web, edit, edit, form)
        assert saved.status_code == 303, saved.text
        assert _campaign_api(account, cid)["title"] == ""
        preview = web.get(f"/dashboard/campaigns/{cid}/preview").text
        assert "<h1>Inner name</h1>" in preview
        assert "Old title" not in preview


def test_saving_the_edit_form_unchanged_leaves_the_campaign_as_it_was(
    live_server: LiveServer, account: TestAccount
) -> None:
    """The edit form posted as a browser shows it, nothing changed, saves the campaign the API
    gives back identical: the folder (set through the API) is on the form, and a consent text,
    description or terms with line breaks keeps them (a browser sends them as CRLF)."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, pin="1234")
        changed = account.client.patch(
            f"/v4/campaigns/{cid}",
            headers=account.headers,
            json={
                "title": "Two for one",
                "subtitle": "This week",
                "description": "Buy one.\nGet one free.",
                "terms": "One per visit.\n\nNot with other offers.",
                "folder": "Summer",
                "tags": ["food", "spring"],
                "end_date": "2031-03-31",
                "expiry_mode": "after_claim",
                "expiry_minutes": 90,
                "validations_per_session": 3,
                "max_validations": 500,
                "require_claim": True,
                "claim_fields": ["firstname", "email"],
                "custom_fields": ["Store"],
                "required_fields": ["email", "Store", "consent"],
                "consent_text": "I agree to emails.\nRead our privacy policy.",
            },
        )
        assert changed.status_code == 200, changed.text
        before = _campaign_api(account, cid)
        assert before["folder"] == "Summer"
        edit = f"/dashboard/campaigns/{cid}/edit"
        fields = browser_fields(web.get(edit).text, "")
        saved = web.post(edit, data=fields)
        assert saved.status_code == 303, saved.text
        assert saved.headers["location"].startswith(f"/dashboard/campaigns/{cid}?saved=1")
        after = _campaign_api(account, cid)
        assert {**after, "updated_at": ""} == {**before, "updated_at": ""}


def test_the_sessions_search_ignores_letter_case_on_every_database(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """A last name typed in lower case, or a short code read out in capitals, finds the session on
    PostgreSQL as on SQLite (PostgreSQL's LIKE minds letter case), on the page and in its CSV."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web)
        [ada] = bulk_sessions(runtime, cid, 1, firstname="Ada", lastname="Lovelace", email="ada@example.com")
        bulk_sessions(runtime, cid, 1, firstname="Grace", lastname="Hopper", customid="Order-77")
        base = f"/dashboard/campaigns/{cid}"
        short = ada[:6]
        for query in ("Lovelace", "lovelace", "LOVELACE", "ada", "ADA@EXAMPLE", short, short.upper()):
            found = web.get(base, params={"q": query}).text
            assert re.findall(r'data-session="([^"]+)"', found) == [short], query
            exported = list(
                csv.DictReader(io.StringIO(web.get(f"{base}/sessions.csv", params={"q": query}).text))
            )
            assert [row["session"] for row in exported] == [ada], query
        assert len(re.findall(r'data-session="', web.get(base, params={"q": "order-7"}).text)) == 1
        assert "data-session" not in web.get(base, params={"q": "ovelace"}).text


_ROW = re.compile(r'data-session="([^"]+)">\s*<td>.*?</td>\s*<td>([a-z]+)</td>', re.S)


def _shown(web: Any, base: str, state: str = "") -> dict[str, str]:
    """{short code: the state the table shows} of the rows the campaign page lists for `state`."""
    return dict(_ROW.findall(web.get(base, params={"state": state}).text))


def _filters_agree_with_the_table(web: Any, base: str) -> dict[str, str]:
    """Every state filter lists exactly the rows the table shows in that state; the table."""
    every = _shown(web, base)
    states = re.findall(r'<option value="([a-z]+)"', web.get(base).text)
    for state in states:
        listed = _shown(web, base, state)
        assert listed == {short: shown for short, shown in every.items() if shown == state}, state
    return every


def test_the_state_filter_lists_the_sessions_the_table_shows_in_that_state(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """The filter follows service.state: a coupon validated once of 3 allowed is "open" in both,
    a locked one is "locked" (not open or claimed), an expired one "expired"; a campaign made
    inactive or starting later shows every such coupon so in both too."""
    with signed_in(live_server.url, account.email) as web:
        cid = _create(web, validations_per_session="3")
        patch = {"expiry_mode": "after_claim", "expiry_minutes": 60}
        assert (
            account.client.patch(f"/v4/campaigns/{cid}", headers=account.headers, json=patch).status_code
            == 200
        )
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        kinds = {
            "open": {},
            "validated_once": {"validation_count": 1},
            "claimed": {"claimed_at": now - dt.timedelta(minutes=10)},
            "claimed_long_ago": {"claimed_at": now - dt.timedelta(hours=2)},
            "link_expired": {"expires_at": now - dt.timedelta(minutes=1)},
            "validated": {"validation_count": 3, "validated_at": now},
            "locked": {"locked": True, "claimed_at": now},
            "voided": {"link_status": "voided", "validation_count": 3},
        }
        short_of = {}
        with runtime.db.transaction() as session:
            campaign = session.get(Campaign, int(cid.removeprefix("cam_")))
            assert campaign is not None
            for kind, fields in kinds.items():
                row = new_session(session, campaign, firstname=kind)
                for name, value in fields.items():
                    setattr(row, name, value)
                short_of[kind] = row.short_code
        base = f"/dashboard/campaigns/{cid}"
        shown = _filters_agree_with_the_table(web, base)
        assert {kind: shown[short] for kind, short in short_of.items()} == {
            "open": "open",
            "validated_once": "open",
            "claimed": "claimed",
            "claimed_long_ago": "expired",
            "link_expired": "expired",
            "validated": "validated",
            "locked": "locked",
            "voided": "voided",
        }
        # A fixed expiry date already past: every coupon not yet used up is expired.
        patch = {"expiry_mode": "fixed_date", "expiry_date": "2020-01-31"}
        assert (
            account.client.patch(f"/v4/campaigns/{cid}", headers=account.headers, json=patch).status_code
            == 200
        )
        shown = _filters_agree_with_the_table(web, base)
        assert shown[short_of["open"]] == shown[short_of["claimed"]] == "expired"
        assert shown[short_of["validated"]] == "validated"
        # Starting later: scheduled; inactive: every coupon neither voided nor locked.
        patch = {"expiry_mode": "none", "start_date": "2099-01-01 00:00"}
        assert (
            account.client.patch(f"/v4/campaigns/{cid}", headers=account.headers, json=patch).status_code
            == 200
        )
        shown = _filters_agree_with_the_table(web, base)
        assert shown[short_of["validated_once"]] == shown[short_of["claimed"]] == "scheduled"
        patch = {"status": "inactive"}
        assert (
            account.client.patch(f"/v4/campaigns/{cid}", headers=account.headers, json=patch).status_code
            == 200
        )
        shown = _filters_agree_with_the_table(web, base)
        assert shown[short_of["validated"]] == shown[short_of["open"]] == "inactive"
        assert shown[short_of["locked"]] == "locked"
        # A filter for every word the table shows.
        states = re.findall(r'<option value="([a-z]+)"', web.get(base).text)
        assert states == [
            "open",
            "claimed",
            "validated",
            "expired",
            "locked",
            "voided",
            "scheduled",
            "inactive",
        ]
