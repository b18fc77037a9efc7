# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Per-person export and erasure (/v4/privacy/export, /v4/privacy/erase): the person's data is
found across coupons, single-use links, loyalty, directories and sends in any letter case, and
erasing it leaves no trace of their email, phone or names anywhere in the database while the
books (validations, balances, ledger, statistics) stay as they were; all within the caller's
tenancy."""

from __future__ import annotations

import csv
import io
import json
import random
import string
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select
from sqlalchemy import update as sql_update

from conftest import LiveServer, TestAccount, make_account
from coupons_fixtures import PIN, bulk_sessions, create_campaign, csrf_token
from directories_fixtures import Browser, create_directory
from helpers import assert_error, assert_ok
from loyalty_fixtures import create_card, update
from opencoupon.kit import idempotency
from opencoupon.kit.clock import utcnow
from opencoupon.models import (
    Campaign,
    CouponSession,
    DailyStat,
    DirectoryUser,
    DistributionSend,
    Event,
    IdempotencyRecord,
    Job,
    LoyaltyHolder,
    LoyaltyLedgerEntry,
    SingleUseBatch,
    Validation,
    WebhookAttempt,
    WebhookPayload,
)
from opencoupon.privacy import repository as privacy_repo
from opencoupon.privacy.schemas import PersonRef
from opencoupon.runtime import Runtime
from opencoupon.singleuse import batches
from opencoupon.worker import queue
from test_distribution_sms import configure_sms
from test_foundation_security import _dump
from webhooks_fixtures import Receiver, Reply, drain, receiver  # noqa: F401

EXPORT = "/v4/privacy/export"
ERASE = "/v4/privacy/erase"


@dataclass
class Person:
    email: str  # as the person types it (mixed case)
    phone: str  # as typed, with spaces
    first: str
    last: str

    @property
    def bare_phone(self) -> str:
        return self.phone.replace(" ", "")

    def traces(self) -> list[str]:
        return [self.email.lower(), self.email, self.phone, self.bare_phone, self.first, self.last]


def _word(n: int = 8) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=n))


def new_person() -> Person:
    digits = "".join(random.choices(string.digits, k=6))
    return Person(
        email=f"Zora.{_word()}@Example.org",
        phone=f"+44 7700 {digits}",
        first=f"Zoraida{_word(5).capitalize()}",
        last=f"Quillfeather{_word(6).capitalize()}",
    )


def export(account: TestAccount, email: str, **extra: str) -> dict[str, Any]:
    response = account.client.get(EXPORT, params={"email": email, **extra}, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def erase(account: TestAccount, person: Person, *, phone: bool = True) -> dict[str, int]:
    body = {"email": person.email.upper()}
    if phone:
        body["phone"] = person.phone
    response = account.client.post(ERASE, json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["erased"])


# --- the person's data, made through the real API and pages ---------------------------------------


def claimed_session(account: TestAccount, live_server: LiveServer, person: Person) -> tuple[str, str]:
    """A coupon opened and claimed on its page with every claim field, then validated with a
    value: (campaign ID, session code)."""
    campaign = create_campaign(
        account,
        claim_fields="firstname,lastname,email,phone,birthday",
        custom_fields="Shoe size",
        consent_text="I agree to receive offers.",
    )
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, location)
        done = phone.post(
            f"{location}/claim",
            data={
                "csrf": token,
                "firstname": person.first,
                "lastname": person.last,
                "email": person.email,
                "phone": person.phone,
                "birthday": "1990-04-01",
                "custom_Shoe size": f"size of {person.first}",
                "consent": "on",
            },
        )
        assert done.status_code == 303, done.text
    code = location.rsplit("/", 1)[1]
    assert_ok(
        account.call("/v3/couponsession/update", couponsession=code, validate=True, validation_value="12.50")
    )
    return campaign["id"], code


def singleuse_link(account: TestAccount, person: Person) -> str:
    campaign = create_campaign(account, pin=PIN)
    body = assert_ok(
        account.call(
            "/v3/singleuse/create",
            campaign=campaign["id"],
            firstname=person.first,
            lastname=person.last,
            email=person.email,
            phone=person.phone,
            customid=person.email,
        )
    )
    return str(body["single_use_code"])


def loyalty_holder(account: TestAccount, person: Person) -> tuple[int, str]:
    card = create_card(account, type="points")
    user = assert_ok(
        account.call(
            "/v3/loyaltyusers/create",
            loyaltycard=str(card["id"]),
            email=person.email,
            password="holder-password",
            first_name=person.first,
            last_name=person.last,
            phone=person.phone,
            birthday="1990-04-01",
        )
    )["user"]
    assert_ok(update(account, card["id"], user["ID"], points=30))
    assert_ok(update(account, card["id"], user["ID"], points=-5))
    return int(card["id"]), str(user["ID"])


def directory_user(account: TestAccount, person: Person) -> str:
    directory = account.client.post(
        "/v4/directory", json={"name": "Deals", "access": "login"}, headers=account.headers
    )
    assert directory.status_code == 201, directory.text
    user = account.client.post(
        f"/v4/directory/{directory.json()['id']}/users",
        json={
            "email": person.email,
            "password": "directory-password",
            "first_name": person.first,
            "last_name": person.last,
            "phone": person.phone,
            "birth_date": "1990-04-01",
            "address": f"1 {person.last} Lane",
            "zip": "90210",
            "city": "Springfield",
            "custom_1": person.email,
        },
        headers=account.headers,
    )
    assert user.status_code == 201, user.text
    return str(user.json()["id"])


def sms_send(account: TestAccount, sms_url: str, person: Person) -> tuple[str, str]:
    configure_sms(account, sms_url)
    campaign = create_campaign(account)
    body = assert_ok(
        account.call(
            "/v3/send/sms",
            campaign=campaign["id"],
            phone=person.phone,
            firstname=person.first,
            message=f"Hello {person.first}, your coupon: {{link}}",
        )
    )
    return str(body["send"]["ID"]), str(body["couponsession"])


@pytest.fixture
def receiver_for(receiver: Receiver) -> Any:
    def subscribe(account: TestAccount) -> None:
        response = account.client.post(
            "/v4/webhooks", json={"url": receiver.url + "/hook", "events": ["*"]}, headers=account.headers
        )
        assert response.status_code == 201, response.text

    return subscribe


# --- what must not change ------------------------------------------------------------------------


def books(runtime: Runtime, account_ids: list[int]) -> dict[str, Any]:
    """Everything erasure must keep: validations, counters, statistics, balances, the ledger."""
    with runtime.db.read() as session:
        sessions = session.execute(
            select(CouponSession.code, CouponSession.validation_count, CouponSession.validation_value)
            .where(CouponSession.account_id.in_(account_ids))
            .order_by(CouponSession.id)
        ).all()
        campaigns = session.execute(
            select(Campaign.id, Campaign.opens_count, Campaign.claims_count, Campaign.validations_count)
            .where(Campaign.account_id.in_(account_ids))
            .order_by(Campaign.id)
        ).all()
        campaign_ids = [row[0] for row in campaigns]
        stats = session.execute(
            select(
                DailyStat.campaign_id, DailyStat.day, DailyStat.opens, DailyStat.claims, DailyStat.validations
            )
            .where(DailyStat.campaign_id.in_(campaign_ids))
            .order_by(DailyStat.id)
        ).all()
        validations = session.execute(
            select(Validation.session_id, Validation.ordinal, Validation.method, Validation.validation_value)
            .where(Validation.account_id.in_(account_ids))
            .order_by(Validation.id)
        ).all()
        holders = session.execute(
            select(LoyaltyHolder.id, LoyaltyHolder.points, LoyaltyHolder.stamps, LoyaltyHolder.token)
            .where(LoyaltyHolder.account_id.in_(account_ids))
            .order_by(LoyaltyHolder.id)
        ).all()
        ledger = session.execute(
            select(LoyaltyLedgerEntry.holder_id, LoyaltyLedgerEntry.delta, LoyaltyLedgerEntry.balance_after)
            .where(LoyaltyLedgerEntry.account_id.in_(account_ids))
            .order_by(LoyaltyLedgerEntry.id)
        ).all()
    return {
        "sessions": [tuple(r) for r in sessions],
        "campaigns": [tuple(r) for r in campaigns],
        "stats": [tuple(r) for r in stats],
        "validations": [tuple(r) for r in validations],
        "holders": [tuple(r) for r in holders],
        "ledger": [tuple(r) for r in ledger],
    }


def traces_in_dump(runtime: Runtime, person: Person) -> list[str]:
    dump = _dump(runtime).lower()
    return [trace for trace in person.traces() if trace.lower() in dump]


# --- tests ---------------------------------------------------------------------------------------


def test_export_finds_the_person_everywhere_in_any_letter_case(
    runtime: Runtime,
    live_server: LiveServer,
    account: TestAccount,
    subaccount: TestAccount,
    dist_sms: Any,
) -> None:
    person = new_person()
    campaign, code = claimed_session(account, live_server, person)
    link = singleuse_link(subaccount, person)
    card_id, holder_id = loyalty_holder(account, person)
    reg = directory_user(subaccount, person)
    send_id, sms_session = sms_send(subaccount, dist_sms.url, person)

    found = export(account, person.email.upper(), phone=person.phone)
    assert found["email"] == person.email.lower()
    sessions = {s["couponsession"]: s for s in found["coupon_sessions"]}
    assert set(sessions) == {code, link, sms_session}
    claimed = sessions[code]
    assert claimed["campaign"] == campaign
    assert (claimed["firstname"], claimed["lastname"]) == (person.first, person.last)
    assert claimed["email"] == person.email.lower()
    assert claimed["phone"] == person.phone
    assert claimed["birthday"] == "1990-04-01"
    assert claimed["custom_fields"] == {"Shoe size": f"size of {person.first}"}
    assert claimed["consent"] is True
    assert claimed["claimed_at"]
    assert claimed["validated_at"]
    assert claimed["validation_count"] == 1
    assert [(v["ordinal"], v["validation_value"]) for v in claimed["validations"]] == [(1, "12.50")]
    assert sessions[link]["source"] == "single_use"
    assert sessions[link]["customid"] == person.email

    [holder] = found["loyalty_users"]
    assert (holder["id"], holder["loyalty_card_id"]) == (int(holder_id), card_id)
    assert (holder["email"], holder["first_name"], holder["points"]) == (person.email, person.first, 25)
    assert [(e["delta"], e["balance_after"]) for e in holder["ledger"]] == [(30, 30), (-5, 25)]
    assert "password" not in json.dumps(holder)

    [user] = found["directory_users"]
    assert user["id"] == reg
    assert (user["email"], user["address"], user["custom_1"]) == (
        person.email.lower(),
        f"1 {person.last} Lane",
        person.email,
    )
    assert not [key for key in user if "password" in key]

    [send] = found["sends"]
    assert (send["id"], send["channel"], send["couponsession"]) == (send_id, "sms", sms_session)
    assert send["recipient"] == person.bare_phone
    assert {e["type"] for e in found["events"]} >= {
        "coupon_claimed",
        "loyalty_user_created",
        "singleuse_created",
    }

    # Without the phone the SMS (which has no email) is not theirs; in lower case it is all the same.
    by_email = export(account, person.email.lower())
    assert {s["couponsession"] for s in by_email["coupon_sessions"]} == {code, link}
    assert by_email["sends"] == []
    # A subaccount sees only its own rows.
    own = export(subaccount, person.email, phone=person.phone)
    assert {s["couponsession"] for s in own["coupon_sessions"]} == {link, sms_session}
    assert own["loyalty_users"] == []
    assert [u["id"] for u in own["directory_users"]] == [reg]


def test_erase_leaves_no_trace_and_keeps_the_books(
    runtime: Runtime,
    live_server: LiveServer,
    account: TestAccount,
    subaccount: TestAccount,
    dist_sms: Any,
    receiver: Receiver,
    receiver_for: Any,
) -> None:
    person = new_person()
    receiver_for(account)
    receiver_for(subaccount)
    _, code = claimed_session(account, live_server, person)
    link = singleuse_link(subaccount, person)
    loyalty_holder(account, person)
    reg = directory_user(subaccount, person)
    send_id, _ = sms_send(subaccount, dist_sms.url, person)
    drain(runtime)  # webhooks delivered (their bodies stored), the SMS sent
    assert receiver.received
    with runtime.db.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookPayload)) > 0
    assert traces_in_dump(runtime, person) == person.traces()
    before = books(runtime, [account.id, subaccount.id])

    counts = erase(account, person)
    assert counts["coupon_sessions"] == 3
    assert counts["loyalty_users"] == 1
    assert counts["directory_users"] == 1
    assert counts["sends"] == 1
    assert counts["events"] >= 4

    assert traces_in_dump(runtime, person) == []
    assert books(runtime, [account.id, subaccount.id]) == before
    with runtime.db.read() as session:
        user = session.get(DirectoryUser, int(reg.removeprefix("reg_")))
        assert user is not None
        assert user.email == f"erased-{user.id}@invalid"
        assert not user.password_hash.startswith("$argon2")
        send = session.get(DistributionSend, int(send_id.removeprefix("snd_")))
        assert send is not None
        assert send.status == "sent"
        erased_events = session.scalars(select(Event).where(Event.type == "privacy_erased")).all()
        by_account = {
            e.account_id: json.loads(e.data)
            for e in erased_events
            if e.account_id in (account.id, subaccount.id)
        }
    # One event per account whose rows changed, naming them by ID only.
    assert code in by_account[account.id]["coupon_sessions"]
    assert link in by_account[subaccount.id]["coupon_sessions"]
    assert by_account[subaccount.id]["directory_users"] == [reg]

    # The directory user cannot sign in any more, with either address.
    found = export(account, person.email, phone=person.phone)
    assert all(not found[kind] for kind in ("coupon_sessions", "loyalty_users", "directory_users", "sends"))
    # Erasing again changes nothing.
    assert set(erase(account, person).values()) == {0}


def test_erase_stops_a_send_not_yet_made(runtime: Runtime, account: TestAccount, dist_sms: Any) -> None:
    person = new_person()
    send_id, _ = sms_send(account, dist_sms.url, person)
    # A form body with the + unencoded (it arrives as a space) still names the number.
    response = account.client.post(
        ERASE,
        content=f"email=x-{_word()}@example.com&phone={person.bare_phone}",
        headers={**account.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["erased"]["sends"] == 1
    drain(runtime)
    with runtime.db.read() as session:
        send = session.get(DistributionSend, int(send_id.removeprefix("snd_")))
        assert send is not None
        assert send.status == "failed"
        assert "erased" in send.last_error
    assert dist_sms.requests == []


def test_erase_stays_within_the_tenancy(
    runtime: Runtime, live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    person = new_person()
    sub = make_account(runtime, live_server, parent_id=account.id)
    sibling = make_account(runtime, live_server, parent_id=account.id)
    try:
        loyalty_holder(account, person)
        loyalty_holder(sub, person)
        loyalty_holder(sibling, person)
        loyalty_holder(other_account, person)
        directory_user(other_account, person)

        # A subaccount erases only its own people: not its master's, not a sibling's.
        assert erase(sub, person)["loyalty_users"] == 1
        assert len(export(account, person.email)["loyalty_users"]) == 2
        assert len(export(sibling, person.email)["loyalty_users"]) == 1
        # A master erases in its subaccounts too.
        assert erase(account, person)["loyalty_users"] == 2
        assert export(sibling, person.email)["loyalty_users"] == []
        # Another business keeps its own records of the same person.
        theirs = export(other_account, person.email)
        assert [u["email"] for u in theirs["loyalty_users"]] == [person.email]
        assert [u["first_name"] for u in theirs["directory_users"]] == [person.first]
    finally:
        sub.client.close()
        sibling.client.close()


def test_unknown_email_and_bad_input(account: TestAccount) -> None:
    nobody = f"nobody-{_word()}@example.com"
    found = export(account, nobody)
    assert [found[k] for k in ("coupon_sessions", "loyalty_users", "directory_users", "sends")] == [[]] * 4
    response = account.client.post(ERASE, json={"email": nobody}, headers=account.headers)
    assert response.status_code == 200
    assert set(response.json()["erased"].values()) == {0}

    for body in ({}, {"email": ""}, {"email": "  ", "phone": "+447700900123"}):
        assert_error(account.client.post(ERASE, json=body, headers=account.headers), 422, 200)
    assert_error(account.client.get(EXPORT, headers=account.headers), 422, 200)
    for bad in ("not-an-email", "a@b", "two@@example.com", "x" * 250 + "@example.com"):
        assert_error(account.client.post(ERASE, json={"email": bad}, headers=account.headers), 422, 305)
        assert_error(account.client.get(EXPORT, params={"email": bad}, headers=account.headers), 422, 305)
    bad_phone = account.client.post(
        ERASE, data={"email": nobody, "phone": "call me"}, headers=account.headers
    )
    assert_error(bad_phone, 422, 300)
    # Form-encoded bodies work as everywhere else.
    form = account.client.post(ERASE, data={"email": nobody}, headers=account.headers)
    assert form.status_code == 200, form.text


# --- what is theirs, and only theirs ---------------------------------------------------------------


def claim(
    live_server: LiveServer, campaign_code: str, email: str, phone: str = "", first: str = "Ann"
) -> str:
    """A claim on the coupon's page (a coupon_claimed event with the details); its session code."""
    with httpx2.Client(base_url=live_server.url, timeout=30) as browser:
        location = browser.get(f"/p/{campaign_code}").headers["location"]
        done = browser.post(
            f"{location}/claim",
            data={"csrf": csrf_token(browser, location), "firstname": first, "email": email, "phone": phone},
        )
        assert done.status_code == 303, done.text
    return location.rsplit("/", 1)[1]


