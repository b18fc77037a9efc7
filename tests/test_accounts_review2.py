"""Second review of accounts and sign-in: a leaked secret's SSO sessions end at a rotation after the
leak, a main account changes its own password, a subaccount's corrected email voids the old
address's links, idempotency fingerprints are keyed, and nobody locks an owner out by failing to
sign in as them."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import pty
import subprocess
import sys
import termios
import time
from pathlib import Path
from select import select as select_fds

import httpx2
from sqlalchemy import select

from conftest import ISSUED_SECRETS, LiveServer, TestAccount, served_with
from coupons_fixtures import create_campaign
from dashboard_fixtures import PASSWORD, YES, post_form, signed_in
from foundation_fixtures import browser, browser_from, path_of, sign_in
from helpers import assert_error, assert_ok
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.models import Account, IdempotencyRecord
from opencoupon.runtime import Runtime

CLI = str(Path(sys.executable).with_name("opencoupon"))


def _rotate(runtime: Runtime, account_id: int, grace: dt.timedelta) -> str:
    """Rotate the account's secret as `opencoupon account rotate-secret` does."""
    with runtime.db.transaction() as session:
        found = session.get(Account, account_id)
        assert found is not None
        secret = accounts.rotate_secret(session, runtime.keyring, found, grace)
    ISSUED_SECRETS.append(secret)
    return secret


def _signed_out(web: httpx2.Client) -> bool:
    answer = web.get("/dashboard/account")
    return answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/login")


# --- 1. a rotation after a leak ends the sessions SSO links opened ------------------------------


def test_rotation_without_grace_ends_the_sso_sessions_a_leaked_secret_opened(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """Whoever holds a leaked secret opens a dashboard session with /v3/account/sso. The owner's
    rotation with grace 0 signs that session out and voids a link made but not yet opened; the
    owner's own password session goes on, and a link made with the new secret still works."""
    opened = assert_ok(account.call("/v3/account/sso"))["subaccount"]["url"]
    unopened = assert_ok(account.call("/v3/account/sso"))["subaccount"]["url"]
    with browser(live_server.url) as attacker, signed_in(live_server.url, account.email) as owner:
        assert attacker.get(path_of(opened)).status_code == 303
        assert attacker.get("/dashboard/account").status_code == 200
        new_secret = _rotate(runtime, account.id, dt.timedelta(0))
        assert _signed_out(attacker)
        assert owner.get("/dashboard/account").status_code == 200
    with browser(live_server.url) as late:
        assert late.get(path_of(unopened)).status_code == 410
    headers = {"X-Client-Id": account.client_id, "X-Client-Secret": new_secret}
    fresh = account.client.post("/v3/account/sso", json={}, headers=headers)
    with browser(live_server.url) as person:
        assert person.get(path_of(assert_ok(fresh)["subaccount"]["url"])).status_code == 303
        assert person.get("/dashboard/account").status_code == 200


def test_rotation_with_grace_keeps_sso_sessions(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """A routine rotation (the old secret keeps working a while, and could make links meanwhile)
    ends no session."""
    link = assert_ok(account.call("/v3/account/sso"))["subaccount"]["url"]
    with browser(live_server.url) as web:
        assert web.get(path_of(link)).status_code == 303
        _rotate(runtime, account.id, dt.timedelta(hours=1))
        assert web.get("/dashboard/account").status_code == 200


def test_a_main_accounts_rotation_ends_the_sso_sessions_of_its_subaccounts(
    runtime: Runtime, live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """A leaked main secret makes links into every subaccount (/v3/subaccount/sso); rotating it
    without grace ends those too. A subaccount's own rotation ends its own, not its master's."""
    into_sub = assert_ok(account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}"))
    own = assert_ok(account.call("/v3/account/sso"))
    with browser(live_server.url) as as_sub, browser(live_server.url) as as_main:
        assert as_sub.get(path_of(into_sub["subaccount"]["url"])).status_code == 303
        assert as_main.get(path_of(own["subaccount"]["url"])).status_code == 303
        _rotate(runtime, subaccount.id, dt.timedelta(0))
        assert _signed_out(as_sub)
        assert as_main.get("/dashboard/account").status_code == 200
    into_sub = assert_ok(account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}"))
    with browser(live_server.url) as as_sub:
        assert as_sub.get(path_of(into_sub["subaccount"]["url"])).status_code == 303
        assert as_sub.get("/dashboard/").status_code == 200
        _rotate(runtime, account.id, dt.timedelta(0))
        assert _signed_out(as_sub)
    # The subaccount's password session is not one a leaked secret could open: it goes on.
    with signed_in(live_server.url, subaccount.email) as by_password:
        _rotate(runtime, account.id, dt.timedelta(0))
        assert by_password.get("/dashboard/account").status_code == 200


# --- 3. a corrected subaccount email voids the old address's links ------------------------------


def _reset_link_works(base_url: str, link: str) -> bool:
    with browser(base_url) as person:
        return bool(person.get(path_of(link)).status_code == 200)


def test_a_changed_subaccount_email_voids_its_open_reset_links(
    live_server: LiveServer, account: TestAccount
) -> None:
    """A subaccount made with a typo in its email: the link made for (or mailed to) the wrong
    address no longer sets the password once the master corrects the email. Saving the same email
    again voids nothing."""
    sub = assert_ok(account.call("/v3/subaccount/create", email=f"typo-{account.id}@example.com"))[
        "subaccount"
    ]
    kept = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub["ID"]))["url"]
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub["ID"], email=sub["email"].upper()))
    assert _reset_link_works(live_server.url, kept)
    assert_ok(
        account.call("/v3/subaccount/update", subaccount=sub["ID"], email=f"right-{account.id}@example.com")
    )
    assert not _reset_link_works(live_server.url, kept)
    with browser(live_server.url) as stranger:
        refused = stranger.post(
            path_of(kept),
            data={"csrf_token": "x", "password": "stranger-pass", "password_confirm": "stranger-pass"},
        )
        assert refused.status_code in (403, 410)
    fresh = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub["ID"]))["url"]
    assert _reset_link_works(live_server.url, fresh)


