"""The `opencoupon` command."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer

from opencoupon.config import get_settings
from opencoupon.push.cli import vapid_app

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

app = typer.Typer(help="OpenCoupon: coupons, loyalty cards and directories.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and their API credentials.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(vapid_app, name="vapid")


def _runtime() -> Runtime:
    from opencoupon.runtime import Runtime

    return Runtime.from_settings(get_settings())


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from opencoupon.db.migrate import upgrade

    upgrade(get_settings().database_url)
    typer.echo("database is up to date", err=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="API processes (PostgreSQL only; SQLite uses one)."),
    no_migrate: bool = typer.Option(False, "--no-migrate", help="Do not apply migrations first."),
) -> None:
    """Serve the API, consumer pages and dashboard (with the job runner in process on SQLite)."""
    import uvicorn

    settings = get_settings()
    if not no_migrate:
        from opencoupon.db.migrate import upgrade

        upgrade(settings.database_url)
    if settings.is_sqlite:
        workers = 1
    uvicorn.run(
        "opencoupon.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(
    concurrency: int = typer.Option(16, help="Jobs run at the same time."),
    once: bool = typer.Option(False, help="Run until no job is due, then exit."),
) -> None:
    """Run background jobs (webhooks, push, email) from the shared database."""
    import logging

    from opencoupon.worker.runner import Runner

    logging.basicConfig(level=logging.INFO)
    runner = Runner(_runtime(), concurrency=concurrency)
    if once:
        runner.run_until_idle()
        return
    typer.echo(f"worker {runner.name} started", err=True)
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        runner.stop()


@app.command()
def openapi() -> None:
    """Print the OpenAPI spec as JSON."""
    from opencoupon.app import create_app

    spec = create_app(get_settings()).openapi()
    sys.stdout.write(json.dumps(spec, indent=2) + "\n")


@app.command()
def demo() -> None:
    """Seed a demo account (with a subaccount and sample data) if the database has no accounts."""
    from opencoupon.demo import seed_demo

    result = seed_demo(_runtime())
    if result is None:
        typer.echo("demo data already present (the database has accounts); nothing done", err=True)
        return
    typer.echo(json.dumps(result, indent=2))


@account_app.command("create")
def account_create(
    email: str = typer.Option(..., help="Sign-in email of the account."),
    password: str = typer.Option("", help="Dashboard password (none: API only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Create a master account; prints its ID, client_id and client_secret (shown once)."""
    from opencoupon.accounts import repository
    from opencoupon.accounts import service as accounts

    runtime = _runtime()
    with runtime.db.transaction() as session:
        if repository.by_email(session, email) is not None:
            typer.echo(f"error: an account with email {email} already exists", err=True)
            raise typer.Exit(1)
        account, secret = accounts.create_account(
            session, runtime.keyring, email=email, password=password or None
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


@account_app.command("rotate-secret")
def account_rotate_secret(
    email: str = typer.Option(..., help="Email of the account."),
    grace_hours: int = typer.Option(24, help="Hours the old secret keeps working."),
) -> None:
    """Issue a new client secret; the old one keeps working for the grace period."""
    import datetime as dt

    from opencoupon.accounts import repository
    from opencoupon.accounts import service as accounts

    runtime = _runtime()
    with runtime.db.transaction() as session:
        account = repository.by_email(session, email)
        if account is None:
            typer.echo(f"error: no account with email {email}", err=True)
            raise typer.Exit(1)
        secret = accounts.rotate_secret(session, runtime.keyring, account, dt.timedelta(hours=grace_hours))
    typer.echo(f"client_id: {account.client_id}\nclient_secret: {secret}")
