"""What every command shares: one line instead of a traceback for the ordinary mistakes (a database
not migrated, or migrated by a newer version, unreachable; a bad setting; an option that is not
UTF-8 text)."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import typer

NOT_MIGRATED = "the database is not migrated: run opencoupon migrate"


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def utf8_option(value: str) -> str:
    """A text option as the shell passed it: bytes that are not UTF-8 arrive as lone surrogates
    (Python's surrogateescape), which no email header nor database takes. One line, no traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise typer.BadParameter("not UTF-8 text (check the encoding of the terminal or script)") from None
    return value


def masked_url(url: str) -> str:
    """The database URL as it may be shown: without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def _configured_url() -> str:
    from opencoupon.config import get_settings

    try:
        return get_settings().database_url
    except Exception:  # the settings themselves may be what failed
        return os.environ.get("OPENCOUPON_DATABASE_URL", "")


def database_revisions(url: str) -> tuple[set[str], set[str], set[str]]:
    """(the database's current revisions, this version's heads, every revision this version knows)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from opencoupon.db.engine import make_engine
    from opencoupon.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    known = {revision.revision for revision in script.walk_revisions()}
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return current, set(script.get_heads()), known


def newer_revision(url: str) -> str | None:
    """A revision of the database this version does not know (it was migrated by a newer one)."""
    current, _heads, known = database_revisions(url)
    unknown = sorted(current - known)
    return unknown[0] if unknown else None


def newer_message(revision: str) -> str:
    return f"the database was migrated by a newer OpenCoupon (revision {revision}); upgrade OpenCoupon"


def check_not_newer(url: str) -> None:
    revision = newer_revision(url)
    if revision is not None:
        fail(newer_message(revision))


def require_migrated(url: str) -> None:
    """A database the schema was never applied to (or an older or newer schema) gets one line."""
    current, heads, known = database_revisions(url)
    unknown = sorted(current - known)
    if unknown:
        fail(newer_message(unknown[0]))
    if current != heads:
        fail(NOT_MIGRATED)


# What a database server answers to settings that are wrong rather than early: a wrong password,
# a database or user that does not exist, an address it does not accept (PostgreSQL's messages;
# its driver gives no SQLSTATE for them). "starting up" or "too many clients" pass by themselves.
LASTING_REFUSALS = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "unable to open database file",
)


def schema_not_ready(url: str) -> str | None:
    """Why the database cannot be used yet, for a process that may wait for it (unreachable, or
    not migrated yet): one line, or None once it is up to date. A database migrated by a newer
    version, or a URL that can never work, ends the command as `require_migrated` does."""
    from sqlalchemy import exc as sa

    try:
        current, heads, known = database_revisions(url)
    except (sa.ArgumentError, sa.NoSuchModuleError):
        raise
    except Exception as exc:
        reason = explain(exc)
        if reason is None:
            raise  # a bug keeps its traceback
        if any(part in reason for part in LASTING_REFUSALS):
            fail(reason)  # waiting would not change it: exit, so a supervisor reports the failure
        return reason
    unknown = sorted(current - known)
    if unknown:
        fail(newer_message(unknown[0]))
    return None if current == heads else NOT_MIGRATED


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line for line in str(orig).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(orig).__name__


def explain(exc: BaseException) -> str | None:
    """One line for an ordinary failure, or None for a bug (which keeps its traceback)."""
    from pydantic import ValidationError
    from sqlalchemy import exc as sa

    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            parts.append(f"OPENCOUPON_{name}: {error['msg']}" if name else str(error["msg"]))
        return "; ".join(parts)
    if isinstance(exc, (sa.ProgrammingError, sa.OperationalError)):
        text = str(getattr(exc, "orig", None) or exc)
        if "no such table" in text or "UndefinedTable" in type(getattr(exc, "orig", None)).__name__:
            return NOT_MIGRATED
    if isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        return f"cannot open the database ({masked_url(_configured_url())}): {_first_line(exc)}"
    if isinstance(exc, (sa.ArgumentError, sa.NoSuchModuleError)):
        return f"cannot open the database ({masked_url(_configured_url())}): {_first_line(exc)}"
    return None


class App(typer.Typer):
    """The `opencoupon` command: an ordinary failure is one line on stderr and exit status 1."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            message = explain(exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            sys.exit(1)
