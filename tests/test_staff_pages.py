"""Security of the counter pages where staff type the PIN (coupon staff page, QR scan page, loyalty
staff page): no other site may frame them (clickjacking), whatever the answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2

from conftest import LiveServer
from coupons_fixtures import PIN, Acct, bulk_sessions, create_campaign, csrf_token, session_status
from loyalty_fixtures import create_card, create_holder
from opencoupon.runtime import Runtime


def _unframeable(response: httpx2.Response) -> None:
    assert response.headers.get("x-frame-options") == "DENY", response.headers
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", "")


def test_staff_pages_cannot_be_framed(account: Acct, live_server: LiveServer, runtime: Runtime) -> None:
    campaign = create_campaign(account, validation_methods="pin,widget,qr")
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    staff = f"/p/{campaign['code']}/staff"
    scan = f"/p/{campaign['code']}/{code}/scan"
    card = create_card(account, type="points", pin="2468")
    holder = create_holder(account, card["id"])
    loyalty_staff = f"/l/{card['code']}/staff"
    with httpx2.Client(base_url=live_server.url, timeout=30) as till:
        for path in (staff, scan, f"{loyalty_staff}?holder={holder['code']}"):
            _unframeable(till.get(path))
        _unframeable(till.post(staff, data={"csrf": csrf_token(till, staff), "pin": "9999", "code": "x"}))
        _unframeable(till.post(scan, data={"csrf": csrf_token(till, scan), "pin": PIN}))
        token = till.get(loyalty_staff).text.split('name="form_token" value="', 1)[1].split('"', 1)[0]
        added = till.post(loyalty_staff, data={"form_token": token, "holder": holder["code"], "pin": "2468"})
        assert added.status_code == 200
        _unframeable(added)


def test_pin_guessing_over_many_coupons_is_limited(account: Acct, live_server: LiveServer) -> None:
    """Five wrong PINs lock one coupon, but anyone can open more coupons: wrong PINs typed on the
    phone or on the QR scan page count per campaign and client too, ten per 15 minutes."""
    campaign = create_campaign(account, validation_methods="pin,qr")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        for attempt in range(10):
            phone.cookies.clear()  # a new device: a new coupon with its own five tries
            location = phone.get(f"/p/{campaign['code']}").headers["location"]
            action = f"{location}/validate" if attempt % 2 else f"{location}/scan"
            form = {"csrf": csrf_token(phone, location), "pin": "0000"}
            wrong = phone.post(action, data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
            assert "Wrong PIN" in wrong.text
        phone.cookies.clear()
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        for action in (f"{location}/validate", f"{location}/scan"):
            refused = phone.post(action, data={"csrf": token, "pin": PIN}, follow_redirects=True)
            assert refused.status_code == 429, refused.text
            assert "Too many wrong PINs" in refused.text
        assert "validated" not in phone.get(location).text.lower()
    # Another campaign (and its counter) is not held up.
    other = create_campaign(account)
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        location = phone.get(f"/p/{other['code']}").headers["location"]
        ok = phone.post(f"{location}/validate", data={"csrf": csrf_token(phone, location), "pin": PIN})
        assert ok.status_code == 303


def test_a_campaign_without_pin_says_so_instead_of_wrong_pin(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    no_pin = "This campaign has no staff PIN: set one on the dashboard."
    campaign = create_campaign(account, pin="")
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    staff = f"/p/{campaign['code']}/staff"
    scan = f"/p/{campaign['code']}/{code}/scan"
    with httpx2.Client(base_url=live_server.url, timeout=30) as till:
        page = till.get(f"/p/{campaign['code']}/{code}")
        assert "Staff PIN" not in page.text
        token = csrf_token(till, f"/p/{campaign['code']}/{code}")
        for path in (staff, scan):
            shown = till.get(path)
            assert shown.status_code == 409
            assert no_pin in shown.text
            assert 'name="pin"' not in shown.text
        for path, form in (
            (staff, {"csrf": token, "pin": "0000", "code": code[:6]}),
            (scan, {"csrf": token, "pin": "0000"}),
            (f"/p/{campaign['code']}/{code}/validate", {"csrf": token, "pin": "0000"}),
        ):
            refused = till.post(path, data=form, follow_redirects=True)
            assert refused.status_code == 409, path
            assert no_pin in refused.text
            assert "Wrong PIN" not in refused.text
        # Once a PIN is set the counter works.
        patched = account.client.patch(
            f"/v4/campaigns/{campaign['id']}", json={"pin": PIN}, headers=account.headers
        )
        assert patched.status_code == 200, patched.text
        token = csrf_token(till, staff)
        done = till.post(staff, data={"csrf": token, "pin": PIN, "code": code[:6]}, follow_redirects=True)
        assert done.status_code == 200
        assert f"Coupon {code[:6]} validated." in done.text


def test_one_address_gets_ten_wrong_pins_over_staff_phone_and_scan_pages(
    account: Acct, live_server: LiveServer
) -> None:
    """The ten wrong PINs per campaign and client address are one count for the staff page and the
    phone and QR scan pages alike: five on the staff page and five on the coupons' pages use it up
    (separate counts let one address try twenty PINs)."""
    campaign = create_campaign(account, validation_methods="pin,widget,qr")
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=live_server.url, timeout=30) as till:
        token = csrf_token(till, staff)
        for attempt in range(5):
            form = {"csrf": token, "pin": f"{1000 + attempt}", "code": "abcdef"}
            wrong = till.post(staff, data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
        for attempt in range(5):
            till.cookies.clear()  # a new coupon each time: none is locked by its own five tries
            location = till.get(f"/p/{campaign['code']}").headers["location"]
            action = f"{location}/validate" if attempt % 2 else f"{location}/scan"
            form = {"csrf": csrf_token(till, location), "pin": f"{2000 + attempt}"}
            wrong = till.post(action, data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
        till.cookies.clear()
        location = till.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(till, location)
        for action, form in (
            (staff, {"csrf": token, "pin": PIN, "code": location.rsplit("/", 1)[1][:6]}),
            (f"{location}/validate", {"csrf": token, "pin": PIN}),
            (f"{location}/scan", {"csrf": token, "pin": PIN}),
        ):
            refused = till.post(action, data=form, follow_redirects=True)
            assert refused.status_code == 429, (action, refused.text)
            assert "Too many wrong PINs" in refused.text


def test_a_right_pin_on_one_page_gives_back_its_count_on_all(account: Acct, live_server: LiveServer) -> None:
    """Right PINs are counted and given back on every page: staff who type nine wrong PINs in a
    day and the right one a hundred times, on any page, are never locked out."""
    campaign = create_campaign(account, validation_methods="pin,widget,qr")
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=live_server.url, timeout=30) as till:
        token = csrf_token(till, staff)
        for attempt in range(9):
            form = {"csrf": token, "pin": f"{1000 + attempt}", "code": "abcdef"}
            wrong = till.post(staff, data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
        for _ in range(3):
            till.cookies.clear()
            location = till.get(f"/p/{campaign['code']}").headers["location"]
            form = {"csrf": csrf_token(till, location), "pin": PIN}
            done = till.post(f"{location}/scan", data=form, follow_redirects=True)
            assert done.status_code == 200, done.text
        token = csrf_token(till, staff)
        wrong = till.post(staff, data={"csrf": token, "pin": "0000", "code": "abcdef"}, follow_redirects=True)
        assert wrong.status_code == 403
        right = till.post(staff, data={"csrf": token, "pin": PIN, "code": "abcdef"}, follow_redirects=True)
        assert right.status_code == 429


def test_the_coupon_page_with_its_pin_form_cannot_be_framed(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """The coupon's own page carries the staff PIN form (validation on the phone): it, and every
    answer to that form or to the claim form (which show the page again), refuse frames too."""
    campaign = create_campaign(account, claim_fields="email", required_fields="email")
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    page = f"/p/{campaign['code']}/{code}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        shown = phone.get(page)
        assert 'name="pin"' in shown.text
        _unframeable(shown)
        _unframeable(phone.get(page, headers={"Accept": "application/json"}))
        token = csrf_token(phone, page)
        refused = phone.post(f"{page}/claim", data={"csrf": token})
        assert refused.status_code == 422
        _unframeable(refused)
        wrong = phone.post(f"{page}/validate", data={"csrf": token, "pin": "0000"})
        assert wrong.status_code == 303  # to the coupon, showing "Wrong PIN." (403)
        _unframeable(wrong)
        wrong = phone.get(wrong.headers["location"])
        assert wrong.status_code == 403
        _unframeable(wrong)
        done = phone.post(f"{page}/validate", data={"csrf": token, "pin": PIN})
        assert done.status_code == 303
        _unframeable(done)


def test_a_custom_code_equal_to_another_coupons_widget_code_validates_its_own_coupon(
    account: Acct, live_server: LiveServer
) -> None:
    """Link B's custom code "J6ZL36" is link A's widget code "j6zl36" in other letters: each code,
    typed as it was given, validates its own coupon."""
    campaign = create_campaign(account, validation_methods="pin,widget,custom_code")
    first = account.call("/v3/singleuse/create", campaign=campaign["id"]).json()
    widget = first["widget_validation_code"]
    second = account.call(
        "/v3/singleuse/create", campaign=campaign["id"], customvalcode=widget.upper()
    ).json()
    assert second["status"]["status"] == "OK", second
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=live_server.url) as till:
        form = {"csrf": csrf_token(till, staff), "pin": PIN, "code": widget.upper()}
        by_custom = till.post(staff, data=form, follow_redirects=True)
        assert by_custom.status_code == 200, by_custom.text
        form = {"csrf": csrf_token(till, staff), "pin": PIN, "code": widget}
        by_widget = till.post(staff, data=form, follow_redirects=True)
        assert by_widget.status_code == 200, by_widget.text
    states = [
        account.call("/v3/couponsession/data", couponsession=link["single_use_code"]).json()["data"]["status"]
        for link in (first, second)
    ]
    assert [s["validated"] for s in states] == ["1", "1"]
    assert [s["validations"] for s in states] == ["1", "1"]


# --- a PIN search from many addresses, and the shop's own till --------------------------------------

JSON = {"Accept": "application/json"}


def _from(live_server: LiveServer, last_octet: int) -> httpx2.Client:
    """A client at its own loopback address (127.0.0.N): another client address for the limits."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{last_octet}")
    return httpx2.Client(base_url=live_server.url, timeout=30, transport=transport)