def erase_body(account: TestAccount, **body: Any) -> dict[str, int]:
    response = account.client.post(ERASE, json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["erased"])


@dataclass
class Stored:
    """An event as stored, with the webhook body built from it and the receivers' answers."""

    public_id: str
    type: str
    data: dict[str, Any]
    body: str | None
    answers: list[str]


def stored_events(runtime: Runtime, account_id: int, **where: Any) -> list[Stored]:
    with runtime.db.read() as session:
        query = select(Event).where(Event.account_id == account_id).order_by(Event.id)
        for name, value in where.items():
            query = query.where(getattr(Event, name) == value)
        found = []
        for event in session.scalars(query):
            body = session.scalar(select(WebhookPayload.body).where(WebhookPayload.event_id == event.id))
            answers = session.scalars(
                select(WebhookAttempt.response_body)
                .where(WebhookAttempt.event_id == event.id)
                .order_by(WebhookAttempt.id)
            ).all()
            found.append(Stored(event.public_id, event.type, json.loads(event.data), body, list(answers)))
    return found


def last_erased(runtime: Runtime, account_id: int) -> dict[str, Any]:
    [*_, event] = stored_events(runtime, account_id, type="privacy_erased")
    return event.data


def keep_batch(runtime: Runtime, account_id: int, campaign_id: str, rows: list[list[str]]) -> int:
    """A finished single-use batch whose link list (CSV) is kept for download."""
    now = utcnow()
    with runtime.db.transaction() as session:
        batch = SingleUseBatch(
            account_id=account_id,
            campaign_id=int(campaign_id.removeprefix("cam_")),
            kind="import",
            status="done",
            total=len(rows),
            done=len(rows),
            result=batches.pack(
                batches.links_csv([dict(zip(batches.CSV_COLUMNS, row, strict=True)) for row in rows])
            ),
            created_at=now,
            updated_at=now,
            finished_at=now,
        )
        session.add(batch)
        session.flush()
        return batch.id


