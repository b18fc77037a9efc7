"""The `opencoupon` command."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from opencoupon.cli.common import App, check_not_newer, fail, require_migrated, utf8_option
from opencoupon.config import get_settings
from opencoupon.distribution.cli import send_app
from opencoupon.push.cli import vapid_app
from opencoupon.singleuse.cli import app as singleuse_app

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

app = App(help="OpenCoupon: coupons, loyalty cards and directories.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and their API credentials.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(send_app, name="send")
app.add_typer(singleuse_app, name="singleuse")

app.add_typer(vapid_app, name="vapid")


def _runtime() -> Runtime:
    from opencoupon.runtime import Runtime

    return Runtime.from_settings(get_settings())


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from opencoupon.db.migrate import upgrade

    upgrade(get_settings().database_url, before=check_not_newer)
    typer.echo("database is up to date", err=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port)."),
    workers: int = typer.Option(
        1, min=1, help="API processes. On SQLite they share the database file through its write lock."
    ),
    no_migrate: bool = typer.Option(
        False, "--no-migrate", help="Do not apply migrations first (refuse a schema not up to date)."
    ),
) -> None:
    """Serve the API, consumer pages and dashboard (with the job runner in process on SQLite)."""
    import uvicorn

    settings = get_settings()
    if no_migrate:
        # Serving an older schema would answer 500 to every call that reads a newer column.
        require_migrated(settings.database_url)
    else:
        from opencoupon.db.migrate import upgrade

        upgrade(settings.database_url, before=check_not_newer)
    uvicorn.run(
        "opencoupon.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


# A thread and, on SQLite, a database connection (two file descriptors) per job at once.
WORKER_MAX_CONCURRENCY = 256


@app.command()
def worker(
    concurrency: int = typer.Option(
        16,
        min=1,
        max=WORKER_MAX_CONCURRENCY,
        help="Jobs run at the same time (each may hold a database connection).",
    ),
    once: bool = typer.Option(False, help="Run until no job is due, then exit."),
    wait: bool = typer.Option(
        True,
        help="While the database is unreachable or not migrated yet, wait for it (checking again "
        "every few seconds) instead of exiting. --once never waits.",
    ),
) -> None:
    """Run background jobs (webhooks, push, email) from the shared database, once migrated."""
    import logging

    from opencoupon.worker.runner import Runner, close_senders

    url = get_settings().database_url
    # Jobs run on an older schema fail one by one (or are buried): a worker started before the
    # deploy's `migrate` (or before its database accepts connections) waits for it.
    if once or not wait:
        require_migrated(url)
    elif not _wait_for_database(url):
        return
    logging.basicConfig(level=logging.INFO)
    runtime = _runtime()
    runner = Runner(runtime, concurrency=concurrency)
    try:
        if once:
            runner.run_until_idle()
            return
        # SIGTERM (systemd, docker stop, a deploy) stops it as Ctrl-C does: running jobs finish,
        # claimed jobs not started go back to the queue at once instead of after their lease.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: runner.stop())
        typer.echo(f"worker {runner.name} started", err=True)
        try:
            runner.run_forever()
        except KeyboardInterrupt:
            runner.stop()
    finally:
        close_senders(runtime.settings)


def _wait_for_database(url: str) -> bool:
    """Wait until the database is reachable and migrated (a line each time the reason changes);
    False when SIGTERM or Ctrl-C ended the wait."""
    import threading

    from opencoupon.cli.common import masked_url, schema_not_ready

    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    pause, shown = 1.0, None
    try:
        while (reason := schema_not_ready(url)) is not None:
            if reason != shown:
                typer.echo(f"worker waiting for the database ({masked_url(url)}): {reason}", err=True)
                shown = reason
            if stopped.wait(pause):
                return False
            pause = min(pause * 2, WAIT_FOR_DATABASE_MAX_PAUSE)
    except KeyboardInterrupt:
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
    return True


# The longest pause between two looks at a database the worker waits for (seconds).
WAIT_FOR_DATABASE_MAX_PAUSE = 10.0


@app.command()
def openapi() -> None:
    """Print the OpenAPI spec as JSON."""
    from opencoupon.app import create_app

    spec = create_app(get_settings()).openapi()
    sys.stdout.write(json.dumps(spec, indent=2) + "\n")


DEMO_CREDENTIALS_FILE = "demo-credentials.json"
DEMO_DASHBOARD_PATH = "/dashboard/login"
DEMO_PASSWORD_CHANGED = "(changed since; use yours)"


@app.command()
def demo() -> None:
    """Seed a demo account (with a subaccount and sample data) if the database has no accounts.

    What it created is kept in var/demo-credentials.json (mode 0600) and printed again on later
    runs while those credentials still work on this database."""
    from opencoupon.demo import seed_demo

    settings = get_settings()
    require_migrated(settings.database_url)
    runtime = _runtime()
    path = settings.var_dir / DEMO_CREDENTIALS_FILE
    result = seed_demo(runtime)
    if result is None:
        saved = _saved_demo_credentials(runtime, path)
        if saved is None:
            typer.echo("demo data already present (the database has accounts); nothing done", err=True)
            return
        typer.echo(f"demo data already present; credentials from {path}:", err=True)
        if saved.get("password") == DEMO_PASSWORD_CHANGED:
            typer.echo("the demo account's password was changed since; it is not shown", err=True)
        typer.echo(json.dumps(_rebased(saved, settings.public_base_url), indent=2))
        return
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    # Created with 0600 before anything is written: the file holds a client secret in clear.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(result, handle, indent=2)
    os.chmod(path, 0o600)
    typer.echo(json.dumps(result, indent=2))


def _rebased(saved: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The saved demo's links under the current OPENCOUPON_BASE_URL (the port or host may have
    changed since it was seeded). They were all made under the base its dashboard link has."""
    old_base = str(saved.get("dashboard", "")).removesuffix(DEMO_DASHBOARD_PATH)
    if not old_base or old_base == base_url or not old_base.startswith(("http://", "https://")):
        return saved

    def rebase(value: Any) -> Any:
        if isinstance(value, str) and (value == old_base or value.startswith(old_base + "/")):
            return base_url + value[len(old_base) :]
        if isinstance(value, dict):
            return {key: rebase(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rebase(item) for item in value]
        return value

    rebased: dict[str, Any] = rebase(saved)
    return rebased


def _saved_demo_credentials(runtime: Runtime, path: Path) -> dict[str, Any] | None:
    """The saved demo credentials, only if they still authenticate against this database; the
    password only while it is still the account's (else DEMO_PASSWORD_CHANGED in its place)."""
    from opencoupon.accounts import service as accounts
    from opencoupon.errors import ApiError, AuthFailed
    from opencoupon.kit.crypto import verify_password

    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    credentials = accounts.Credentials(str(saved.get("client_id", "")), str(saved.get("client_secret", "")))
    try:
        with runtime.db.read() as session:
            password_hash = accounts.authenticate(session, runtime.keyring, credentials).password_hash
    except (AuthFailed, ApiError):
        return None
    if "password" in saved and not verify_password(password_hash, str(saved["password"])):
        saved["password"] = DEMO_PASSWORD_CHANGED
    return saved


@account_app.command("create")
def account_create(
    email: str = typer.Option(..., help="Sign-in email of the account.", callback=utf8_option),
    password: str = typer.Option("", help="Dashboard password (none: API only).", callback=utf8_option),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Create a master account; prints its ID, client_id and client_secret (shown once)."""
    from opencoupon.accounts import repository
    from opencoupon.accounts import service as accounts
    from opencoupon.errors import ApiError
    from opencoupon.subaccounts.schemas import MAX_PASSWORD_LENGTH
    from opencoupon.subaccounts.service import check_email, checked_password

    # The API's and the dashboard's rules: a malformed email (305), a password under 8 characters.
    try:
        usable_password = checked_password(password)
    except ApiError as err:
        typer.echo(f"error: --password: {err.description}", err=True)
        raise typer.Exit(1) from None
    if len(password) > MAX_PASSWORD_LENGTH:
        typer.echo(f"error: --password: Use at most {MAX_PASSWORD_LENGTH} characters.", err=True)
        raise typer.Exit(1)
    require_migrated(get_settings().database_url)
    runtime = _runtime()
    with runtime.db.transaction() as session:
        if repository.by_email(session, email) is not None:
            typer.echo(f"error: an account with email {email} already exists", err=True)
            raise typer.Exit(1)
        try:
            checked_email = check_email(session, email)
        except ApiError as err:
            typer.echo(f"error: --email: {err.description}", err=True)
            raise typer.Exit(1) from None
        account, secret = accounts.create_account(
            session, runtime.keyring, email=checked_email, password=usable_password
        )
        result = {
            "account_id": account.id,
            "email": account.email,
            "client_id": account.client_id,
            "client_secret": secret,
        }
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")


def _new_password(from_stdin: bool) -> str:
    """The new password: the first line of standard input, or typed twice at a hidden prompt. Never
    an option: the command line of a running process is visible to every user of the machine."""
    if from_stdin:
        raw = sys.stdin.buffer.readline()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            fail("the password on standard input is not UTF-8 text")
        return line.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password: pass it on standard input with --password-stdin")
    try:
        password: str = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    except UnicodeDecodeError:  # a terminal in another encoding (Latin-1: é is one byte)
        fail("the password typed is not UTF-8 text")
    return password


@account_app.command("set-password")
def account_set_password(
    email: str = typer.Option(..., help="Email of the account.", callback=utf8_option),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of standard input."
    ),
) -> None:
    """Set the dashboard password (asked twice, hidden); every dashboard session of the account ends
    and its open password-reset links stop working."""
    from opencoupon.accounts import repository
    from opencoupon.accounts import service as accounts
    from opencoupon.errors import ApiError
    from opencoupon.kit.crypto import hash_password
    from opencoupon.subaccounts.schemas import MAX_PASSWORD_LENGTH
    from opencoupon.subaccounts.service import checked_password

    require_migrated(get_settings().database_url)
    runtime = _runtime()
    with runtime.db.read() as session:
        if repository.by_email(session, email) is None:
            fail(f"no account with email {email}")
    password = _new_password(password_stdin)
    # The rules of `account create`, the API and the dashboard.
    try:
        if checked_password(password) is None:
            fail("the password is empty")
    except ApiError as err:
        fail(f"password: {err.description}")
    if len(password) > MAX_PASSWORD_LENGTH:
        fail(f"password: Use at most {MAX_PASSWORD_LENGTH} characters.")
    new_hash = hash_password(password)  # slow: outside the transaction
    with runtime.db.transaction() as session:
        account = repository.by_email(session, email)
        if account is None:
            fail(f"no account with email {email}")
        accounts.set_password(session, account, new_hash)
        shown = account.email
    typer.echo(f"password set for {shown}; its dashboard sessions are signed out", err=True)


@account_app.command("rotate-secret")
def account_rotate_secret(
    email: str = typer.Option(..., help="Email of the account.", callback=utf8_option),
    grace_hours: int = typer.Option(24, help="Hours the old secret keeps working (0 to 168)."),
) -> None:
    """Issue a new client secret; the old one keeps working for the grace period."""
    import datetime as dt

    from opencoupon.accounts import repository
    from opencoupon.accounts import service as accounts
    from opencoupon.dashboard.account import MAX_GRACE_HOURS

    # The dashboard's range for the same action; 0 ends the old secret at once (after a leak).
    if not 0 <= grace_hours <= MAX_GRACE_HOURS:
        typer.echo(f"error: --grace-hours must be between 0 and {MAX_GRACE_HOURS}", err=True)
        raise typer.Exit(1)
    require_migrated(get_settings().database_url)
    runtime = _runtime()
    with runtime.db.transaction() as session:
        account = repository.by_email(session, email)
        if account is None:
            typer.echo(f"error: no account with email {email}", err=True)
            raise typer.Exit(1)
        secret = accounts.rotate_secret(session, runtime.keyring, account, dt.timedelta(hours=grace_hours))
    typer.echo(f"client_id: {account.client_id}\nclient_secret: {secret}")
