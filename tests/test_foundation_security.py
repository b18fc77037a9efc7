"""Secrets at rest: after the whole suite, a dump of the database holds no client secret, password,
SSO token or reset token in clear text."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from conftest import ISSUED_SECRETS, LiveServer, TestAccount
from foundation_fixtures import browser, csrf_from, path_of
from helpers import assert_ok
from opencoupon.runtime import Runtime


def _dump(runtime: Runtime) -> str:
    engine = runtime.db.engine
    if engine.dialect.name == "sqlite":
        database = make_url(runtime.settings.database_url).database
        assert database
        connection = sqlite3.connect(database)
        try:
            return "\n".join(connection.iterdump())
        finally:
            connection.close()
    # PostgreSQL: every row of every table as text (every column, whatever its type).
    parts = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars().all()
            parts.append(f"-- {table}\n" + "\n".join(rows))
    return "\n".join(parts)


@pytest.mark.run_last
def test_database_dump_has_no_secret_in_clear(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    secrets = list(ISSUED_SECRETS)
    password = "sub-password-in-the-dump-test"
    created = assert_ok(
        account.call("/v4/subaccount/create", email=f"dump-{account.id}@example.com", password=password)
    )
    sub_ref = created["subaccount"]["ID"]
    secrets += [password, created["subaccount"]["api_secret"]]
    sso = assert_ok(account.call("/v3/subaccount/sso", subaccount=sub_ref))["subaccount"]
    secrets += [sso["token"], assert_ok(account.call("/v3/account/sso"))["subaccount"]["token"]]
    reset_path = path_of(assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub_ref))["url"])
    unused_reset = path_of(assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub_ref))["url"])
    secrets += [reset_path.rsplit("/", 1)[1], unused_reset.rsplit("/", 1)[1]]
    new_password = "reset-password-in-the-dump-test"
    with browser(live_server.url) as web:
        page = web.get(reset_path)
        done = web.post(
            reset_path,
            data={
                "password": new_password,
                "password_confirm": new_password,
                "csrf_token": csrf_from(page.text),
            },
        )
        assert done.status_code == 200
        # Used SSO link: the session cookie it set is not stored either.
        landing = web.get(path_of(sso["url"]))
        assert landing.status_code == 303
        secrets += [new_password, web.cookies["oc_session"], web.cookies["oc_csrf"]]
    secrets.append(runtime.settings.secret_key)

    dump = _dump(runtime)
    assert "api_secrets" in dump
    assert len(dump) > 1000
    leaked = [s for s in set(secrets) if len(s) >= 8 and s in dump]
    assert not leaked
    # The encrypted copies and digests are there instead.
    assert "$argon2id$" in dump


def test_idempotent_answers_keep_no_secret_in_clear(
    runtime: Runtime, account: TestAccount, remember_secret: Any
) -> None:
    """An answer kept for Idempotency-Key retries may carry a one-time token or a secret shown
    once: it is kept encrypted, and a retry still gets it back as it was."""
    created = assert_ok(account.call("/v4/subaccount/create", email=f"idem-dump-{account.id}@example.com"))
    sub_ref = created["subaccount"]["ID"]
    remember_secret(created["subaccount"]["api_secret"])
    calls = [
        ("/v3/subaccount/reset/url", {"subaccount": sub_ref}),
        ("/v3/subaccount/sso", {"subaccount": sub_ref}),
        ("/v4/webhooks", {"url": "https://example.com/hook", "events": ["coupon_opened"]}),
    ]
    shown = []
    for number, (path, params) in enumerate(calls):
        headers = {**account.headers, "Idempotency-Key": f"secret-answer-{number}"}
        first = account.client.post(path, json=params, headers=headers)
        retry = account.client.post(path, json=params, headers=headers)
        assert first.status_code in (200, 201), first.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.status_code == first.status_code
        assert retry.json() == first.json()
        shown.append(first.json())
    reset_token = path_of(shown[0]["url"]).rsplit("/", 1)[1]
    secrets = [reset_token, shown[1]["subaccount"]["token"], shown[2]["secret"]]
    for secret in secrets:
        remember_secret(secret)
    dump = _dump(runtime)
    assert [s for s in secrets if s in dump] == []