def batch_rows(runtime: Runtime, batch_id: int) -> list[list[str]]:
    with runtime.db.read() as session:
        batch = session.get(SingleUseBatch, batch_id)
        assert batch is not None
        assert batch.result is not None
        return list(csv.reader(io.StringIO(batches.unpack(batch.result))))[1:]


def test_erase_leaves_addresses_that_only_contain_theirs(
    runtime: Runtime, live_server: LiveServer, account: TestAccount, receiver: Receiver, receiver_for: Any
) -> None:
    """ann…@d.com is inside joann…@d.com and ann…@d.com.au, and Ann's phone 555-1234 inside other
    figures: erasing Ann changes nobody else's events, webhook bodies, logged answers, kept
    answers or link lists, and lists none of them."""
    receiver.behaviour = lambda _path, _headers, _body: Reply(200, body="thanks")
    receiver_for(account)
    tag = _word(6)
    ann, joann, aussie = f"ann{tag}@d.com", f"joann{tag}@d.com", f"ann{tag}@d.com.au"
    campaign = create_campaign(account, claim_fields="firstname,email,phone")
    mine = claim(live_server, campaign["code"], ann, phone="555-1234")
    others = [
        claim(live_server, campaign["code"], joann, first="Joann"),
        claim(live_server, campaign["code"], aussie, first="Bruce"),
    ]
    links = create_campaign(account, pin=PIN)
    kept = account.client.post(
        "/v3/singleuse/create",
        json={"campaign": links["id"], "email": joann, "customid": joann},
        headers={**account.headers, "Idempotency-Key": f"joann-{tag}"},
    )
    others.append(str(assert_ok(kept)["single_use_code"]))
    batch = keep_batch(
        runtime,
        account.id,
        links["id"],
        [
            ["aaa", "http://x/1", "aaa1", "8855512349", joann],
            ["bbb", "http://x/2", "bbb2", "5551234000", ""],
            ["ccc", "http://x/3", "ccc3", "", ann.upper()],
            ["ddd", "http://x/4", "ddd4", "", f"order of {ann}"],
        ],
    )
    drain(runtime)
    before = [e for code in others for e in stored_events(runtime, account.id, session=code)]
    assert {e.type for e in before} == {"coupon_opened", "coupon_claimed", "singleuse_created"}
    assert all(e.answers == ["thanks"] for e in before)
    own = {e.public_id for e in stored_events(runtime, account.id, session=mine)}

    assert {e["id"] for e in export(account, ann)["events"]} == own
    counts = erase_body(account, email=ann)
    assert counts["coupon_sessions"] == 1
    assert counts["events"] == 1  # coupon_claimed (coupon_opened holds no details)
    assert counts["singleuse_batches"] == 1

    assert [e for code in others for e in stored_events(runtime, account.id, session=code)] == before
    assert set(last_erased(runtime, account.id)["events"]) <= own
    [claimed] = stored_events(runtime, account.id, session=mine, type="coupon_claimed")
    assert (claimed.data["email"], claimed.data["phone"], claimed.data["firstname"]) == ("", "", "")
    with runtime.db.read() as session:
        record = session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.account_id == account.id, IdempotencyRecord.key == f"joann-{tag}"
            )
        ).one()
        assert json.loads(idempotency.kept_answer(runtime.keyring, record))["customid"] == joann
    assert batch_rows(runtime, batch) == [
        ["aaa", "http://x/1", "aaa1", "8855512349", joann],
        ["bbb", "http://x/2", "bbb2", "5551234000", ""],
        ["ccc", "http://x/3", "ccc3", "", "[erased]"],
        # Not Ann's link: only a reference that is wholly her address is hers.
        ["ddd", "http://x/4", "ddd4", "", f"order of {ann}"],
    ]
    assert set(erase_body(account, email=ann).values()) == {0}