def test_blocking_a_subaccount_voids_its_open_reset_links(
    live_server: LiveServer, account: TestAccount
) -> None:
    """Unblocked later, a link made before the block does not set a password."""
    sub = assert_ok(account.call("/v3/subaccount/create", email=f"blocked-{account.id}@example.com"))[
        "subaccount"
    ]
    link = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub["ID"]))["url"]
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub["ID"], block=True))
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub["ID"], block=False))
    assert not _reset_link_works(live_server.url, link)


# --- 4. idempotency fingerprints are keyed ------------------------------------------------------


def test_an_idempotency_fingerprint_is_no_plain_hash_of_the_password(
    runtime: Runtime, account: TestAccount
) -> None:
    """The request a key was used with is kept a day to tell a retry from another request: as an
    HMAC under the server key, so a copy of the database cannot test guessed passwords against
    it. The same request still replays; another one is still refused (306)."""
    email = f"fp-{account.id}@example.com"
    params = {"email": email, "password": "sunshine2024"}
    headers = {**account.headers, "Idempotency-Key": "k-fp"}
    first = account.client.post("/v3/subaccount/create", json=params, headers=headers)
    created = assert_ok(first)["subaccount"]
    ISSUED_SECRETS.append(created["api_secret"])
    with runtime.db.read() as session:
        stored = session.scalar(
            select(IdempotencyRecord.request_hash).where(
                IdempotencyRecord.account_id == account.id, IdempotencyRecord.key == "k-fp"
            )
        )
    assert stored is not None
    canonical = json.dumps(["opencoupon.subaccounts.router.create_subaccount", {}, params], sort_keys=True)
    assert stored != hashlib.sha256(canonical.encode()).hexdigest()
    assert "sunshine2024" not in stored
    again = account.client.post("/v3/subaccount/create", json=params, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert assert_ok(again)["subaccount"]["ID"] == created["ID"]
    other = account.client.post(
        "/v3/subaccount/create", json={**params, "password": "sunshine2025"}, headers=headers
    )
    assert_error(other, 422, 306)


# --- 5. failed sign-ins from elsewhere do not keep the owner out --------------------------------


def _sign_in_from(base_url: str, address: str, email: str, password: str) -> int:
    with browser_from(base_url, address) as web:
        return sign_in(web, email, password).status_code


def test_wrong_passwords_from_one_address_do_not_keep_the_owner_out(
    settings: Settings, account: TestAccount
) -> None:
    """Sign-ins per email are limited per client address: an address past the limit is refused,
    even with the right password, while the owner elsewhere signs in."""
    with served_with(settings, login_attempts_per_minute=10.0) as (server, _runtime):
        wrong = [_sign_in_from(server.url, "127.0.0.7", account.email, "wrong password!") for _ in range(11)]
        assert wrong == [401] * 10 + [429]
        assert _sign_in_from(server.url, "127.0.0.7", account.email, PASSWORD) == 429
        assert _sign_in_from(server.url, "127.0.0.9", account.email, PASSWORD) == 303


def test_guesses_spread_over_addresses_meet_a_backstop_per_email(
    settings: Settings, account: TestAccount
) -> None:
    """Ten times the limit per email from all addresses together. Attempts an address's own limit
    refuses do not count for it, and the right password gives its attempt back."""
    with served_with(settings, login_attempts_per_minute=2.0) as (server, _runtime):
        # Two counted for the email, four refused by the address's limit (not counted).
        first = [_sign_in_from(server.url, "127.0.1.1", account.email, "wrong password!") for _ in range(6)]
        assert first == [401, 401] + [429] * 4
        for host in range(2, 10):  # 16 more: 18 of the 20
            for _ in range(2):
                assert _sign_in_from(server.url, f"127.0.1.{host}", account.email, "wrong password!") == 401
        assert _sign_in_from(server.url, "127.0.2.1", account.email, PASSWORD) == 303  # 19, given back
        for _ in range(2):  # 20 of 20
            assert _sign_in_from(server.url, "127.0.1.10", account.email, "wrong password!") == 401
        assert _sign_in_from(server.url, "127.0.2.2", account.email, PASSWORD) == 429
        # Another email is not held back by this one's backstop.
        assert _sign_in_from(server.url, "127.0.2.3", "someone-else@example.com", "wrong password!") == 401


# --- 2. a main account changes its own password -------------------------------------------------


def test_a_main_account_changes_its_password_on_the_account_page(
    live_server: LiveServer, account: TestAccount
) -> None:
    """The current password and the new one twice: this browser stays signed in, every other
    session (another browser, an SSO link's) is signed out, and only the new password signs in."""
    page, action = "/dashboard/account", "/dashboard/account/password"
    new = "a new  password 2"
    link = assert_ok(account.call("/v3/account/sso"))["subaccount"]["url"]
    with (
        signed_in(live_server.url, account.email) as web,
        signed_in(live_server.url, account.email) as other,
        browser(live_server.url) as by_link,
    ):
        assert by_link.get(path_of(link)).status_code == 303
        assert 'name="current_password"' in web.get(page).text
        for current, password, confirm, message in [
            ("not it at all", new, new, "Current password"),
            (PASSWORD, "short", "short", "between 8"),
            (PASSWORD, new, new + "x", "differ"),
        ]:
            fields = {"current_password": current, "password": password, "password_confirm": confirm}
            refused = post_form(web, page, action, fields)
            assert refused.status_code == 422
            assert message in refused.text
        fields = {"current_password": PASSWORD, "password": new, "password_confirm": new}
        assert web.post(action, data=fields).status_code == 403  # no CSRF token
        changed = post_form(web, page, action, fields)
        assert changed.status_code == 303, changed.text
        assert "Password changed." in web.get(changed.headers["location"]).text
        assert web.get(page).status_code == 200
        assert _signed_out(other)
        assert _signed_out(by_link)
    with browser(live_server.url) as person:
        assert sign_in(person, account.email, PASSWORD).status_code == 401
        assert sign_in(person, account.email, new).status_code == 303


def test_guesses_at_the_current_password_count_as_sign_in_attempts(
    settings: Settings, account: TestAccount
) -> None:
    """A session alone (an SSO link's, say) must not become a way to guess the password."""
    page, action = "/dashboard/account", "/dashboard/account/password"
    guess = {"password": "whatever-new-1", "password_confirm": "whatever-new-1"}
    with (
        served_with(settings, login_attempts_per_minute=2.0) as (server, _runtime),
        browser_from(server.url, "127.0.3.1") as web,
    ):
        assert sign_in(web, account.email, PASSWORD).status_code == 303
        answers = [
            post_form(web, page, action, {**guess, "current_password": f"guess {i}"}).status_code
            for i in range(3)
        ]
        assert answers == [422, 422, 429]


def _cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    env["OPENCOUPON_DATABASE_URL"] = settings.database_url
    env["OPENCOUPON_SECRET_KEY"] = settings.secret_key
    env["OPENCOUPON_VAR_DIR"] = str(settings.var_dir)
    return env


def _set_password(settings: Settings, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "account", "set-password", *args],
        env=_cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_account_set_password_reads_the_password_from_stdin(
    settings: Settings, live_server: LiveServer, account: TestAccount
) -> None:
    """`opencoupon account set-password --password-stdin`: never an option (visible to everyone in
    `ps`); the API's rules; every dashboard session of the account ends."""
    new = "  set from the cli  "
    with signed_in(live_server.url, account.email) as web:
        for args, stdin, message in [
            (["--email", account.email, "--password-stdin"], "short\n", "error: password: "),
            (["--email", account.email, "--password-stdin"], "\n", "error: the password is empty"),
            (["--email", "nobody@example.com", "--password-stdin"], new + "\n", "error: no account"),
            (["--email", account.email], new + "\n" + new + "\n", "error: no terminal"),
        ]:
            refused = _set_password(settings, *args, stdin=stdin)
            assert refused.returncode == 1, refused.stderr
            assert refused.stderr.startswith(message), refused.stderr
        assert web.get("/dashboard/account").status_code == 200
        done = _set_password(settings, "--email", account.email, "--password-stdin", stdin=new + "\n")
        assert done.returncode == 0, done.stderr
        assert _signed_out(web)
    with browser(live_server.url) as person:
        assert sign_in(person, account.email, PASSWORD).status_code == 401
        assert sign_in(person, account.email, new).status_code == 303


def test_account_set_password_asks_twice_at_a_terminal(
    settings: Settings, live_server: LiveServer, account: TestAccount
) -> None:
    """At a terminal the password is typed twice, hidden; two that differ are asked again."""
    controller, terminal = pty.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [CLI, "account", "set-password", "--email", account.email],
        env=_cli_env(settings),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        preexec_fn=own_terminal,
    )
    os.close(terminal)
    seen = b""

    def read_until(text: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while text not in seen:
            assert time.monotonic() < deadline, seen
            if select_fds([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 1024)
                except OSError:  # EIO: the command ended and closed the terminal
                    chunk = b""
                assert chunk, seen
                seen += chunk

    new = "typed at the terminal"
    try:
        for prompt, answer in [
            (b"New password: ", new),
            (b"Repeat for confirmation: ", new + "!"),
            (b"New password: ", new),
            (b"Repeat for confirmation: ", new),
        ]:
            read_until(prompt)
            seen = b""
            os.write(controller, answer.encode() + b"\n")
        assert process.wait(timeout=60) == 0
        read_until(b"signed out")
        assert new.encode() not in seen  # typed hidden
    finally:
        process.kill()
        process.wait()
        os.close(controller)
    with browser(live_server.url) as person:
        assert sign_in(person, account.email, new).status_code == 303


# --- a block ends a subaccount's sessions for good, used during it or not -------------------------


def _quiet_session(live_server: LiveServer, email: str) -> str:
    """A signed-in session's cookie that makes no request meanwhile (as a stolen one can)."""
    with signed_in(live_server.url, email) as web:
        return str(web.cookies["oc_session"])


def _still_signed_in(live_server: LiveServer, cookie: str) -> bool:
    with browser(live_server.url) as web:
        web.cookies.set("oc_session", cookie)
        return not _signed_out(web)


def test_a_block_lifted_does_not_bring_back_a_session_kept_quiet_meanwhile(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """A session ended only if its cookie came back during the block: a stolen cookie that made no
    request meanwhile worked again after the unblock (docs/dashboard.md: "its dashboard sessions
    end for good"). Likewise dashboard access turned off and on, and an expiry passed then moved."""
    sub = f"sub_{subaccount.id}"
    page = f"/dashboard/subaccounts/{sub}"
    kept = _quiet_session(live_server, subaccount.email)
    # A change that leaves the account usable ends nothing.
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, company_name="Still usable"))
    assert _still_signed_in(live_server, kept)

    stolen = _quiet_session(live_server, subaccount.email)
    with signed_in(live_server.url, account.email) as master:
        assert post_form(master, page, f"{page}/block", YES).status_code == 303
        assert post_form(master, page, f"{page}/unblock", {}).status_code == 303
    assert not _still_signed_in(live_server, stolen)
    assert not _still_signed_in(live_server, kept)

    for off, on in (
        ({"block": 1}, {"block": 0}),
        ({"access_dashboard": 0}, {"access_dashboard": 1}),
        ({"expiry_date": "2020-01-31"}, {"expiry_date": "2099-01-31"}),
    ):
        quiet = _quiet_session(live_server, subaccount.email)
        assert_ok(account.call("/v3/subaccount/update", subaccount=sub, **off))
        assert_ok(account.call("/v3/subaccount/update", subaccount=sub, **on))
        assert not _still_signed_in(live_server, quiet), off
    # Signing in again works.
    assert _still_signed_in(live_server, _quiet_session(live_server, subaccount.email))


# --- /v3/account/sso page=update_campaign reaches what the caller's dashboard opens ---------------


def test_account_sso_opens_a_subaccounts_campaign_for_its_master(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount, other_account: TestAccount
) -> None:
    """The master's dashboard edits its subaccounts' campaigns; its SSO link into that page answered
    502. Another account (and the subaccount, for its master's campaign) still gets the answer of an
    unknown campaign, and /v3/subaccount/sso still needs a campaign of that subaccount."""
    subs = create_campaign(subaccount)["id"]
    masters = create_campaign(account)["id"]
    number = subs.removeprefix("cam_")
    link = assert_ok(account.call("/v3/account/sso", page="update_campaign", campaign=subs))
    assert link["subaccount"]["ID"] == f"sub_{account.id}"
    with browser(live_server.url) as web:
        landing = web.get(path_of(link["subaccount"]["url"]))
        assert landing.status_code == 303
        assert landing.headers["location"] == f"/dashboard/campaigns/{number}/edit"
        assert web.get(landing.headers["location"]).status_code == 200
    unknown = assert_error(
        account.call("/v3/account/sso", page="update_campaign", campaign="cam_2147483000"), 404, 502
    )
    for caller, campaign in ((other_account, subs), (other_account, masters), (subaccount, masters)):
        refused = caller.call("/v3/account/sso", page="update_campaign", campaign=campaign)
        assert assert_error(refused, 404, 502) == unknown
    into_sub = account.call(
        "/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page="update_campaign", campaign=masters
    )
    assert assert_error(into_sub, 404, 502) == unknown
    assert_ok(
        account.call(
            "/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page="update_campaign", campaign=subs
        )
    )