def _staff_pin(client: httpx2.Client, campaign: dict[str, Any], pin: str, code: str) -> httpx2.Response:
    staff = f"/p/{campaign['code']}/staff"
    return client.post(
        staff, data={"csrf": csrf_token(client, staff), "pin": pin, "code": code}, headers=JSON
    )


def _search(attackers: list[httpx2.Client], campaign: dict[str, Any], first_guess: int) -> tuple[int, int]:
    """Every address guesses PINs in turn until it is refused: (guesses checked, seconds to wait)."""
    staff = f"/p/{campaign['code']}/staff"
    checked, wait = 0, 15 * 60
    for client in attackers:
        token = csrf_token(client, staff)
        while True:
            pin = f"{first_guess + checked:04d}"
            answer = client.post(staff, data={"csrf": token, "pin": pin, "code": "zzzzzz"}, headers=JSON)
            if answer.status_code == 429:
                wait = max(wait, int(answer.headers["retry-after"]))
                break
            assert answer.status_code == 403, (pin, answer.status_code, answer.text)  # the PIN not found
            checked += 1
    return checked, wait


def test_a_pin_search_spread_over_many_addresses_is_stopped(
    account: Acct, live_server: LiveServer, clock_offset: Any
) -> None:
    """Eleven addresses guess a 4-digit PIN for three days, each time as soon as they are let:
    every time the campaign's hundred wrong PINs are reached its PINs are refused twice as long
    (15 minutes, 30 minutes, … a day), so they check 900 PINs, not every one of the 10,000.
    (A backstop that started again every 15 minutes let them try all of them in a day.)"""
    campaign = create_campaign(account, pin="2361", validation_methods="widget")
    attackers = [_from(live_server, n) for n in range(2, 13)]
    checked, waits, elapsed = 0, [], dt.timedelta(0)
    try:
        while elapsed < dt.timedelta(days=3):
            found, wait = _search(attackers, campaign, checked)
            checked += found
            waits.append(wait)
            elapsed += dt.timedelta(seconds=wait + 1)
            clock_offset(elapsed)
    finally:
        for client in attackers:
            client.close()
    assert checked == 900, (checked, waits)
    # 15 minutes, then twice as long each time, up to a day (Retry-After: the seconds left).
    minutes = [round(wait / 60) for wait in waits]
    assert minutes[:9] == [15, 30, 60, 120, 240, 480, 960, 1440, 1440], minutes