def test_coupon_events_carry_the_session_as_its_data_shows_it_and_lose_it_on_erasure(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """The vendor's webhooks carry "the full object": a coupon event's data holds the session's
    `status` and `user` as `couponsession/data` shows them after the change (it held five IDs and a
    few fields, so a receiver had to call back to learn who validated). Erasing the person blanks
    their details in every such event."""
    tag = _word(6)
    email = f"ann{tag}@example.com"
    campaign = create_campaign(account, claim_fields="firstname,email,phone")
    code = claim(live_server, campaign["code"], email, phone="+44 7700 900123")
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validate=True))
    shown = assert_ok(account.call("/v3/couponsession/data", couponsession=code))["data"]
    [validated] = stored_events(runtime, account.id, session=code, type="coupon_validated")
    assert validated.data["status"] == shown["status"]
    assert validated.data["user"] == shown["user"]
    assert (validated.data["status"]["validated"], validated.data["user"]["email"]) == ("1", email)
    [claimed] = stored_events(runtime, account.id, session=code, type="coupon_claimed")
    assert (claimed.data["status"]["claimed"], claimed.data["status"]["validated"]) == ("1", "0")
    assert claimed.data["user"]["firstname"] == "Ann"

    counts = erase_body(account, email=email)
    assert counts["events"] == 2  # the claim and the validation (opened on the web: no details yet)
    for event in stored_events(runtime, account.id, session=code):
        user = event.data["user"]
        assert (user["email"], user["phone"], user["firstname"]) == ("", "", ""), event.type


