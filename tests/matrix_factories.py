"""Objects for the tenancy matrix (tests/tenancy_*.py), made through the real API by their owner.

Each factory returns the owner's public IDs: "id" is the one a case asks about, the others are
what the call needs beside it (the card of a loyalty user, the directory of a registration)."""

from __future__ import annotations

import itertools
from typing import Any

from conftest import TestAccount
from helpers import assert_ok
from opencoupon.runtime import Runtime

_serial = itertools.count(1)

# Missing IDs in the formats the API takes (a well-formed ID that no row has).
MISSING_SESSION = "zzzzzzzzzzzzzzzzzzzzz"
MISSING_SHORT = "zzzzzz"
MISSING_EVENT = "evt_" + "Z" * 20


def _email() -> str:
    return f"matrix{next(_serial)}@example.com"


def _v4(owner: TestAccount, method: str, path: str, **body: Any) -> dict[str, Any]:
    response = owner.client.request(method, path, json=body, headers=owner.headers)
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


def campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = _v4(owner, "POST", "/v4/campaigns", name="Matrix coupon", pin="1234")
    return {"id": str(made["id"])}


def session(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A single-use coupon session: "id" its 21-character code, "short" its 6-character one."""
    cam = campaign(runtime, owner)["id"]
    made = assert_ok(owner.call("/v3/singleuse/create", campaign=cam, email=_email(), firstname="Ada"))
    return {
        "id": str(made["single_use_code"]),
        "short": str(made["widget_validation_code"]),
        "campaign": cam,
    }


def short_session(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = session(runtime, owner)
    return {"id": made["short"], "long": made["id"], "campaign": made["campaign"]}


def campaign_of_session(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = session(runtime, owner)
    return {"id": made["campaign"], "session": made["id"]}


def card(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = _v4(owner, "POST", "/v4/loyalty/loyalty-cards", name="Matrix card", type="points")
    return {"id": str(made["id"])}


def holder(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A loyalty user: "id" the user, "card" its card."""
    card_id = card(runtime, owner)["id"]
    made = assert_ok(
        owner.call(
            "/v3/loyaltyusers/create",
            loyaltycard=card_id,
            email=_email(),
            first_name="Bob",
            password="longpassword1",
        )
    )
    return {"id": str(made["user"]["ID"]), "card": card_id}


def card_of_holder(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = holder(runtime, owner)
    return {"id": made["card"], "user": made["id"]}


def directory(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = _v4(owner, "POST", "/v4/directory", name="Matrix directory", access="public")
    return {"id": str(made["id"])}


def registration(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A directory user: "id" the user, "directory" its directory."""
    dir_id = directory(runtime, owner)["id"]
    made = _v4(owner, "POST", f"/v4/directory/{dir_id}/users", email=_email(), password="longpassword1")
    return {"id": str(made["id"]), "directory": dir_id}


def directory_of_registration(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = registration(runtime, owner)
    return {"id": made["directory"], "user": made["id"]}


def directory_with_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A directory and a campaign of the owner: "id" the campaign."""
    return {"id": campaign(runtime, owner)["id"], "directory": directory(runtime, owner)["id"]}


def directory_of_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = directory_with_campaign(runtime, owner)
    return {"id": made["directory"], "campaign": made["id"]}


def campaign_in_directory(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A campaign listed in a directory: "id" the campaign."""
    cam = campaign(runtime, owner)["id"]
    made = _v4(owner, "POST", "/v4/directory", name="Matrix directory", campaigns=[cam])
    return {"id": cam, "directory": str(made["id"])}


def directory_listing_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = campaign_in_directory(runtime, owner)
    return {"id": made["directory"], "campaign": made["id"]}


def category_and_listed_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    return {"id": category(runtime, owner)["id"], "campaign": campaign_in_directory(runtime, owner)["id"]}


def category(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = _v4(owner, "POST", "/v4/categories", name=f"Matrix category {next(_serial)}")
    return {"id": str(made["id"])}


def category_and_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    return {"id": category(runtime, owner)["id"], "campaign": campaign(runtime, owner)["id"]}


def category_and_directory(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = directory_with_campaign(runtime, owner)
    return {"id": category(runtime, owner)["id"], "directory": made["directory"], "campaign": made["id"]}


def endpoint(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    made = _v4(owner, "POST", "/v4/webhooks", url="https://example.com/hook", events=["*"])
    return {"id": str(made["id"])}


def event(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    from opencoupon.events import service as events

    with runtime.db.transaction() as db:
        event_id: str = events.emit(
            db,
            owner.id,
            "coupon_validated",
            {"n": 1},
            campaign="cam_1",
            coupon_session="abcdefghijklmnopqrstu",
        )
    return {"id": event_id}


def subaccount(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    from opencoupon.accounts import service as accounts
    from opencoupon.models import Account

    with runtime.db.transaction() as db:
        parent = db.get(Account, owner.id)
        sub, _secret = accounts.create_account(db, runtime.keyring, email=_email(), parent=parent)
        return {"id": f"sub_{sub.id}"}


def fanout(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    cam = campaign(runtime, owner)["id"]
    made = assert_ok(owner.call("/v3/coupon/pushnotification/all", campaign=cam, message="Hello"))
    return {"id": str(made["notification"])}


def email_integration(owner: TestAccount) -> None:
    # Sends are queued (the suite's worker does not run), so no SMTP server has to listen.
    _v4(
        owner,
        "PUT",
        "/v4/integrations/email",
        host="127.0.0.1",
        port=9,
        tls="none",
        sender_email="coupons@shop.example",
    )


def sms_integration(owner: TestAccount) -> None:
    _v4(
        owner,
        "PUT",
        "/v4/integrations/sms",
        base_url="http://127.0.0.1:9",
        account_sid="AC0123456789abcdef",
        auth_token="token-s3cret",
        sender="+15005550006",
    )


def send(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """An e-mail send: "id" the send, "session" and "campaign" what it sent."""
    email_integration(owner)
    cam = campaign(runtime, owner)["id"]
    made = assert_ok(owner.call("/v3/send/email", campaign=cam, email=_email()))
    return {"id": str(made["send"]["ID"]), "session": str(made["couponsession"]), "campaign": cam}


def campaign_for_send(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    email_integration(owner)
    sms_integration(owner)
    return campaign(runtime, owner)


def session_for_send(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    email_integration(owner)
    sms_integration(owner)
    return session(runtime, owner)


def subaccount_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    """A campaign of one of the owner's subaccounts: "id" the campaign, "subaccount" its account."""
    from directories_fixtures import make_campaign

    sub = subaccount(runtime, owner)["id"]
    made = make_campaign(runtime, int(sub.removeprefix("sub_")))
    return {"id": f"cam_{made.id}", "subaccount": sub}
