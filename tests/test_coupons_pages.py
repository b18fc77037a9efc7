"""Consumer pages: open, same device same session, claim, the three ways staff validate, plain
messages for every state, and the JSON form."""

from __future__ import annotations

import httpx2
from sqlalchemy import select

from conftest import LiveServer
from coupons_fixtures import PIN, Acct, bulk_sessions, create_campaign, csrf_token, session_status
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, CouponSession
from opencoupon.runtime import Runtime

JSON = {"Accept": "application/json"}


def _browser(live_server: LiveServer) -> httpx2.Client:
    return httpx2.Client(base_url=live_server.url, timeout=30)


def test_open_redirects_to_session_and_same_device_gets_same_session(
    account: Acct, live_server: LiveServer
) -> None:
    campaign = create_campaign(account, title="Free coffee", description="With any pastry")
    with _browser(live_server) as phone:
        first = phone.get(f"/p/{campaign['code']}")
        assert first.status_code == 303
        again = phone.get(f"/p/{campaign['code']}")
        assert again.headers["location"] == first.headers["location"]
        page = phone.get(first.headers["location"])
        assert page.status_code == 200
        assert "Free coffee" in page.text
        assert "With any pastry" in page.text
        code = first.headers["location"].rsplit("/", 1)[1]
        assert code[:6] in page.text
        assert f"/qr/p/{campaign['code']}/{code}/scan.svg" in page.text
    with _browser(live_server) as other_phone:
        assert other_phone.get(f"/p/{campaign['code']}").headers["location"] != first.headers["location"]
    assert session_status(account, code)["opened"] == "1"


def test_unknown_and_inactive_campaigns(account: Acct, live_server: LiveServer) -> None:
    inactive = create_campaign(account, status="inactive")
    with _browser(live_server) as phone:
        assert phone.get("/p/nosuch").status_code == 404
        assert phone.get("/p/nosuch", headers=JSON).json()["status"]["errors"]["error_code"] == [502]
        closed = phone.get(f"/p/{inactive['code']}")
        assert closed.status_code == 410
        assert "not active" in closed.text
        assert phone.get(f"/p/{inactive['code']}/aaaaaaaaaaaaaaaaaaaaa").status_code == 404