def test_erase_by_email_leaves_whoever_shares_their_phone(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """Ann and Bob gave the same phone; erasing Ann by email alone leaves Bob as he was."""
    tag = _word(6)
    phone = "+44 7700 " + "".join(random.choices(string.digits, k=6))
    campaign = create_campaign(account, claim_fields="firstname,email,phone")
    ann = claim(live_server, campaign["code"], f"ann{tag}@example.com", phone=phone)
    bob = claim(live_server, campaign["code"], f"bob{tag}@example.com", phone=phone, first="Bob")
    bobs = stored_events(runtime, account.id, session=bob)

    exported = export(account, f"ann{tag}@example.com")
    assert [s["couponsession"] for s in exported["coupon_sessions"]] == [ann]
    assert not {e["id"] for e in exported["events"]} & {e.public_id for e in bobs}
    counts = erase_body(account, email=f"ann{tag}@example.com")
    assert (counts["coupon_sessions"], counts["events"]) == (1, 1)
    assert stored_events(runtime, account.id, session=bob) == bobs
    [claimed] = [e for e in bobs if e.type == "coupon_claimed"]
    assert (claimed.data["firstname"], claimed.data["phone"]) == ("Bob", phone)
    assert not set(last_erased(runtime, account.id)["events"]) & {e.public_id for e in bobs}
    with runtime.db.read() as session:
        row = session.scalars(select(CouponSession).where(CouponSession.code == bob)).one()
        assert (row.email, row.phone) == (f"bob{tag}@example.com", phone)


def test_every_event_of_their_records_is_theirs(
    runtime: Runtime, account: TestAccount, receiver: Receiver, receiver_for: Any
) -> None:
    """Validations and voids carry the session's customid (here the person's email), points
    and rewards name the holder: all are listed, and the customid leaves them and their bodies."""
    receiver_for(account)
    person = new_person()
    campaign = create_campaign(account, pin=PIN)
    links = [
        str(
            assert_ok(
                account.call(
                    "/v3/singleuse/create", campaign=campaign["id"], email=person.email, customid=person.email
                )
            )["single_use_code"]
        )
        for _ in range(2)
    ]
    assert_ok(account.call("/v3/couponsession/update", couponsession=links[0], validate=True))
    assert_ok(account.call("/v3/couponsession/update", couponsession=links[1], void=True))
    loyalty_holder(account, person)
    drain(runtime)
    listed = {e["type"] for e in export(account, person.email)["events"]}
    assert listed >= {"coupon_validated", "coupon_voided", "loyalty_points_changed", "loyalty_user_created"}

    erase_body(account, email=person.email)
    for code in links:
        for event in stored_events(runtime, account.id, session=code):
            assert person.email.lower() not in json.dumps(event.data).lower(), event
            assert event.body is not None
            assert person.email.lower() not in event.body.lower(), event
    validated = stored_events(runtime, account.id, session=links[0], type="coupon_validated")
    assert [e.data["customid"] for e in validated] == ["[erased]"]
    assert {e.public_id for e in validated} <= set(last_erased(runtime, account.id)["events"])


def test_many_sessions_are_read_in_bounded_statements(
    runtime: Runtime, live_server: LiveServer, account: TestAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person with more sessions than a statement may bind values (65,535 on PostgreSQL): no
    statement binds their session codes or IDs all at once (the events find the sessions in a
    subquery; lists are read CHUNK values at a time, lowered here so that a few hundred show it)."""
    monkeypatch.setattr(privacy_repo, "CHUNK", 40)
    email = f"many.{_word()}@example.com"
    campaign = create_campaign(account, claim_fields="firstname,email")
    claimed = claim(live_server, campaign["code"], email)
    bulk_sessions(runtime, campaign["id"], 600, email=email)
    widest: list[int] = []

    def count(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if not many:  # executemany binds one row's values per execution
            widest.append(len(parameters))

    sqlalchemy_event.listen(runtime.db.engine, "before_cursor_execute", count)
    try:
        found = export(account, email)
        assert len(found["coupon_sessions"]) == 601
        assert "coupon_claimed" in {e["type"] for e in found["events"]}
        assert erase_body(account, email=email)["coupon_sessions"] == 601
    finally:
        sqlalchemy_event.remove(runtime.db.engine, "before_cursor_execute", count)
    assert widest
    # A push subscription's target is two values (kind, key).
    assert max(widest) <= 2 * 40 + 10, max(widest)
    [event] = stored_events(runtime, account.id, session=claimed, type="coupon_claimed")
    assert event.data["email"] == ""


def test_erase_blanks_kept_answers_read_before_the_write_transaction(
    runtime: Runtime, account: TestAccount
) -> None:
    """A retry with the same Idempotency-Key replays the first answer (a single-use link made
    with the person's email and phone) with their details blanked, and makes no second link.
    The kept answers (encrypted) are opened in a read transaction before the erasure's write
    transaction, which touches only the ones that quote the person, by ID."""
    person = new_person()
    campaign = create_campaign(account, pin=PIN)
    body = {
        "campaign": campaign["id"],
        "firstname": person.first,
        "email": person.email,
        "phone": person.phone,
        "customid": person.email,
    }
    tag = _word()
    retry = {**account.headers, "Idempotency-Key": f"zora-{tag}"}
    first = assert_ok(account.client.post("/v3/singleuse/create", json=body, headers=retry))
    # Someone whose address holds theirs, and a plain call: their kept answers stay as they are.
    other = {**body, "firstname": "Joanna", "email": "jo" + person.email, "phone": "", "customid": "x"}
    other_retry = {**account.headers, "Idempotency-Key": f"jo-{tag}"}
    other_first = assert_ok(account.client.post("/v3/singleuse/create", json=other, headers=other_retry))
    for i in range(3):
        headers = {**account.headers, "Idempotency-Key": f"plain-{i}-{tag}"}
        assert_ok(account.client.post("/v3/coupon/list", json={}, headers=headers))

    statements: list[tuple[bool, str]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "idempotency_records" in statement:
            statements.append((bool(conn.get_execution_options().get("sqlite_readonly")), statement))

    sqlalchemy_event.listen(runtime.db.engine, "before_cursor_execute", record)
    try:
        counts = erase(account, person)
    finally:
        sqlalchemy_event.remove(runtime.db.engine, "before_cursor_execute", record)
    assert counts["kept_answers"] == 1
    by_id = [(read_only, sql) for read_only, sql in statements if "WHERE idempotency_records.id = " in sql]
    scans = [(read_only, sql) for read_only, sql in statements if (read_only, sql) not in by_id]
    # One read of the account's kept answers, outside the write lock; in the write transaction
    # only those kept since, above the highest ID that read saw.
    assert [read_only for read_only, _sql in scans] == [True, False]
    assert "idempotency_records.id >" in scans[1][1]
    assert by_id
    assert not any(read_only for read_only, _sql in by_id)

    replayed = account.client.post("/v3/singleuse/create", json=body, headers=retry)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    answer = assert_ok(replayed)
    assert answer["single_use_code"] == first["single_use_code"]
    assert answer["customid"] == "[erased]"
    assert person.email.lower() not in json.dumps(answer).lower()
    assert person.first not in json.dumps(answer)
    other_again = account.client.post("/v3/singleuse/create", json=other, headers=other_retry)
    assert assert_ok(other_again) == other_first
    assert erase(account, person)["kept_answers"] == 0


def test_erase_blanks_an_answer_kept_between_its_read_and_its_write(
    runtime: Runtime, account: TestAccount
) -> None:
    """The kept answers are opened before the erasure's write transaction: an answer quoting the
    person kept in between (a busy account's read takes seconds) was left quoting them, and a
    retry with its key replayed their email. The erasure opens those itself."""
    from opencoupon.kit.endpoint import ApiContext
    from opencoupon.models import Account
    from opencoupon.privacy import service as privacy

    person = new_person()
    found = privacy.person_of(PersonRef(email=person.email))
    campaign = create_campaign(account, pin=PIN)

    def context(session: Any) -> ApiContext:
        return ApiContext(
            session=session, account=session.get(Account, account.id), runtime=runtime, now=utcnow()
        )

    with runtime.db.read() as session:
        kept = privacy.kept_answers(context(session), found)  # as the endpoint's prefetch does
    assert kept.found == []
    retry = {**account.headers, "Idempotency-Key": f"between-{_word()}"}
    body = {"campaign": campaign["id"], "email": person.email, "customid": person.email}
    assert_ok(account.client.post("/v3/singleuse/create", json=body, headers=retry))
    with runtime.db.transaction() as session:
        counts = privacy.erase(context(session), found, kept)
    assert counts["kept_answers"] == 1
    replayed = account.client.post("/v3/singleuse/create", json=body, headers=retry)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert person.email.lower() not in replayed.text.lower()


def test_kept_answers_of_their_links_lose_their_address_inside_a_longer_customid(
    runtime: Runtime, account: TestAccount
) -> None:
    """A link made for the person with their address inside its reference ("CRM <email>"):
    the erasure leaves the live session's customid "CRM <[erased]>", but the kept answers of
    singleuse/create, couponsession/update and update/multiple kept "CRM <email>", and a retry
    with the same key replayed it. An object naming one of their session codes is theirs in a
    kept answer too (as in the batch CSVs); someone else's link keeps a reference that only
    contains their address."""
    person = new_person()
    campaign = create_campaign(account, pin=PIN)
    reference = f"CRM <{person.email}>"
    tag = _word()
    create = {"campaign": campaign["id"], "email": person.email, "customid": reference}
    create_key = {**account.headers, "Idempotency-Key": f"crm-create-{tag}"}
    code = str(
        assert_ok(account.client.post("/v3/singleuse/create", json=create, headers=create_key))[
            "single_use_code"
        ]
    )
    calls: list[tuple[str, dict[str, Any], dict[str, str]]] = [("/v3/singleuse/create", create, create_key)]
    for path, body in [
        ("/v3/couponsession/update", {"couponsession": code, "claim": True}),
        ("/v3/couponsession/update/multiple", {"couponsessions": [code], "validate": True}),
    ]:
        headers = {**account.headers, "Idempotency-Key": f"crm-{path.rsplit('/', 1)[-1]}-{tag}"}
        first = account.client.post(path, json=body, headers=headers)
        assert_ok(first)
        assert reference in first.text, path
        calls.append((path, body, headers))
    # Someone else's link whose reference names the person: not theirs, kept as it is.
    other = {"campaign": campaign["id"], "email": "jo" + person.email, "customid": reference}
    other_key = {**account.headers, "Idempotency-Key": f"crm-other-{tag}"}
    other_first = assert_ok(account.client.post("/v3/singleuse/create", json=other, headers=other_key))

    counts = erase(account, person, phone=False)
    assert counts["kept_answers"] == len(calls)
    live = assert_ok(account.call("/v3/couponsession/data", couponsession=code))
    assert live["customid"] == "CRM <[erased]>"
    for path, body, headers in calls:
        replayed = account.client.post(path, json=body, headers=headers)
        assert replayed.headers.get("Idempotent-Replayed") == "true", path
        assert person.email.lower() not in replayed.text.lower(), (path, replayed.text)
        assert "CRM <[erased]>" in replayed.text, path
    assert (
        assert_ok(account.client.post("/v3/singleuse/create", json=other, headers=other_key)) == other_first
    )
    assert erase(account, person, phone=False)["kept_answers"] == 0


def test_an_email_with_capitals_beyond_ascii_is_found_as_typed(account: TestAccount) -> None:
    """SQLite's lower() folds ASCII letters only: the address as the business types it (and any
    ASCII-case variant) still finds ZOË's single-use link and card, which keep it as typed."""
    email = f"ZOË.{_word()}@Example.com"
    campaign = create_campaign(account, pin=PIN)
    made = assert_ok(account.call("/v3/singleuse/create", campaign=campaign["id"], email=email))
    link = str(made["single_use_code"])
    card = create_card(account, type="points")
    holder = {"loyaltycard": str(card["id"]), "email": email, "password": "pass-word"}
    assert_ok(account.call("/v3/loyaltyusers/create", **holder))
    variant = email.replace("ZO", "zo").replace("Example", "EXAMPLE")
    for typed in (email, variant):
        found = export(account, typed)
        assert [s["couponsession"] for s in found["coupon_sessions"]] == [link]
        assert [u["email"] for u in found["loyalty_users"]] == [email]
    # Loyalty users keep a key folded by Python's rules: the address in lower case beyond ASCII
    # finds the card too (SQLite's lower() leaves the Ë of the stored address as it is).
    lowered = email.lower()
    assert [u["email"] for u in export(account, lowered)["loyalty_users"]] == [email]
    counts = erase_body(account, email=email)
    assert (counts["coupon_sessions"], counts["loyalty_users"]) == (1, 1)
    assert export(account, email)["coupon_sessions"] == []


def test_an_erased_directory_user_is_signed_out(live_server: LiveServer, account: TestAccount) -> None:
    directory = create_directory(account, name="Members", access="login")
    code = directory["code"]
    email = f"member.{_word()}@example.com"
    browser = Browser(live_server.url)
    try:
        assert browser.register(code, email).status_code == 303
        assert f"Signed in as {email}" in browser.get(f"/d/{code}").text
        assert erase_body(account, email=email)["directory_users"] == 1
        assert f"ocd_{code}" in browser.client.cookies
        assert "Signed in as" not in browser.get(f"/d/{code}").text
    finally:
        browser.close()


def test_erase_blanks_the_recipient_in_their_send_jobs(
    runtime: Runtime, account: TestAccount, dist_sms: Any
) -> None:
    """A send's job keeps the last attempt's error, which may quote the recipient."""
    person = new_person()
    send_id, _ = sms_send(account, dist_sms.url, person)
    payload = queue.encode({"send_id": int(send_id.removeprefix("snd_"))})
    digits = person.bare_phone.lstrip("+")
    error = f"provider refused {person.bare_phone} ({person.phone}) for {person.first}; batch 9{digits}0"
    with runtime.db.transaction() as session:
        session.execute(
            sql_update(Job)
            .where(Job.payload == payload, Job.kind == "distribution.sms")
            .values(last_error=error)
        )
    assert erase(account, person)["sends"] == 1
    with runtime.db.read() as session:
        [left] = session.scalars(select(Job.last_error).where(Job.payload == payload)).all()
    assert left == f"provider refused [erased] ([erased]) for [erased]; batch 9{digits}0"


def test_one_email_and_one_phone_only(account: TestAccount) -> None:
    """A list, a number or a boolean is not an email or a phone: 300 from both calls, never one
    of its values; export also takes its parameters in a POST body."""
    nobody = f"nobody-{_word()}@example.com"
    for body in (
        {"email": [nobody, f"other-{_word()}@example.com"]},
        {"email": nobody, "phone": ["+447700900123", "+447700900124"]},
        {"email": 5},
        {"email": True},
        {"email": {"address": nobody}},
    ):
        assert_error(account.client.post(ERASE, json=body, headers=account.headers), 422, 300)
        assert_error(account.client.post(EXPORT, json=body, headers=account.headers), 422, 300)
    repeated = account.client.get(
        f"{EXPORT}?email={nobody}&email=other-{_word()}@example.com", headers=account.headers
    )
    assert_error(repeated, 422, 300)
    assert_error(account.client.get(EXPORT, params={"email[]": nobody}, headers=account.headers), 422, 300)
    assert_error(account.client.post(ERASE, data={"email[]": nobody}, headers=account.headers), 422, 300)


def test_export_by_post(live_server: LiveServer, account: TestAccount) -> None:
    email = f"Posted.{_word()}@Example.com"
    campaign = create_campaign(account, claim_fields="firstname,email")
    code = claim(live_server, campaign["code"], email)
    for answer in (
        account.client.post(EXPORT, json={"email": email}, headers=account.headers),
        account.client.post(EXPORT, data={"email": email.lower()}, headers=account.headers),
    ):
        assert answer.status_code == 200, answer.text
        assert answer.json() == export(account, email)
        assert [s["couponsession"] for s in answer.json()["coupon_sessions"]] == [code]


def test_a_push_sent_to_one_persons_session_is_exported_and_its_words_erased(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """`pushnotification/single` keeps its message on the fan-out (GET /v4/push/fanouts/{id}):
    written for one person, it is theirs, exported and erased as a send's body is. It was in
    neither, and the message with their name and email outlived the erasure."""
    person = new_person()
    campaign, code = claimed_session(account, live_server, person)
    message = f"Hello {person.first} {person.last}, we sent the voucher to {person.email}"
    sent = assert_ok(
        account.call(
            "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=code, message=message
        )
    )
    to_all = assert_ok(
        account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale today")
    )
    found = export(account, person.email)
    assert [(p["id"], p["target_id"], p["message"]) for p in found["push_notifications"]] == [
        (sent["notification"], code, message)
    ]
    assert erase(account, person)["push_notifications"] == 1
    progress = account.client.get(f"/v4/push/fanouts/{sent['notification']}", headers=account.headers)
    assert progress.status_code == 200
    assert person.first not in progress.json()["message"]
    assert "we sent the voucher" in progress.json()["message"]
    # A push to the whole campaign was nobody's in particular: left as it was.
    untouched = account.client.get(f"/v4/push/fanouts/{to_all['notification']}", headers=account.headers)
    assert untouched.json()["message"] == "Sale today"
    assert traces_in_dump(runtime, person) == []
