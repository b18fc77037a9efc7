"""Required consent and custom fields on the claim form: which names `required_fields` takes
(standard fields, `consent` with a consent text, the campaign's own custom fields), the claim page
that enforces them, and the dashboard's campaign form that marks them required."""

from __future__ import annotations

from typing import Any

import httpx2

from conftest import LiveServer
from coupons_fixtures import Acct, bulk_sessions, create_campaign, csrf_token, session_status
from dashboard_fixtures import post_form, signed_in
from opencoupon.coupons.schemas import required_fields_problem
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

JSON = {"Accept": "application/json"}


def _form(**settings: Any) -> dict[str, Any]:
    return {"fields": [], "required": [], "custom_fields": [], "consent_text": "", **settings}


def test_required_fields_problem_names_what_is_wrong() -> None:
    assert required_fields_problem(_form(fields=["email"], required=["email"])) is None
    assert required_fields_problem(_form(consent_text="I agree", required=["consent"])) is None
    assert required_fields_problem(_form(custom_fields=["Loyalty no"], required=["Loyalty no"])) is None
    not_asked = required_fields_problem(_form(fields=["email"], required=["phone"]))
    assert not_asked == "phone cannot be required without being asked: add it to claim_fields too."
    no_text = required_fields_problem(_form(required=["consent"]))
    assert no_text == "consent cannot be required without a consent box: set consent_text too."
    unknown = required_fields_problem(_form(custom_fields=["Loyalty no"], required=["loyalty_no"]))
    assert unknown is not None
    assert unknown.startswith("loyalty_no is not a field of the claim form")


def _set_required(runtime: Runtime, campaign_id: str, required: list[str]) -> None:
    """Require fields directly on the saved campaign (as the API will once it takes them)."""
    with runtime.db.transaction() as s:
        campaign = s.get(Campaign, int(campaign_id.removeprefix("cam_")))
        assert campaign is not None
        campaign.claim_form = {**campaign.claim_form, "required": required}


def test_the_claim_form_enforces_required_custom_fields_and_consent(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(
        account, claim_fields="firstname", custom_fields="Loyalty no", consent_text="I agree to the terms."
    )
    _set_required(runtime, campaign["id"], ["Loyalty no", "consent"])
    code, with_json = bulk_sessions(runtime, campaign["id"], 2)
    path = f"/p/{campaign['code']}/{code}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        page = phone.get(path).text
        assert "Loyalty no (required)" in page
        assert "I agree to the terms. (required)" in page
        token = csrf_token(phone, path)
        no_number = phone.post(f"{path}/claim", data={"csrf": token, "firstname": "Ada", "consent": "on"})
        assert no_number.status_code == 422
        assert "Please fill in Loyalty no." in no_number.text
        assert 'value="Ada"' in no_number.text
        blank = phone.post(
            f"{path}/claim", data={"csrf": token, "custom_Loyalty no": "  ", "consent": "on"}, headers=JSON
        )
        assert blank.status_code == 422
        assert blank.json()["status"]["errors"]["error_code"] == [300]
        assert blank.json()["status"]["errors"]["error_message_description"] == ["Please fill in Loyalty no."]
        no_consent = phone.post(f"{path}/claim", data={"csrf": token, "custom_Loyalty no": "L-42"})
        assert no_consent.status_code == 422
        assert "Please give your consent." in no_consent.text
        assert session_status(account, code)["claimed"] == "0"
        done = phone.post(f"{path}/claim", data={"csrf": token, "custom_Loyalty no": "L-42", "consent": "on"})
        assert done.status_code == 303, done.text
        other = phone.post(
            f"/p/{campaign['code']}/{with_json}/claim",
            data={"csrf": token, "custom_Loyalty no": "L-43", "consent": "on"},
            headers=JSON,
        )
        assert other.status_code == 200, other.text
    user = account.call("/v3/couponsession/data", couponsession=code).json()["data"]["user"]
    assert user["custom_fields"] == {"Loyalty no": "L-42"}
    assert user["consent"] == "1"


def test_a_form_of_only_custom_fields_and_consent_is_shown(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """No standard field asked: the custom fields and the consent box still make a claim form."""
    campaign = create_campaign(account, claim_fields="", custom_fields="Shoe size", consent_text="Yes")
    _set_required(runtime, campaign["id"], ["consent"])
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        page = phone.get(f"/p/{campaign['code']}/{code}").text
        assert f'action="/p/{campaign["code"]}/{code}/claim"' in page
        assert 'name="custom_Shoe size"' in page


def test_the_dashboard_campaign_form_offers_custom_fields_and_consent_as_required(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, custom_fields="Loyalty no,Shoe size", consent_text="I agree")
    _set_required(runtime, campaign["id"], ["Shoe size"])
    with signed_in(live_server.url, account.email) as web:
        form = web.get(f"/dashboard/campaigns/{campaign['id']}/edit").text
    assert 'name="required_fields" value="Loyalty no">' in form
    assert 'name="required_fields" value="Shoe size" checked>' in form
    assert 'name="required_fields" value="consent">' in form


def test_the_api_and_the_dashboard_require_consent_and_custom_fields(
    account: Acct, live_server: LiveServer
) -> None:
    def post(body: dict[str, Any]) -> httpx2.Response:
        return account.client.post("/v4/campaigns", json={"name": "x", **body}, headers=account.headers)

    made = post({"consent_text": "I agree", "required_fields": "consent"})
    assert made.status_code == 201, made.text
    assert made.json()["required_fields"] == ["consent"]
    made = post(
        {"custom_fields": "loyalty_no", "required_fields": "loyalty_no,consent", "consent_text": "Yes"}
    )
    assert made.status_code == 201, made.text
    for body, words in (
        ({"required_fields": "consent"}, "set consent_text too"),
        ({"custom_fields": "loyalty_no", "required_fields": "loyalty_id"}, "loyalty_id is not a field"),
    ):
        refused = post(body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["status"]["errors"]["error_code"] == [300]
        assert words in refused.json()["status"]["errors"]["error_message_description"][0]
    # Dropping a required custom field (or the consent text) drops its requirement first.
    dropped = account.client.patch(
        f"/v4/campaigns/{made.json()['id']}", json={"custom_fields": ""}, headers=account.headers
    )
    assert dropped.status_code == 422, dropped.text
    with signed_in(live_server.url, account.email) as web:
        path = f"/dashboard/campaigns/{made.json()['id']}/edit"
        saved = post_form(
            web,
            path,
            path,
            {
                "name": "x",
                "validation_methods": ["pin"],
                "custom_fields": "loyalty_no",
                "consent_text": "Yes",
                "required_fields": ["consent"],
            },
        )
        assert saved.status_code == 303, saved.text
        refused = post_form(
            web, path, path, {"name": "x", "validation_methods": ["pin"], "required_fields": ["consent"]}
        )
        assert refused.status_code == 422
        assert "set consent_text too" in refused.text
