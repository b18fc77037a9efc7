"""Send records: visible per session, tenant-scoped, safe to retry with Idempotency-Key; the
migration creates exactly the tables the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from distribution_fixtures import CampaignRef, SmtpServer
from helpers import assert_error, assert_ok
from opencoupon.db.base import Base
from opencoupon.distribution.service import sends_for_session
from opencoupon.models import CouponSession, DistributionSend
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner
from test_distribution_email import configure_smtp

DISTRIBUTION_TABLES = {"email_integrations", "sms_integrations", "distribution_sends"}


def test_migration_matches_the_models(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    mine = [entry for entry in diff if any(table in repr(entry) for table in DISTRIBUTION_TABLES)]
    assert mine == []


def test_session_data_lists_its_sends(
    runtime: Runtime, account: Any, campaign: CampaignRef, smtp_server: SmtpServer
) -> None:
    configure_smtp(account, smtp_server.port)
    first = assert_ok(account.call("/v3/send/email", campaign=campaign.public_id, email="s1@example.org"))
    assert_ok(
        account.call(
            "/v3/send/email",
            campaign=campaign.public_id,
            email="s2@example.org",
            couponsession=first["couponsession"],
        )
    )
    Runner(runtime).run_until_idle()
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == first["couponsession"]))
        assert row is not None
        sends = sends_for_session(session, row.id)
    assert [(s["recipient"], s["status"], s["couponsession"]) for s in sends] == [
        ("s1@example.org", "sent", first["couponsession"]),
        ("s2@example.org", "sent", first["couponsession"]),
    ]
    assert all(s["sent_date_utc"] and s["provider_response"].startswith("250") for s in sends)


def test_sends_are_visible_only_to_their_account(
    account: Any, other_account: Any, campaign: CampaignRef, smtp_server: SmtpServer
) -> None:
    configure_smtp(account, smtp_server.port)
    body = assert_ok(account.call("/v3/send/email", campaign=campaign.public_id, email="t@example.org"))
    send_id = body["send"]["ID"]
    mine = account.client.get(f"/v4/sends/{send_id}", headers=account.headers)
    assert mine.status_code == 200
    theirs = other_account.client.get(f"/v4/sends/{send_id}", headers=other_account.headers)
    unknown = other_account.client.get("/v4/sends/snd_999999999", headers=other_account.headers)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert other_account.client.get("/v4/sends", headers=other_account.headers).json()["total"] == 0
    assert_error(
        other_account.client.get(
            "/v4/sends", params={"couponsession": body["couponsession"]}, headers=other_account.headers
        ),
        404,
        505,
    )
    by_campaign = account.client.get(
        "/v4/sends", params={"campaign": campaign.public_id, "channel": "email"}, headers=account.headers
    ).json()
    assert [s["id"] for s in by_campaign["sends"]] == [send_id]


def test_a_retried_request_with_an_idempotency_key_sends_once(
    runtime: Runtime, account: Any, campaign: CampaignRef, smtp_server: SmtpServer
) -> None:
    configure_smtp(account, smtp_server.port)
    headers = {**account.headers, "Idempotency-Key": "send-u-1"}
    params = {"campaign": campaign.public_id, "email": "u@example.org"}
    first = account.client.post("/v3/send/email", json=params, headers=headers)
    again = account.client.post("/v3/send/email", json=params, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    Runner(runtime).run_until_idle()
    assert len(smtp_server.handler.to("u@example.org")) == 1
    with runtime.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DistributionSend)
            .where(DistributionSend.recipient == "u@example.org")
        )
    assert count == 1