def test_json_form_of_the_session_page(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        body = phone.get(location, headers=JSON).json()
    assert body["state"] == "open"
    assert body["campaign"] == campaign["id"]
    assert body["data"]["status"]["opened"] == "1"


def test_claim_form_stores_details_and_requires_fields(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(
        account,
        claim_fields="firstname,email,phone",
        required_fields="email",
        custom_fields="Shoe size",
        consent_text="I agree to receive offers.",
    )
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        page = phone.get(location).text
        assert 'name="email"' in page
        assert "I agree to receive offers." in page
        missing = phone.post(f"{location}/claim", data={"csrf": token, "firstname": "Ada"})
        assert missing.status_code == 422
        assert "Please fill in Email." in missing.text
        forged = phone.post(f"{location}/claim", data={"csrf": "forged", "email": "a@example.com"})
        assert forged.status_code == 403
        done = phone.post(
            f"{location}/claim",
            data={
                "csrf": token,
                "firstname": "Ada",
                "email": "Ada@Example.com",
                "custom_Shoe size": "38",
                "consent": "on",
            },
        )
        assert done.status_code == 303
        assert "Your coupon is claimed." in phone.get(done.headers["location"]).text
    body = account.call("/v3/couponsession/data", couponsession=location.rsplit("/", 1)[1]).json()
    assert body["data"]["status"]["claimed"] == "1"
    assert body["data"]["status"]["claimtype"] == "form"
    assert body["data"]["user"]["email"] == "ada@example.com"
    assert body["data"]["user"]["custom_fields"] == {"Shoe size": "38"}
    assert body["data"]["user"]["consent"] == "1"


def test_a_birthday_is_a_day_in_the_past_written_yyyy_mm_dd(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account, claim_fields="email,birthday")
    future = f"{utcnow().year + 1}-01-01"
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        for typed, message in (
            ("2027-W05-3", "Please give the birthday as YYYY-MM-DD."),
            ("20270131", "Please give the birthday as YYYY-MM-DD."),
            (future, "A birthday lies between 1900 and today."),
            ("1899-12-31", "A birthday lies between 1900 and today."),
        ):
            form = {"csrf": token, "email": "b@example.com", "birthday": typed}
            refused = phone.post(f"{location}/claim", data=form)
            assert refused.status_code == 422, typed
            assert message in refused.text, typed
        form = {"csrf": token, "email": "b@example.com", "birthday": "1990-04-01"}
        done = phone.post(f"{location}/claim", data=form)
        assert done.status_code == 303
    assert session_status(account, location.rsplit("/", 1)[1])["claimed"] == "1"


def test_staff_pin_on_the_phone_validates_once(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        wrong = phone.post(f"{location}/validate", data={"csrf": token, "pin": "0000"}, follow_redirects=True)
        assert wrong.status_code == 403
        assert "Wrong PIN" in wrong.text
        assert str(wrong.url).split("?", 1)[0].endswith(location)
        token = csrf_token(phone, location)
        ok = phone.post(f"{location}/validate", data={"csrf": token, "pin": PIN, "validation_value": "9.90"})
        assert ok.status_code == 303
        page = phone.get(ok.headers["location"])
        assert "Coupon validated" in page.text
        assert "already been validated" in page.text
        again = phone.post(f"{location}/validate", data={"csrf": token, "pin": PIN}, headers=JSON)
        assert again.status_code == 409
        assert again.json()["status"]["errors"]["error_code"] == [308]
    status = session_status(account, location.rsplit("/", 1)[1])
    assert status["validated"] == "1"
    assert status["validation_value"] == "9.90"


def test_wrong_pins_lock_the_session(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        for _ in range(5):
            phone.post(f"{location}/validate", data={"csrf": token, "pin": "0000"})
        locked = phone.post(f"{location}/validate", data={"csrf": token, "pin": PIN}, follow_redirects=True)
        assert locked.status_code == 409
        assert "locked" in locked.text
        assert "This coupon is locked" in phone.get(location).text
    code = location.rsplit("/", 1)[1]
    assert session_status(account, code)["locked"] == "1"
    account.call("/v3/couponsession/update", couponsession=code, lock=False)
    assert session_status(account, code)["locked"] == "0"


def test_a_right_pin_starts_the_count_of_wrong_ones_again(account: Acct, live_server: LiveServer) -> None:
    """A coupon used many times is not locked by five slips spread over its uses."""
    campaign = create_campaign(account, validations_per_session=3)
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]

        def post(pin: str) -> int:
            form = {"csrf": csrf_token(phone, location), "pin": pin}
            return phone.post(f"{location}/validate", data=form, follow_redirects=pin != PIN).status_code

        assert [post("0000") for _ in range(4)] == [403] * 4
        assert post(PIN) == 303
        # Eight wrong PINs in all, never five in a row (the address's own limit is ten).
        assert [post("0000") for _ in range(4)] == [403] * 4
    status = session_status(account, location.rsplit("/", 1)[1])
    assert (status["locked"], status["validations"]) == ("0", "1")


def test_staff_page_validates_by_widget_code_and_custom_code(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, custom_codes="BAR-0001,BAR-0002")
    widget, custom = bulk_sessions(runtime, campaign["id"], 2)
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == custom))
        assert row is not None
        row.custom_validation_code = "SHOP-778899"
    staff_path = f"/p/{campaign['code']}/staff"
    with _browser(live_server) as till:

        def send(code: str, pin: str = PIN) -> httpx2.Response:
            form = {"csrf": csrf_token(till, staff_path), "pin": pin, "code": code}
            return till.post(staff_path, data=form, follow_redirects=True)

        by_widget = send(widget[:6])
        assert by_widget.status_code == 200
        assert f"Coupon {widget[:6]} validated" in by_widget.text
        twice = send(widget[:6])
        assert twice.status_code == 409
        assert "already been validated" in twice.text
        by_custom = till.post(
            staff_path,
            data={"csrf": csrf_token(till, staff_path), "pin": PIN, "code": "SHOP-778899"},
            headers=JSON,
        )
        assert by_custom.status_code == 200
        assert by_custom.json()["data"]["status"]["validated"] == "1"
        unknown = send("zzzzzz")
        assert unknown.status_code == 404
        wrong = send(widget[:6], "9999")
        assert wrong.status_code == 403
    assert session_status(account, widget)["validated"] == "1"


def test_qr_scan_page_asks_for_the_pin(account: Acct, live_server: LiveServer, runtime: Runtime) -> None:
    campaign = create_campaign(account, validation_methods="qr,widget")
    (code,) = bulk_sessions(runtime, campaign["id"], 1, firstname="Grace")
    scan = f"/p/{campaign['code']}/{code}/scan"
    with _browser(live_server) as staff:
        page = staff.get(scan)
        assert page.status_code == 200
        assert "Staff PIN" in page.text
        assert "Grace" in page.text
        token = csrf_token(staff, scan)
        done = staff.post(scan, data={"csrf": token, "pin": PIN}, follow_redirects=True)
        assert done.status_code == 200
        assert "Coupon validated" in done.text
    # PIN on the phone is not enabled for this campaign.
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        assert "Staff PIN" not in phone.get(location).text
    assert session_status(account, code)["validated"] == "1"


def test_every_state_says_so_plainly(account: Acct, live_server: LiveServer, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    voided, locked, validated, removed, expired = bulk_sessions(runtime, campaign["id"], 5)
    account.call("/v3/couponsession/update", couponsession=voided, void=True)
    account.call("/v3/couponsession/update", couponsession=locked, lock=True)
    account.call("/v3/couponsession/update", couponsession=validated, validate=True)
    with runtime.db.transaction() as s:
        for code, field in ((removed, "removed_at"), (expired, "expires_at")):
            row = s.scalar(select(CouponSession).where(CouponSession.code == code))
            assert row is not None
            setattr(row, field, utcnow())
    expected = {
        voided: "This coupon has been voided.",
        locked: "This coupon is locked.",
        validated: "This coupon has already been validated.",
        removed: "This coupon is no longer available.",
        expired: "This coupon has expired.",
    }
    with _browser(live_server) as phone:
        for code, text in expected.items():
            page = phone.get(f"/p/{campaign['code']}/{code}")
            assert text in page.text, code
            assert "Staff PIN" not in page.text
            assert (
                phone.get(f"/p/{campaign['code']}/{code}", headers=JSON)
                .json()["message"]
                .startswith(text[:20])
            )
        token = csrf_token(phone, f"/p/{campaign['code']}/staff")
        refused = phone.post(
            f"/p/{campaign['code']}/{removed}/validate", data={"csrf": token, "pin": PIN}, headers=JSON
        )
        assert refused.status_code == 409
        assert refused.json()["status"]["errors"]["error_code"] == [308]


def test_gates_are_asked_before_opening_or_showing(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    from starlette.responses import PlainTextResponse

    from opencoupon.coupons import gates

    def paid_only(_session: object, _request: object, campaign: object) -> PlainTextResponse | None:
        if getattr(campaign, "name", "") == "Members only":
            return PlainTextResponse("Members only: sign in first.", status_code=402)
        return None

    gated = create_campaign(account, name="Members only")
    (code,) = bulk_sessions(runtime, gated["id"], 1)
    gates.register(paid_only)
    try:
        with _browser(live_server) as phone:
            opened = phone.get(f"/p/{gated['code']}")
            assert opened.status_code == 402
            assert "Members only" in opened.text
            assert phone.get(f"/p/{gated['code']}/{code}").status_code == 402
            free = create_campaign(account, name="Everyone")
            assert phone.get(f"/p/{free['code']}").status_code == 303
    finally:
        gates._gates.remove(paid_only)
    assert account.call("/v3/campaign/data", campaign=gated["id"]).json()["amount_of_results"] == "1"


def test_require_claim_holds_back_pin_validation_until_claimed(
    account: Acct, live_server: LiveServer
) -> None:
    campaign = create_campaign(account, require_claim=True, claim_fields="")
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        page = phone.get(location).text
        assert "Claim your coupon" in page
        assert "Staff PIN" not in page
        token = csrf_token(phone, location)
        early = phone.post(f"{location}/validate", data={"csrf": token, "pin": PIN}, headers=JSON)
        assert early.status_code == 409
        assert "claimed before" in early.json()["status"]["errors"]["error_message_description"][0]
        assert phone.post(f"{location}/claim", data={"csrf": token}).status_code == 303
        assert "Staff PIN" in phone.get(location).text
        assert phone.post(f"{location}/validate", data={"csrf": token, "pin": PIN}).status_code == 303


def test_refused_claim_keeps_what_was_typed(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(
        account,
        claim_fields="firstname,lastname,email,phone",
        required_fields="phone",
        custom_fields="Shoe size",
        consent_text="I agree to receive offers.",
    )
    typed = {"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com", "custom_Shoe size": "38"}
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        missing = phone.post(f"{location}/claim", data={"csrf": token, **typed, "consent": "on"})
        assert missing.status_code == 422
        assert "Please fill in Phone." in missing.text
        for value in ("Ada", "Lovelace", "ada@example.com", "38"):
            assert f'value="{value}"' in missing.text, value
        assert 'value="on" checked' in missing.text
        bad_email = phone.post(
            f"{location}/claim", data={"csrf": token, "firstname": "Ada", "email": "ada@", "phone": "+32 470"}
        )
        assert bad_email.status_code == 422
        assert "valid email" in bad_email.text
        for value in ("Ada", "ada@", "+32 470"):
            assert f'value="{value}"' in bad_email.text, value


def test_only_the_enabled_validation_methods_are_offered(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    not_used = "This validation method is not used for this coupon."
    widget_only = create_campaign(account, validation_methods="widget")
    (code,) = bulk_sessions(runtime, widget_only["id"], 1)
    scan = f"/p/{widget_only['code']}/{code}/scan"
    with _browser(live_server) as phone:
        page = phone.get(f"/p/{widget_only['code']}/{code}").text
        assert "scan.svg" not in page
        assert "Staff PIN" not in page
        token = csrf_token(phone, f"/p/{widget_only['code']}/staff")
        shown = phone.get(scan)
        assert shown.status_code == 409
        assert not_used in shown.text
        assert 'name="pin"' not in shown.text
        refused = phone.post(scan, data={"csrf": token, "pin": PIN}, follow_redirects=True)
        assert refused.status_code == 409
        assert not_used in refused.text
        on_phone = phone.post(
            f"/p/{widget_only['code']}/{code}/validate",
            data={"csrf": token, "pin": PIN},
            follow_redirects=True,
        )
        assert on_phone.status_code == 409
        assert not_used in on_phone.text
    assert session_status(account, code)["validated"] == "0"
    pin_only = create_campaign(account, validation_methods="pin")
    (pin_code,) = bulk_sessions(runtime, pin_only["id"], 1)
    staff = f"/p/{pin_only['code']}/staff"
    with _browser(live_server) as till:
        token = csrf_token(till, f"/p/{pin_only['code']}/{pin_code}")
        shown = till.get(staff)
        assert shown.status_code == 409
        assert not_used in shown.text
        assert 'name="pin"' not in shown.text
        refused = till.post(
            staff, data={"csrf": token, "pin": PIN, "code": pin_code[:6]}, follow_redirects=True
        )
        assert refused.status_code == 409
        assert not_used in refused.text
        page = till.get(f"/p/{pin_only['code']}/{pin_code}").text
        assert "scan.svg" not in page
        assert "Staff PIN" in page
    assert session_status(account, pin_code)["validated"] == "0"


def test_done_notices_show_only_when_the_coupon_is_in_that_state(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """`?done=validated` / `?done=claimed` are added by the forms' redirects, but anyone can add them
    to a link: the notice shows only when the coupon is validated / claimed."""
    thanks, claimed_notice = "Coupon validated. Thank you!", "Your coupon is claimed."
    campaign = create_campaign(account)
    open_one, claimed, validated = bulk_sessions(runtime, campaign["id"], 3)
    account.call("/v3/couponsession/update", couponsession=claimed, claim=True)
    account.call("/v3/couponsession/update", couponsession=validated, validate=True)
    twice = create_campaign(account, validations_per_session=2)
    (once_of_two,) = bulk_sessions(runtime, twice["id"], 1)
    account.call("/v3/couponsession/update", couponsession=once_of_two, validate=True)
    cases = [
        (campaign, open_one, "validated", ""),
        (campaign, open_one, "claimed", ""),
        (campaign, open_one, "anything", ""),
        (campaign, claimed, "validated", ""),
        (campaign, claimed, "claimed", claimed_notice),
        (campaign, validated, "claimed", ""),
        (campaign, validated, "validated", thanks),
        (twice, once_of_two, "validated", thanks),  # validated once, usable once more
    ]
    with _browser(live_server) as phone:
        for owner, code, done, expected in cases:
            path = f"/p/{owner['code']}/{code}?done={done}"
            page = phone.get(path).text
            body = phone.get(path, headers=JSON).json()
            for notice in (thanks, claimed_notice):
                assert (notice in page) == (notice == expected), (code, done, notice)
            assert thanks not in body["message"] or expected == thanks, (code, done)
            assert claimed_notice not in body["message"] or expected == claimed_notice, (code, done)
        # The state on an open coupon is plain: no notice, and the PIN form is still there.
        page = phone.get(f"/p/{campaign['code']}/{open_one}?done=validated").text
        assert 'name="pin"' in page
        assert (
            phone.get(f"/p/{campaign['code']}/{open_one}?done=validated", headers=JSON).json()["message"]
            == ""
        )


def test_a_refused_claim_answers_its_real_status_and_code(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """A claim refused for the coupon's state answers HTTP 409, code 308, and its JSON says so
    ("HTTP/1.0 409 Conflict."); a form the consumer must correct answers 422, code 300. Locked
    coupons, validated ones and inactive campaigns are refused too, and nothing is claimed."""
    campaign = create_campaign(account, claim_fields="firstname,email", required_fields="email")
    expired, voided, locked, validated, fine = bulk_sessions(runtime, campaign["id"], 5)
    account.call("/v3/couponsession/update", couponsession=voided, void=True)
    account.call("/v3/couponsession/update", couponsession=locked, lock=True)
    account.call("/v3/couponsession/update", couponsession=validated, validate=True)
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == expired))
        assert row is not None
        row.expires_at = utcnow()
    expected = {
        expired: "This coupon has expired.",
        voided: "This coupon has been voided.",
        locked: "This coupon is locked. Ask the staff to unlock it.",
        validated: "This coupon has already been validated.",  # as couponsession/update claim=true
    }
    form = {"firstname": "Ada", "email": "ada@example.com"}
    with _browser(live_server) as phone:
        token = csrf_token(phone, f"/p/{campaign['code']}/{fine}")
        for code, text in expected.items():
            path = f"/p/{campaign['code']}/{code}/claim"
            refused = phone.post(path, data={"csrf": token, **form}, headers=JSON)
            assert refused.status_code == 409, (code, refused.text)
            errors = refused.json()["status"]["errors"]
            assert errors["error_message"] == "HTTP/1.0 409 Conflict.", code
            assert errors["error_code"] == [308], code
            assert errors["error_message_description"] == [text], code
            page = phone.post(path, data={"csrf": token, **form})
            assert page.status_code == 409
            assert text in page.text
        incomplete = phone.post(
            f"/p/{campaign['code']}/{fine}/claim", data={"csrf": token, "firstname": "Ada"}, headers=JSON
        )
        assert incomplete.status_code == 422
        errors = incomplete.json()["status"]["errors"]
        assert errors["error_message"] == "HTTP/1.0 422 Unprocessable entity."
        assert errors["error_code"] == [300]
        assert errors["error_message_description"] == ["Please fill in Email."]
        patched = account.client.patch(
            f"/v4/campaigns/{campaign['id']}", json={"status": "inactive"}, headers=account.headers
        )
        assert patched.status_code == 200, patched.text
        inactive = phone.post(
            f"/p/{campaign['code']}/{fine}/claim", data={"csrf": token, **form}, headers=JSON
        )
        assert inactive.status_code == 409, inactive.text
        assert inactive.json()["status"]["errors"]["error_code"] == [308]
        assert inactive.json()["status"]["errors"]["error_message_description"] == [
            "This campaign is not active."
        ]
    for code in (*expected, fine):
        assert session_status(account, code)["claimed"] == "0", code


def test_the_pin_field_on_the_phone_can_type_letters(account: Acct, live_server: LiveServer) -> None:
    """PINs are 4–12 letters or digits: the phone's PIN field must not open a digits-only keypad
    (whether this PIN is all digits is not told to whoever holds the coupon)."""
    campaign = create_campaign(account, pin="ab12cd")
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        page = phone.get(location).text
        pin_input = page.split('id="pin"', 1)[1].split(">", 1)[0]
        assert 'type="password"' in pin_input
        assert "inputmode" not in pin_input
        done = phone.post(f"{location}/validate", data={"csrf": csrf_token(phone, location), "pin": "ab12cd"})
        assert done.status_code == 303


def test_the_claimed_notice_stays_readable_on_a_brand_background(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """A brand's page background may be any colour (a green as dark as the notice's own): the
    "Claimed by …" notice sits in the white coupon card, not on the page background."""
    with runtime.db.transaction() as session:
        owner = session.get(Account, account.id)
        assert owner is not None
        owner.branding = '{"background_color": "#00704a"}'
    campaign = create_campaign(account, claim_fields="firstname")
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        claimed = phone.post(
            f"{location}/claim", data={"csrf": csrf_token(phone, location), "firstname": "Ada"}
        )
        assert claimed.status_code == 303
        page = phone.get(location).text
        assert "--bg:#00704a" in page
        card = page.split('<article class="card', 1)[1].split("</article>", 1)[0]
        assert '<p class="notice">Claimed by Ada.</p>' in card


def test_claim_errors_name_the_fields_as_the_form_does_and_state_the_limit(
    account: Acct, live_server: LiveServer
) -> None:
    """The consumer reads "First name", not the internal "firstname", and learns the limit; a
    custom field over its 500 characters is refused (422) like a standard field, not cut."""
    campaign = create_campaign(
        account, claim_fields="firstname,email", required_fields="firstname", custom_fields="Loyalty no."
    )
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        missing = phone.post(f"{location}/claim", data={"csrf": token})
        assert missing.status_code == 422
        assert "Please fill in First name." in missing.text
        too_long = phone.post(f"{location}/claim", data={"csrf": token, "firstname": "A" * 101})
        assert too_long.status_code == 422
        assert "First name: at most 100 characters." in too_long.text
        custom = phone.post(
            f"{location}/claim",
            data={"csrf": token, "firstname": "Ada", "custom_Loyalty no.": "7" * 600},
            headers=JSON,
        )
        assert custom.status_code == 422
        errors = custom.json()["status"]["errors"]
        assert errors["error_message_description"] == ["Loyalty no.: at most 500 characters."]
        assert 'maxlength="500"' in phone.get(location).text
    assert session_status(account, location.rsplit("/", 1)[1])["claimed"] == "0"


def test_require_claim_says_claim_first_instead_of_a_pin_form_that_can_only_refuse(
    account: Acct, live_server: LiveServer
) -> None:
    """An unclaimed coupon of a require_claim campaign: the phone says why staff have no PIN form,
    the QR scan page shows the reason instead of the form (a PIN posted anyway is refused without
    being checked), and once claimed both offer the form again."""
    claim_first = "This coupon must be claimed before it can be validated."
    campaign = create_campaign(account, require_claim=True, validation_methods="pin,qr,widget")
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        page = phone.get(location).text
        assert claim_first in page
        assert 'name="pin"' not in page
        scan = phone.get(f"{location}/scan")
        assert scan.status_code == 409
        assert claim_first in scan.text
        assert 'name="pin"' not in scan.text
        token = csrf_token(phone, location)
        refused = phone.post(f"{location}/scan", data={"csrf": token, "pin": PIN}, headers=JSON)
        assert refused.status_code == 409
        assert refused.json()["status"]["errors"]["error_message_description"] == [claim_first]
        staff = phone.get(f"/p/{campaign['code']}/staff").text
        assert "Coupons of this campaign must be claimed before they can be validated." in staff
        assert phone.post(f"{location}/claim", data={"csrf": token}).status_code == 303
        claimed = phone.get(location).text
        assert claim_first not in claimed
        assert 'name="pin"' in claimed
        scan = phone.get(f"{location}/scan")
        assert scan.status_code == 200
        assert 'name="pin"' in scan.text
    assert session_status(account, location.rsplit("/", 1)[1])["validated"] == "0"


def _validations(account: Acct, code: str) -> int:
    return int(session_status(account, code)["validations"])


def test_a_validation_form_sent_twice_validates_once_and_a_reload_posts_nothing(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """Staff validate a coupon allowed three uses on the staff page and on the QR scan page: each
    answer is a redirect (303) to a GET showing the result, so a reload posts nothing; the same
    form sent again (a double tap, the browser's "resend") shows the first result and validates
    nothing more."""
    campaign = create_campaign(account, validations_per_session=3, validation_methods="pin,widget,qr")
    by_staff, by_scan = bulk_sessions(runtime, campaign["id"], 2)
    staff = f"/p/{campaign['code']}/staff"
    scan = f"/p/{campaign['code']}/{by_scan}/scan"
    with _browser(live_server) as till:
        form = {"csrf": csrf_token(till, staff), "pin": PIN, "code": by_staff[:6]}
        first = till.post(staff, data=form)
        assert first.status_code == 303
        result_page = first.headers["location"]
        assert result_page.startswith(f"{staff}?result=")
        assert PIN not in result_page
        assert by_staff[:6] not in result_page.lower()
        for _ in range(3):  # reloads of the result page
            shown = till.get(result_page)
            assert shown.status_code == 200
            assert f"Coupon {by_staff[:6]} validated." in shown.text
        again = till.post(staff, data=form, follow_redirects=True)
        assert again.status_code == 200
        assert f"Coupon {by_staff[:6]} validated." in again.text
        assert _validations(account, by_staff) == 1
        # A form made for another coupon is not taken for this one's.
        other = till.post(staff, data={**form, "code": by_scan[:6]}, follow_redirects=True)
        assert other.status_code == 409
        assert "This form was already sent." in other.text
        assert _validations(account, by_scan) == 0

        form = {"csrf": csrf_token(till, scan), "pin": PIN}
        first = till.post(scan, data=form)
        assert first.status_code == 303
        assert first.headers["location"].startswith(f"{scan}?result=")
        for _ in range(3):
            assert "Coupon validated. Thank you!" in till.get(first.headers["location"]).text
        assert "Coupon validated. Thank you!" in till.post(scan, data=form, follow_redirects=True).text
        assert _validations(account, by_scan) == 1
        # A new form (the page shown after the redirect) validates again, as a multi-use coupon may.
        assert till.post(scan, data={"csrf": csrf_token(till, scan), "pin": PIN}).status_code == 303
        assert _validations(account, by_scan) == 2


def test_reloading_a_wrong_pin_answer_on_the_phone_counts_no_more_wrong_pins(
    account: Acct, live_server: LiveServer
) -> None:
    """One wrong PIN on the phone, then the answer reloaded again and again: the answer is a GET
    of the coupon showing "Wrong PIN." (403), so the reloads count no wrong PIN and never lock it."""
    campaign = create_campaign(account)
    with _browser(live_server) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        wrong = phone.post(f"{location}/validate", data={"csrf": csrf_token(phone, location), "pin": "0000"})
        assert wrong.status_code == 303
        answer = wrong.headers["location"]
        assert answer.startswith(f"{location}?result=")
        for _ in range(6):
            shown = phone.get(answer)
            assert shown.status_code == 403
            assert "Wrong PIN." in shown.text
            assert "locked" not in shown.text
            assert 'name="pin"' in shown.text
        # The result is the coupon's own: it shows on no other page, and a made-up one is ignored.
        assert "Wrong PIN." not in phone.get(f"{location}?result=forged").text
        ok = phone.post(f"{location}/validate", data={"csrf": csrf_token(phone, location), "pin": PIN})
        assert ok.status_code == 303
    status = session_status(account, location.rsplit("/", 1)[1])
    assert (status["locked"], status["validated"]) == ("0", "1")
