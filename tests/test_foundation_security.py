"""Secrets at rest: after the whole suite, a dump of the database holds no client secret, password,
SSO token or reset token in clear text."""

from __future__ import annotations

import sqlite3

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
