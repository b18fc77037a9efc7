"""Dashboard review 3: campaign text is saved whole (the forms cut it at 5,000 characters and said
saved), a value is refused rather than cut to what the API takes, and a subaccount post without an
expiry keeps it."""

from __future__ import annotations

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in

CAMPAIGN_FORM = {"validation_methods": ["pin"], "status": "active", "expiry_mode": "none"}
LONG_TEXTS = {"description": "D" * 8000, "terms": "T" * 7000, "consent_text": "C" * 6000}


def _campaign_texts(account: TestAccount, campaign_id: str) -> dict[str, int]:
    made = account.client.get(f"/v4/campaigns/{campaign_id}", headers=account.headers).json()
    return {name: len(made[name]) for name in LONG_TEXTS}


def test_a_campaign_edit_keeps_long_text(live_server: LiveServer, account: TestAccount) -> None:
    """A campaign made through the API with an 8,000-character description, renamed on the
    dashboard, keeps its description, terms and consent text whole."""
    made = account.client.post(
        "/v4/campaigns", json={"name": "Long", "pin": "4321", **LONG_TEXTS}, headers=account.headers
    )
    assert made.status_code == 201, made.text
    campaign_id = made.json()["id"]
    edit = f"/dashboard/campaigns/{campaign_id}/edit"
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(web, edit, edit, {**CAMPAIGN_FORM, "name": "Renamed", **LONG_TEXTS})
        assert saved.status_code == 303, saved.text[:500]
    assert _campaign_texts(account, campaign_id) == {name: len(text) for name, text in LONG_TEXTS.items()}


def test_a_new_campaign_keeps_long_text(live_server: LiveServer, account: TestAccount) -> None:
    new = "/dashboard/campaigns/new"
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(web, new, new, {**CAMPAIGN_FORM, "name": "Long", "pin": "4321", **LONG_TEXTS})
        assert saved.status_code == 303, saved.text[:500]
    campaign_id = saved.headers["location"].split("/")[-1].split("?")[0]
    assert _campaign_texts(account, campaign_id) == {name: len(text) for name, text in LONG_TEXTS.items()}


def test_the_campaign_form_refuses_nul(live_server: LiveServer, account: TestAccount) -> None:
    """As the API refuses it (error 301): SQLite stored it, PostgreSQL failed on it."""
    new = "/dashboard/campaigns/new"
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, new, new, {**CAMPAIGN_FORM, "name": "Nul", "description": "a\x00b"})
    assert refused.status_code == 422, refused.text[:500]
    assert "Invalid character in parameter: description." in refused.text


def test_a_payment_link_too_long_is_refused_not_cut(live_server: LiveServer, account: TestAccount) -> None:
    """The API refuses a payment link over 2,000 characters; the form cut it to 2,000 and saved."""
    new = "/dashboard/directories-new"
    link = "https://pay.example.com/" + "p" * 2000
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, new, new, {"name": "Paid book", "access": "payment", "payment_url": link})
    assert refused.status_code == 422, refused.text[:500]
    assert "Payment URL: use at most 2000 characters." in refused.text


def test_a_value_valid_only_once_cut_is_refused(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """An expiry with junk after 245 spaces: cut to 255 characters (and stripped) it was a date,
    and saved; the API refuses it."""
    page = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as master:
        answer = post_form(master, page, f"{page}/edit", {"expiry_date": "2031-01-31" + " " * 245 + "junk"})
    assert answer.status_code == 422, answer.text[:500]
    info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
    assert info["expiry_date"] != "2031-01-31"


def test_a_subaccount_post_without_an_expiry_keeps_it(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", expiry_date="2031-01-31")
    page = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as master:
        assert post_form(master, page, f"{page}/edit", {"company_name": "Acme"}).status_code == 303
        info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
        assert info["expiry_date"] == "2031-01-31"
        # An emptied expiry still removes it.
        assert post_form(master, page, f"{page}/edit", {"expiry_date": ""}).status_code == 303
    info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
    assert not info["expiry_date"]
