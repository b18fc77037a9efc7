"""An account's branding on its consumer pages over real HTTP: the logo and colours saved on the
dashboard's account page show on its coupon (/p), loyalty card (/l) and directory (/d) pages and
in the campaign preview; other accounts' pages keep the standard look; the form refuses colours
that are not hex and logo addresses that are not http(s); bad stored data is ignored."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx2
import pytest
from sqlalchemy import event

from conftest import LiveServer, TestAccount
from coupons_fixtures import bulk_sessions, create_campaign, open_session
from dashboard_fixtures import post_form, signed_in
from directories_fixtures import create_directory
from loyalty_fixtures import create_card, create_holder
from opencoupon import branding
from opencoupon.models import Account
from opencoupon.runtime import Runtime

ACCOUNT_PAGE = "/dashboard/account"
LOGO = "https://cdn.example.com/acme/logo.png"
BRAND_STYLE = "--accent:#ff6600;--accent-fg:#1d2330;--bg:#fff8e1;--fg:#222"
_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def _set_company(runtime: Runtime, account_id: int, name: str) -> None:
    with runtime.db.transaction() as session:
        row = session.get(Account, account_id)
        assert row is not None
        row.company_name = name


def _store_branding(runtime: Runtime, account_id: int, raw: str) -> None:
    with runtime.db.transaction() as session:
        row = session.get(Account, account_id)
        assert row is not None
        row.branding = raw


def _body_tag(html: str) -> str:
    found = re.search(r"<body[^>]*>", html)
    assert found is not None, html
    return found.group(0)


def _assert_branded(html: str) -> None:
    assert _body_tag(html) == f'<body class="branded" style="{BRAND_STYLE}">'
    assert f'<img class="brand-logo" src="{LOGO}" alt="Acme &amp; Sons">' in html
    # The logo comes first on the page, above the page's own heading.
    assert html.index("brand-logo") < html.index("<h1")


def _assert_plain(html: str) -> None:
    assert _body_tag(html) == "<body>"
    assert "brand-logo" not in html


def _consumer_pages(live_server: LiveServer, account: TestAccount, runtime: Runtime) -> dict[str, str]:
    """The HTML of every kind of consumer page of `account` (campaign, card, directory)."""
    campaign = create_campaign(account, name="Coffee", title="Free coffee")
    code = campaign["code"]
    pages: dict[str, str] = {}
    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        session_code = open_session(live_server, code)
        pages["coupon"] = web.get(f"/p/{code}/{session_code}").text
        pages["coupon again"] = web.get(f"/p/{code}/{session_code}").text
        # A single-use link lands on the session page of a session made beforehand.
        [single] = bulk_sessions(runtime, campaign["id"], 1)
        pages["single-use"] = web.get(f"/p/{code}/{single}").text
        pages["coupon staff"] = web.get(f"/p/{code}/staff").text
        pages["coupon scan"] = web.get(f"/p/{code}/{session_code}/scan").text

        card = create_card(account, name="Bean Club", type="stamp", pin="1357")
        pages["card join"] = web.get(f"/l/{card['code']}").text
        holder = create_holder(account, card["id"], first_name="Eva")
        pages["card"] = web.get(urlsplit(holder["url"]).path).text
        staff = web.get(f"/l/{card['code']}/staff")
        pages["card staff"] = staff.text
        token = _FORM_TOKEN.search(staff.text)
        assert token is not None
        added = web.post(
            f"/l/{card['code']}/staff",
            data={"form_token": token.group(1), "holder": holder["code"], "pin": "1357", "amount": "1"},
        )
        assert added.status_code == 200, added.text
        pages["card staff result"] = added.text

        book = create_directory(account, name="City book", campaigns=[campaign["id"]])
        pages["directory"] = web.get(f"/d/{book['code']}").text
        pages["directory register"] = web.get(f"/d/{book['code']}/register").text
        pages["directory login"] = web.get(f"/d/{book['code']}/login").text
    for name, html in pages.items():
        assert "<h1" in html, name
    return pages


def test_branding_from_the_dashboard_shows_on_every_consumer_page(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    _set_company(runtime, account.id, "Acme & Sons")
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(
            web,
            ACCOUNT_PAGE,
            f"{ACCOUNT_PAGE}/settings",
            {
                "timezone": "Europe/Brussels",
                "logo_url": LOGO,
                "primary_color": "#FF6600",
                "background_color": "#fff8e1",
                "text_color": "#222",
            },
        )
        assert saved.status_code == 303, saved.text
        shown = web.get(ACCOUNT_PAGE).text
        assert 'value="#ff6600"' in shown
        assert 'value="#222"' in shown
        # The sample card of the account page uses the saved look.
        assert f'id="brand-preview" role="group" aria-labelledby="preview-h" style="{BRAND_STYLE}"' in shown
        assert f'src="{LOGO}"' in shown

        pages = _consumer_pages(live_server, account, runtime)
        for name, html in pages.items():
            try:
                _assert_branded(html)
            except AssertionError as err:
                raise AssertionError(f"{name} page is not branded") from err

        # The dashboard's preview of a campaign's consumer page is branded too.
        campaign = create_campaign(account, name="Previewed")
        preview = web.get(f"/dashboard/campaigns/{campaign['id']}/preview")
        assert preview.status_code == 200
        _assert_branded(preview.text)

        # JSON answers of the same pages carry no branding.
        with httpx2.Client(base_url=live_server.url, timeout=30) as api:
            code = campaign["code"]
            session_code = open_session(live_server, code)
            answer = api.get(f"/p/{code}/{session_code}", headers={"Accept": "application/json"})
            assert answer.status_code == 200
            assert "brand" not in answer.text

    # Another account's pages keep the standard look.
    for name, html in _consumer_pages(live_server, other_account, runtime).items():
        try:
            _assert_plain(html)
        except AssertionError as err:
            raise AssertionError(f"{name} page of another account is branded") from err


def test_an_account_without_a_logo_gets_its_colours_only(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(
            web, ACCOUNT_PAGE, f"{ACCOUNT_PAGE}/settings", {"timezone": "UTC", "primary_color": "#0a3d91"}
        )
        assert saved.status_code == 303
    campaign = create_campaign(account)
    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        html = web.get(f"/p/{campaign['code']}/{open_session(live_server, campaign['code'])}").text
    # A dark main colour keeps white button labels.
    assert _body_tag(html) == '<body class="branded" style="--accent:#0a3d91;--accent-fg:#ffffff">'
    assert "brand-logo" not in html

    # Emptying every field brings back the standard look.
    with signed_in(live_server.url, account.email) as web:
        assert (
            post_form(web, ACCOUNT_PAGE, f"{ACCOUNT_PAGE}/settings", {"timezone": "UTC"}).status_code == 303
        )
    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        html = web.get(f"/p/{campaign['code']}/{open_session(live_server, campaign['code'])}").text
    _assert_plain(html)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"primary_color": "red"}, "Main colour: “red” is not a hex colour"),
        ({"background_color": "#12345"}, "Background colour: “#12345” is not a hex colour"),
        (
            {"primary_color": "#f60;background:url(https://evil.example/x)"},
            "Main colour: “#f60;background:url(https://evil.example/x)” is not a hex colour",
        ),
        ({"text_color": '#000"><script>alert(1)</script>'}, "Text colour: “#000&#34;&gt;&lt;script&gt;"),
        ({"text_color": "#eeeeee"}, "Text colour: #eeeeee is too light to read on the white cards"),
        ({"logo_url": "javascript:alert(document.cookie)"}, "Logo URL: use a full web address"),
        ({"logo_url": "data:image/svg+xml;base64,PHN2Zz4="}, "Logo URL: use a full web address"),
        ({"logo_url": "https://"}, "Logo URL: use a full web address"),
        ({"logo_url": "https://example.com/a logo.png"}, "Logo URL: use a full web address"),
    ],
)
def test_the_form_refuses_bad_colours_and_logo_addresses(
    live_server: LiveServer, account: TestAccount, fields: dict[str, str], message: str
) -> None:
    with signed_in(live_server.url, account.email) as web:
        good = {"timezone": "UTC", "logo_url": LOGO, "primary_color": "#112233"}
        assert post_form(web, ACCOUNT_PAGE, f"{ACCOUNT_PAGE}/settings", good).status_code == 303
        refused = post_form(web, ACCOUNT_PAGE, f"{ACCOUNT_PAGE}/settings", {**good, **fields})
        assert refused.status_code == 422
        assert "Please fix the following" in refused.text
        assert message.replace('"', "&#34;") in refused.text.replace("&quot;", "&#34;")
        assert "<script>alert" not in refused.text
        # Nothing was saved: the page shows the earlier branding.
        shown = web.get(ACCOUNT_PAGE).text
        assert 'value="#112233"' in shown
        assert f'value="{LOGO}"' in shown


def test_bad_stored_branding_is_ignored_on_the_pages(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    card = create_card(account, name="Bean Club", type="stamp")
    path = f"/l/{card['code']}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        _store_branding(runtime, account.id, '{"primary_color": "#123456"}')
        assert (
            _body_tag(web.get(path).text)
            == '<body class="branded" style="--accent:#123456;--accent-fg:#ffffff">'
        )

        # Written by hand or by an older version: only the valid parts are used.
        _store_branding(
            runtime,
            account.id,
            '{"logo_url": "javascript:alert(1)", "primary_color": "red;} body {display:none",'
            ' "background_color": "#fff\\"><script>alert(1)</script>", "text_color": "#333"}',
        )
        html = web.get(path).text
        assert _body_tag(html) == '<body class="branded" style="--fg:#333">'
        assert "javascript:" not in html
        assert "display:none" not in html
        assert "<script>alert" not in html

        # A text colour too light for the white cards is ignored, as the form refuses it.
        _store_branding(runtime, account.id, '{"text_color": "#eeeeee", "primary_color": "#123456"}')
        assert (
            _body_tag(web.get(path).text)
            == '<body class="branded" style="--accent:#123456;--accent-fg:#ffffff">'
        )

        for raw in ("{not json", "[1, 2]", '{"logo_url": "ftp://files.example.com/logo.png"}', ""):
            _store_branding(runtime, account.id, raw)
            html = web.get(path).text
            _assert_plain(html)

    # The account page says which saved values are ignored and shows them as empty.
    _store_branding(runtime, account.id, '{"logo": "javascript:alert(1)", "primary_color": "red"}')
    with signed_in(live_server.url, account.email) as web:
        page = web.get(ACCOUNT_PAGE).text
        assert "Saved branding ignored on your pages. Logo URL" in page
        assert "Saved branding ignored on your pages. Main colour: “red”" in page
        assert 'name="primary_color" value=""' in page


def test_a_change_shows_on_the_next_page_view(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """Directory and card pages take the brand from a short cache; a change clears it at once."""
    book = create_directory(account, name="City book")
    path = f"/d/{book['code']}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        _assert_plain(web.get(path).text)
        with signed_in(live_server.url, account.email) as dash:
            saved = post_form(
                dash,
                ACCOUNT_PAGE,
                f"{ACCOUNT_PAGE}/settings",
                {"timezone": "UTC", "primary_color": "#0a3d91"},
            )
            assert saved.status_code == 303
        assert "--accent:#0a3d91" in _body_tag(web.get(path).text)
        with signed_in(live_server.url, account.email) as dash:
            saved = post_form(
                dash,
                ACCOUNT_PAGE,
                f"{ACCOUNT_PAGE}/settings",
                {"timezone": "UTC", "primary_color": "#8a1c1c"},
            )
            assert saved.status_code == 303
        assert "--accent:#8a1c1c" in _body_tag(web.get(path).text)


def _statements(runtime: Runtime, web: httpx2.Client, path: str) -> int:
    """How many SQL statements the server ran to answer GET `path`."""
    return len(_statement_texts(runtime, web, path))


def _statement_texts(runtime: Runtime, web: httpx2.Client, path: str) -> list[str]:
    """The SQL statements (through SQLAlchemy) the server ran to answer GET `path`."""
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(runtime.db.engine, "before_cursor_execute", count)
    try:
        answer = web.get(path)
        assert answer.status_code == 200, answer.text
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", count)
    return seen


def test_branding_costs_no_query_on_the_coupon_page(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    """The coupon page already reads the account row (its time zone): the brand comes with it.
    Card and directory pages read it once, then from the short cache."""
    _store_branding(runtime, account.id, f'{{"logo_url": "{LOGO}", "primary_color": "#0a3d91"}}')
    counts: dict[str, list[int]] = {}
    for owner in (account, other_account):
        campaign = create_campaign(owner)
        card = create_card(owner, name="Bean Club", type="stamp")
        book = create_directory(owner, name="City book", campaigns=[campaign["id"]])
        paths = [
            f"/p/{campaign['code']}/{open_session(live_server, campaign['code'])}",
            f"/l/{card['code']}",
            f"/d/{book['code']}",
        ]
        with httpx2.Client(base_url=live_server.url, timeout=30) as web:
            for path in paths:
                web.get(path)
            counts[str(owner.id)] = [_statements(runtime, web, path) for path in paths]
            assert ("brand-logo" in web.get(paths[0]).text) is (owner is account)
        if owner is account:
            coupon_page, card_page = paths[0], paths[1]
    assert counts[str(account.id)] == counts[str(other_account.id)]
    assert all(n > 0 for n in counts[str(account.id)])

    # With the cache empty: the coupon page still reads no brand of its own; a card page reads it
    # once (its two columns), and not again on the next view.
    def brand_reads(statements: list[str]) -> int:
        return sum(s.startswith("SELECT accounts.branding, accounts.company_name") for s in statements)

    with httpx2.Client(base_url=live_server.url, timeout=30) as web:
        branding.clear_cache()
        assert brand_reads(_statement_texts(runtime, web, coupon_page)) == 0
        branding.clear_cache()
        assert brand_reads(_statement_texts(runtime, web, card_page)) == 1
        assert brand_reads(_statement_texts(runtime, web, card_page)) == 0
