"""Second operations review: a migration interrupted on PostgreSQL is finished by the next run, each
migration commits on its own (the API does not wait for the whole upgrade), and the email keys are
filled in batches."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from select import select as select_fds

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from conftest import ISSUED_SECRETS, TestAccount
from helpers import assert_error, assert_ok
from loyalty_fixtures import create_card, create_holder
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.db.engine import normalize_url
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.db.session import Database
from opencoupon.models.loyalty import email_key
from opencoupon.runtime import Runtime
from test_foundation_db import _differences

CLI = str(Path(sys.executable).with_name("opencoupon"))

# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def scratch_url(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the suite's kind."""
    if not settings.database_url.startswith("postgres"):
        return f"sqlite:///{tmp_path / 'scratch.db'}"
    return str(request.getfixturevalue("scratch_postgres"))


def _owner_at(url: str, runtime: Runtime, revision: str) -> int:
    """An account made through today's model (its columns), then the schema taken back to `revision`."""
    upgrade(url)
    database = Database(url)
    try:
        with database.transaction() as session:
            owner, _ = accounts.create_account(
                session, runtime.keyring, email="ops@example.com", password=None
            )
            owner_id = owner.id
    finally:
        database.dispose()
    downgrade(url, revision)
    return owner_id


_CARD = (
    "INSERT INTO loyalty_cards (account_id, code, name, type, description, active, pin_digest, "
    "join_fields, created_at, updated_at) VALUES (:a, :code, 'Card', 'stamp', '', true, '', "
    "'email', '2030-01-01', '2030-01-01') RETURNING id"
)
_HOLDER = (
    "INSERT INTO loyalty_holders (account_id, card_id, short_code, token, first_name, last_name, "
    "email, phone, gender, city, custom_fields, points, stamps, cycle, voided, created_at, "
    "updated_at) VALUES (:a, :c, :short, :token, '', '', :email, '', '', '', '{}', 0, 0, 0, "
    "false, '2030-01-01', '2030-01-01')"
)


def _add_holders(conn: Connection, owner_id: int, emails: list[str], code: str = "ops001") -> None:
    """Holders as the version before 0018 wrote them (raw rows, no email_key)."""
    card_id = conn.execute(text(_CARD), {"a": owner_id, "code": code}).scalar_one()
    conn.execute(
        text(_HOLDER),
        [
            {
                "a": owner_id,
                "c": card_id,
                "short": f"S{number:06d}",
                "token": f"{code}-{number}",
                "email": email,
            }
            for number, email in enumerate(emails)
        ],
    )