def test_the_till_with_the_staff_device_cookie_validates_while_the_campaign_is_locked(
    account: Acct, live_server: LiveServer, runtime: Runtime, clock_offset: Any
) -> None:
    """The till that typed the right PIN carries a signed "staff device" cookie: a search from
    other addresses that locks the campaign's PINs does not lock it out. A device without the
    cookie, a forged one, another campaign's, an expired one, or one given before the PIN was
    changed, is refused like everyone."""
    campaign = create_campaign(account, validation_methods="widget")
    other = create_campaign(account, validation_methods="widget")
    codes = bulk_sessions(runtime, campaign["id"], 6)
    attackers = [_from(live_server, n) for n in range(2, 13)]
    till, newcomer, forger = _from(live_server, 20), _from(live_server, 21), _from(live_server, 22)
    try:
        first = _staff_pin(till, campaign, PIN, codes[0][:6])
        assert first.status_code == 200, first.text
        (cookie,) = [c for c in first.headers.get_list("set-cookie") if c.startswith("oc_staff=")]
        assert "HttpOnly" in cookie, cookie
        assert f"Path=/p/{campaign['code']}" in cookie, cookie
        assert "Max-Age=2592000" in cookie, cookie  # 30 days
        given = till.cookies["oc_staff"]

        assert _search(attackers, campaign, 0)[0] == 100
        for code in codes[1:3]:  # the till goes on, every time
            done = _staff_pin(till, campaign, PIN, code[:6])
            assert done.status_code == 200, done.text
            assert session_status(account, code)["validated"] == "1"
        refused = _staff_pin(newcomer, campaign, PIN, codes[3][:6])
        assert refused.status_code == 429, refused.text
        errors = refused.json()["status"]["errors"]
        assert errors["error_code"] == [429]
        assert errors["error_message_description"] == ["Too many wrong PINs. Try again in 15 minutes."]
        forged_value = given[:-1] + ("0" if given[-1] != "0" else "1")
        for forged in (forged_value, f"{campaign['id'].removeprefix('cam_')}.9999999999.{'0' * 64}", "x"):
            forger.cookies.set("oc_staff", forged)
            assert _staff_pin(forger, campaign, PIN, codes[3][:6]).status_code == 429, forged
        assert session_status(account, codes[3])["validated"] == "0"

        # Another campaign's cookie gives nothing there (the same value works where it was given).
        assert _search(attackers, other, 0)[0] == 100
        forger.cookies.clear()
        forger.cookies.set("oc_staff", given)
        assert _staff_pin(forger, other, PIN, "zzzzzz").status_code == 429
        assert _staff_pin(forger, campaign, PIN, "zzzzzz").status_code == 404

        # A month without a right PIN: the cookie has expired.
        clock_offset(dt.timedelta(days=31))
        assert _search(attackers, campaign, 100)[0] == 100
        assert _staff_pin(till, campaign, PIN, codes[3][:6]).status_code == 429

        # A new PIN: cookies given for the old one give nothing.
        clock_offset(dt.timedelta(days=33))
        renewed = _staff_pin(till, campaign, PIN, codes[3][:6])
        assert renewed.status_code == 200, renewed.text
        changed = account.client.patch(
            f"/v4/campaigns/{campaign['id']}", json={"pin": "8642"}, headers=account.headers
        )
        assert changed.status_code == 200, changed.text
        assert _search(attackers, campaign, 200)[0] == 100
        assert _staff_pin(till, campaign, "8642", codes[4][:6]).status_code == 429
    finally:
        for client in (*attackers, till, newcomer, forger):
            client.close()


def test_the_qr_scan_page_gives_the_cookie_and_the_phone_does_not(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """A right PIN on the QR scan page (the staff's device) gives the staff device cookie; the PIN
    typed on the consumer's phone does not: that device is the consumer's."""
    campaign = create_campaign(account, validation_methods="pin,qr")
    scanned, on_phone = bulk_sessions(runtime, campaign["id"], 2)
    attackers = [_from(live_server, n) for n in range(2, 13)]
    staff_phone, consumer = _from(live_server, 30), _from(live_server, 31)
    try:
        scan = f"/p/{campaign['code']}/{scanned}/scan"
        done = staff_phone.post(scan, data={"csrf": csrf_token(staff_phone, scan), "pin": PIN}, headers=JSON)
        assert done.status_code == 200, done.text
        assert "oc_staff" in staff_phone.cookies
        page = f"/p/{campaign['code']}/{on_phone}"
        done = consumer.post(f"{page}/validate", data={"csrf": csrf_token(consumer, page), "pin": PIN})
        assert done.status_code in (200, 303), done.text
        assert "oc_staff" not in consumer.cookies
        # Locked by a search (on the scan pages of coupons the attackers opened): the staff phone
        # scans the next coupon and validates it.
        (following,) = bulk_sessions(runtime, campaign["id"], 1)
        for n, client in enumerate(attackers):
            target = f"/p/{campaign['code']}/{bulk_sessions(runtime, campaign['id'], 1)[0]}/scan"
            token = csrf_token(client, target)
            for guess in range(5):  # five wrong PINs lock one coupon
                client.post(target, data={"csrf": token, "pin": f"{n}{guess:03d}"}, headers=JSON)
            target = f"/p/{campaign['code']}/{bulk_sessions(runtime, campaign['id'], 1)[0]}/scan"
            token = csrf_token(client, target)
            for guess in range(5, 10):
                client.post(target, data={"csrf": token, "pin": f"{n}{guess:03d}"}, headers=JSON)
        scan = f"/p/{campaign['code']}/{following}/scan"
        refused = consumer.post(scan, data={"csrf": csrf_token(consumer, scan), "pin": PIN}, headers=JSON)
        assert refused.status_code == 429, refused.text
        done = staff_phone.post(scan, data={"csrf": csrf_token(staff_phone, scan), "pin": PIN}, headers=JSON)
        assert done.status_code == 200, done.text
        assert session_status(account, following)["validated"] == "1"
    finally:
        for client in (*attackers, staff_phone, consumer):
            client.close()