def _keys(url: str) -> list[tuple[str, str]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT email, email_key FROM loyalty_holders ORDER BY id")).all()
    finally:
        engine.dispose()
    return [(row.email, row.email_key) for row in rows]


def _assert_models_schema(url: str) -> None:
    database = Database(url)
    try:
        assert _differences(database) == []
    finally:
        database.dispose()


def _version(conn: Connection) -> str:
    return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


@contextmanager
def _upgrading(url: str) -> Iterator[list[BaseException]]:
    """`upgrade(url)` running in a thread meanwhile; what it raised, if anything, once it ended."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # reported to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield raised
    finally:
        thread.join(timeout=120)
        assert not thread.is_alive()


def _wait_for(probe: Callable[[], int | None]) -> int:
    deadline = time.monotonic() + 60
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "the migration never reached the expected wait"
        time.sleep(0.1)
    return found


def _backend_waiting_on(admin: Connection, query_start: str) -> Callable[[], int | None]:
    """The process of a statement beginning with `query_start` that waits for a lock."""

    def probe() -> int | None:
        pid = admin.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE :start"
            ),
            {"start": query_start + "%"},
        ).scalar()
        return None if pid is None else int(pid)

    return probe


def _interrupt_index_build(url: str, index: str) -> None:
    """Run the upgrade until CREATE INDEX CONCURRENTLY of `index` waits for an older transaction (a
    pg_dump, a client idle in transaction), then cancel it as Ctrl-C does."""
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as admin, engine.connect() as old_snapshot:
            old_snapshot.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
            old_snapshot.execute(text("SELECT count(*) FROM alembic_version"))
            with _upgrading(url) as raised:
                pid = _wait_for(_backend_waiting_on(admin, f"CREATE INDEX CONCURRENTLY {index} "))
                admin.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
            old_snapshot.execute(text("COMMIT"))
            assert len(raised) == 1
            assert "canceling statement" in str(raised[0])
            # What the interruption leaves: an invalid index of that name.
            valid = admin.execute(
                text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :name"
                ),
                {"name": index},
            ).scalar_one()
            assert valid is False
    finally:
        engine.dispose()


# --- 1. a migration interrupted on PostgreSQL is finished by the next run ------------------------


def test_an_interrupted_email_key_migration_is_finished_by_the_next_run(
    scratch_postgres: str, runtime: Runtime
) -> None:
    """0018 commits its column and keys before the index build, which waits for every older
    transaction; a Ctrl-C there left version 0017 with the column present, and every later migrate
    (and serve) failed with DuplicateColumn."""
    url = scratch_postgres
    owner_id = _owner_at(url, runtime, "0017")
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            _add_holders(conn, owner_id, ["JOSÉ@Example.com", "", "ana@example.com"])
        _interrupt_index_build(url, "ix_loyalty_holders_card_email_key")
        with engine.begin() as conn:
            assert _version(conn) == "0017"
            # Part of the fill undone, and a holder the version before wrote meanwhile.
            conn.execute(text("UPDATE loyalty_holders SET email_key = '' WHERE email = 'ana@example.com'"))
            _add_holders(conn, owner_id, ["Ole@Example.no"], code="ops002")
    finally:
        engine.dispose()
    upgrade(url)
    assert _keys(url) == [
        ("JOSÉ@Example.com", "josé@example.com"),
        ("", ""),
        ("ana@example.com", "ana@example.com"),
        ("Ole@Example.no", "ole@example.no"),
    ]
    _assert_models_schema(url)


def test_an_interrupted_push_retries_migration_is_finished_by_the_next_run(
    scratch_postgres: str,
) -> None:
    """0015 adds a column and a table before its index build: the same failure after a Ctrl-C."""
    url = scratch_postgres
    upgrade(url, "0014")
    _interrupt_index_build(url, "ix_push_subscriptions_endpoint")
    upgrade(url)
    _assert_models_schema(url)


# --- 2. each migration commits on its own; the keys are filled in batches -------------------------


def test_an_upgrade_from_0015_fills_every_key_across_batches(scratch_url: str, runtime: Runtime) -> None:
    """Several migrations in one run (0016 to head), and more holders than one batch of keys."""
    owner_id = _owner_at(scratch_url, runtime, "0015")
    emails = [("" if number % 7 == 0 else f"Holder.{number}.İ@Example.com") for number in range(2500)]
    engine = create_engine(normalize_url(scratch_url))
    try:
        with engine.begin() as conn:
            _add_holders(conn, owner_id, emails)
    finally:
        engine.dispose()
    upgrade(scratch_url)
    assert _keys(scratch_url) == [(email, email_key(email)) for email in emails]
    _assert_models_schema(scratch_url)


def test_a_migration_waiting_on_loyalty_holders_keeps_no_lock_of_the_ones_before(
    scratch_postgres: str, runtime: Runtime
) -> None:
    """All pending migrations ran in one transaction: 0016's ALTER TABLE campaigns and 0017's ALTER
    TABLE accounts kept their locks while 0018 waited or filled keys, and every API call reading
    an account or a campaign waited too. Now each migration commits, and its locks go, on its own."""
    url = scratch_postgres
    owner_id = _owner_at(url, runtime, "0015")
    engine = create_engine(normalize_url(url))
    # Its connections hold no transaction open, which the index build would wait for.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.begin() as conn:
            _add_holders(conn, owner_id, ["a@example.com"])
        with autocommit.connect() as admin, engine.connect() as request, engine.connect() as reader:
            # A request in flight holding a holder's row (as a join or an addition does).
            request.execute(text("SELECT id FROM loyalty_holders FOR UPDATE")).all()
            with _upgrading(url) as raised:
                try:
                    _wait_for(_backend_waiting_on(admin, "ALTER TABLE loyalty_holders"))
                    reader.execute(text("SET lock_timeout = '2s'"))
                    assert reader.execute(text("SELECT count(*) FROM campaigns")).scalar_one() == 0
                    assert reader.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 1
                    assert _version(reader) == "0017"
                finally:
                    reader.rollback()
                    request.rollback()
            assert raised == []
    finally:
        engine.dispose()
    assert _keys(url) == [("a@example.com", "a@example.com")]
    _assert_models_schema(url)


# --- 3. an email's key may be longer than the email ---------------------------------------------

# 253 characters; lowered, each İ becomes two ('i' and a combining dot): 261.
LONG_EMAIL = "İ" * 8 + "a" * 52 + "@" + "b" * 180 + ".example.com"


def test_an_email_of_254_characters_at_most_joins_whatever_its_key_s_length(account: TestAccount) -> None:
    """email_key was VARCHAR(254): on PostgreSQL this valid email was refused with 300 "a value is
    too long"."""
    assert len(LONG_EMAIL) == 253
    assert len(email_key(LONG_EMAIL)) > 254
    card = create_card(account, stamps_per_reward=8)
    create_holder(account, card["id"], email=LONG_EMAIL)
    again = account.call(
        "/v3/loyaltyusers/create", loyaltycard=str(card["id"]), email=LONG_EMAIL.upper(), password="x"
    )
    assert_error(again, 422, 304)


def test_the_migration_fills_in_a_key_longer_than_its_email(scratch_url: str, runtime: Runtime) -> None:
    """On PostgreSQL the upgrade of such a holder failed with StringDataRightTruncation."""
    owner_id = _owner_at(scratch_url, runtime, "0017")
    engine = create_engine(normalize_url(scratch_url))
    try:
        with engine.begin() as conn:
            _add_holders(conn, owner_id, [LONG_EMAIL])
    finally:
        engine.dispose()
    upgrade(scratch_url)
    assert _keys(scratch_url) == [(LONG_EMAIL, email_key(LONG_EMAIL))]
    _assert_models_schema(scratch_url)


# --- 4. holders written by a process of the version before the migration ------------------------


def test_a_holder_an_older_process_wrote_after_the_migration_is_found_by_its_email(
    account: TestAccount, runtime: Runtime
) -> None:
    """A process of the version before 0018, still running after `migrate`, writes holders with an
    empty email_key (the column's default); the same email joined the card again in another case."""
    card = create_card(account, stamps_per_reward=8)
    with runtime.db.engine.begin() as conn:
        conn.execute(
            text(_HOLDER),
            {
                "a": account.id,
                "c": card["id"],
                "short": "OLDPROC1",
                "token": f"old-process-{card['id']}",
                "email": "Old.Process@Example.com",
            },
        )
    for other_case in ("old.process@example.com", "OLD.PROCESS@EXAMPLE.COM"):
        again = account.call(
            "/v3/loyaltyusers/create", loyaltycard=str(card["id"]), email=other_case, password="x"
        )
        assert_error(again, 422, 304)
    # Linking the person from another card finds that holder too.
    elsewhere = create_card(account, stamps_per_reward=8)
    theirs = create_holder(account, elsewhere["id"], email="old.process@example.com")
    linked = assert_ok(account.call("/v3/loyaltyusers/link", loyaltycard=str(card["id"]), user=theirs["ID"]))
    assert linked["user"]["email"] == "Old.Process@Example.com"


# --- 5. serve --no-migrate and worker on a schema not up to date ---------------------------------


def _cli_env(url: str, var_dir: Path, secret_key: str = "k" * 40) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    return {
        **env,
        "OPENCOUPON_DATABASE_URL": url,
        "OPENCOUPON_VAR_DIR": str(var_dir),
        "OPENCOUPON_SECRET_KEY": secret_key,
    }


def _refused(env: dict[str, str], *args: str) -> str:
    """The command's one-line refusal (it used to start, so it is stopped after a while)."""
    process = subprocess.Popen(
        [CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"{' '.join(args)} started on a schema not up to date")
    assert process.returncode == 1, err[-600:]
    assert "Traceback" not in err, err[-600:]
    return err


@pytest.mark.parametrize("revision", ["", "0015"])
def test_serve_without_migrating_and_the_worker_refuse_a_schema_not_up_to_date(
    scratch_url: str, tmp_path: Path, revision: str
) -> None:
    """`serve --no-migrate` served every call a 500 on an unmigrated or older schema, and `worker`
    ran its jobs there; each now ends in one line."""
    if revision:
        upgrade(scratch_url, revision)
    env = _cli_env(scratch_url, tmp_path / "var")
    for args in (["serve", "--no-migrate", "--port", "0"], ["worker", "--once"], ["worker", "--no-wait"]):
        err = _refused(env, *args)
        assert err == "error: the database is not migrated: run opencoupon migrate\n", err


def _read_line_with(process: subprocess.Popen[str], text: str, seconds: float = 30) -> str:
    """The first line of the process's stderr that holds `text` (it must come within `seconds`)."""
    assert process.stderr is not None
    found: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if text in line:
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert found, f"no line with {text!r} within {seconds} s (exit status {process.poll()})"
    return found[0]


def test_a_worker_started_before_migrate_waits_for_it_then_runs(scratch_url: str, tmp_path: Path) -> None:
    """A deploy that starts its workers before (or while) `migrate` runs: the worker used to exit
    at once, and without a restart policy the jobs were never run. It waits, says why, and
    starts once the schema is up to date."""
    env = _cli_env(scratch_url, tmp_path / "var")
    with subprocess.Popen(
        [CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as worker:
        try:
            waiting = _read_line_with(worker, "worker waiting for the database")
            assert "the database is not migrated: run opencoupon migrate" in waiting
            assert worker.poll() is None
            subprocess.run([CLI, "migrate"], env=env, check=True, capture_output=True, timeout=120)
            _read_line_with(worker, "started")  # "worker <name> started" once it looked again
            assert worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert worker.returncode == 0


def test_a_worker_waits_for_an_unreachable_database_and_stops_on_sigterm(tmp_path: Path) -> None:
    """PostgreSQL not accepting connections yet (a port nobody listens on): the worker waits
    with one line naming the database without its password, and SIGTERM ends the wait cleanly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the worker connects
    url = f"postgresql://someone:hunter2@127.0.0.1:{port}/nowhere"
    env = _cli_env(url, tmp_path / "var")
    with subprocess.Popen(
        [CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as worker:
        try:
            waiting = _read_line_with(worker, "worker waiting for the database")
            assert "cannot open the database" in waiting
            assert f":{port}/nowhere" in waiting
            assert "hunter2" not in waiting
            time.sleep(1.5)  # it looked again (after 1 s) and is still waiting
            assert worker.poll() is None
            worker.terminate()
            assert worker.wait(timeout=15) == 0
            assert worker.stderr is not None
            assert "Traceback" not in worker.stderr.read()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_a_worker_does_not_wait_for_settings_that_cannot_work(settings: Settings, tmp_path: Path) -> None:
    """A wrong password or a database that does not exist does not pass by itself: the worker
    exits at once with one line (status 1, which a supervisor reports) instead of waiting."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("needs the suite's PostgreSQL server (the PostgreSQL run)")
    parsed = make_url(normalize_url(settings.database_url))
    wrong_password = parsed.set(password="not-the-password")
    no_database = parsed.set(database=f"absent_{time.time_ns()}")
    for url, says in ((wrong_password, "password authentication failed"), (no_database, "does not exist")):
        err = _refused(_cli_env(url.render_as_string(hide_password=False), tmp_path / "var"), "worker")
        assert err.startswith("error: cannot open the database ("), err
        assert says in err, err
        assert "not-the-password" not in err


def test_a_worker_does_not_wait_for_a_database_of_a_newer_version(scratch_url: str, tmp_path: Path) -> None:
    """Waiting cannot help when this version is the older one: one line and exit status 1."""
    upgrade(scratch_url)
    engine = create_engine(normalize_url(scratch_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    err = _refused(_cli_env(scratch_url, tmp_path / "var"), "worker")
    assert "migrated by a newer OpenCoupon (revision 9999_from_the_future)" in err, err


# --- 6. a password typed at the terminal that is not UTF-8 ---------------------------------------


def _at_terminal(
    args: list[str], env: dict[str, str], answers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """Run the command on a terminal of its own, typing each answer after its prompt; its exit
    status and everything it showed."""
    controller, terminal = pty.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [CLI, *args], env=env, stdin=terminal, stdout=terminal, stderr=terminal, preexec_fn=own_terminal
    )
    os.close(terminal)
    seen = b""

    def read(until: bytes | None) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while until is None or until not in seen:
            assert time.monotonic() < deadline, seen
            if select_fds([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 1024)
                except OSError:  # EIO: the command ended and closed the terminal
                    chunk = b""
                if not chunk:
                    assert until is None, seen
                    return
                seen += chunk

    try:
        for prompt, answer in answers:
            read(prompt)
            os.write(controller, answer)
        read(None)
        return process.wait(timeout=60), seen
    finally:
        process.kill()
        process.wait()
        os.close(controller)


def test_a_password_typed_that_is_not_utf8_is_refused_in_one_line(
    settings: Settings, account: TestAccount
) -> None:
    """A terminal in Latin-1 sends é as one byte: the hidden prompt ended in a traceback."""
    env = _cli_env(settings.database_url, settings.var_dir, settings.secret_key)
    status, shown = _at_terminal(
        ["account", "set-password", "--email", account.email],
        env,
        [(b"New password: ", b"\xe9t\xe9-secret-pw\n")],
    )
    assert status == 1, shown
    assert b"Traceback" not in shown, shown
    assert shown.rstrip().endswith(b"error: the password typed is not UTF-8 text"), shown


# --- 7. demo credentials after the demo password was changed ------------------------------------


def test_demo_does_not_print_the_demo_password_once_it_was_changed(scratch_url: str, tmp_path: Path) -> None:
    """`opencoupon demo` (and `make run`) kept printing "password": "demo-password" after it was
    changed, as long as the API secret still worked."""
    upgrade(scratch_url)
    env = _cli_env(scratch_url, tmp_path / "var")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )

    first = run("demo")
    assert first.returncode == 0, first.stderr
    demo = json.loads(first.stdout)
    ISSUED_SECRETS.extend([demo["client_secret"], demo["subaccount"]["client_secret"]])
    assert json.loads(run("demo").stdout) == demo  # unchanged: printed again as it was
    changed = run(
        "account", "set-password", "--email", demo["email"], "--password-stdin", stdin="mine-now-1\n"
    )
    assert changed.returncode == 0, changed.stderr
    again = run("demo")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {**demo, "password": "(changed since; use yours)"}
    assert "password was changed since" in again.stderr
