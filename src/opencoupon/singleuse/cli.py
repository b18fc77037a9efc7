"""`opencoupon singleuse …`: personal links for people who work with files rather than the API.

Both commands work on the configured database directly (OPENCOUPON_DATABASE_URL), in one
transaction: either every link is created and the CSV written, or nothing is.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import typer

from opencoupon.config import get_settings
from opencoupon.errors import ApiError
from opencoupon.kit.csvcell import csv_cell
from opencoupon.singleuse import recipients as recipient_files

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

app = typer.Typer(help="Single-use personal links: create many, or one per recipient of a CSV.")

BATCH_COLUMNS = [
    "single_use_code",
    "sequence_id",
    "single_use_url",
    "widget_validation_code",
    "custom_validation_code",
]
LINK_COLUMNS = [
    "single_use_code",
    "sequence_id",
    "single_use_url",
    "widget_validation_code",
    "custom_validation_code",
    "duplicate",
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextmanager
def _csv_out(path: Path) -> Iterator[IO[str]]:
    """A file next to `path` that takes its name only when the block ends without error, so a
    failed run never leaves a half-written CSV (or a CSV of links that were rolled back).

    Opened before any link is made: a path that cannot be written is refused with nothing created."""
    if path.is_dir():
        raise _fail(f"cannot write {path}: it is a directory")
    partial = _partial(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = partial.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            yield handle
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _publish(path: Path, done: str) -> None:
    """Gives the written CSV its name, once the links are committed. If that fails, the links
    exist: say so, and where the CSV is instead."""
    partial = _partial(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        os.replace(partial, path)
    except OSError as exc:
        raise _fail(
            f"{done}, but they could not be written to {path} ({exc.strerror or exc});"
            f" the CSV is in {partial}"
        ) from None


def _require_migrated(runtime: Runtime) -> None:
    """A database the schema was never applied to (or an older or newer one) gets a hint, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from opencoupon.cli.common import require_migrated

    try:
        require_migrated(runtime.settings.database_url)
    except SQLAlchemyError as exc:
        raise _fail(f"cannot open the database: {getattr(exc, 'orig', None) or exc}") from None


@app.command("create")
def create(
    campaign: str = typer.Option(..., help="Campaign ID, e.g. cam_12."),
    amount: int = typer.Option(10, help="How many links (1 to 100000)."),
    csv_path: Path = typer.Option(..., "--csv", help="Where to write the links (CSV)."),
    status: str = typer.Option("normal", help="normal, voided or activated."),
    automated_codes: bool = typer.Option(
        False, "--automated-codes", help="Give every link a generated custom validation code."
    ),
    code_prefix: str = typer.Option("", help="Prefix of the generated codes."),
    code_length: int | None = typer.Option(None, help="Characters after the prefix (10 to 25)."),
    code_type: str | None = typer.Option(None, help="numeric or alphanumeric (no 0/O, 1/I/L)."),
) -> None:
    """Create AMOUNT links in one transaction and write them to a CSV."""
    from opencoupon.kit.clock import utcnow
    from opencoupon.runtime import Runtime
    from opencoupon.singleuse import service

    if status not in ("normal", "voided", "activated"):
        raise _fail("--status must be normal, voided or activated")
    if code_type is not None and code_type not in ("numeric", "alphanumeric"):
        raise _fail("--code-type must be numeric or alphanumeric")
    runtime = Runtime.from_settings(get_settings())
    try:
        _require_migrated(runtime)
        with _csv_out(csv_path) as handle, runtime.db.transaction() as session:
            spec = service.parse_batch(
                str(amount),
                status,
                automated_codes,
                code_prefix,
                None if code_length is None else str(code_length),
                code_type,
            )
            found = service.resolve_campaign(session, None, campaign)
            with typer.progressbar(length=spec.amount, label="Creating links", file=sys.stderr) as bar:
                items = service.create_batch(
                    session,
                    found,
                    spec,
                    now=utcnow(),
                    base_url=runtime.settings.public_base_url,
                    progress=bar.update,
                )
            writer = csv.writer(handle)
            writer.writerow(BATCH_COLUMNS)
            writer.writerows([csv_cell(item[name]) for name in BATCH_COLUMNS] for item in items)
    except ApiError as err:
        raise _fail(err.description) from None
    finally:
        runtime.db.dispose()
    _publish(csv_path, f"{len(items)} links were created in cam_{found.id}")
    typer.echo(f"{len(items)} links in cam_{found.id} written to {csv_path}", err=True)


def _read_recipients(path: Path) -> tuple[list[str], list[recipient_files.Recipient]]:
    """The header and the non-blank rows (singleuse/recipients.py, as the dashboard reads them)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header, rows = recipient_files.read(handle)
    except recipient_files.UnreadableRow as err:
        raise _fail(f"{path}, line {err.line}: {err.message}; nothing was created") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    if not any(recipient_files.column_key(name) for name in header):
        raise _fail(
            f"{path} has no header row (expected columns: {', '.join(recipient_files.RECIPIENT_COLUMNS)})"
        )
    return header, rows


@app.command("import")
def import_recipients(
    recipients: Path = typer.Argument(
        ..., help="CSV with a header row; columns firstname, lastname, email, phone, customid, customvalcode."
    ),
    campaign: str = typer.Option(..., help="Campaign ID, e.g. cam_12."),
    out: Path = typer.Option(..., "--out", help="Where to write the recipients with their links (CSV)."),
    duplicate_check: bool = typer.Option(
        True,
        "--duplicate-check/--no-duplicate-check",
        help="A recipient whose email, phone or customid already holds a link gets that link again.",
    ),
    autovalcode: bool = typer.Option(
        False, "--autovalcode", help="Generate a custom validation code for rows without customvalcode."
    ),
    expiry_date: str | None = typer.Option(None, help="Links expire then (yyyy-MM-dd HH:mm:ss, UTC)."),
) -> None:
    """One link per recipient row, pre-filled from its columns; writes the rows with their links."""
    from opencoupon.kit.clock import utcnow
    from opencoupon.runtime import Runtime
    from opencoupon.singleuse import service

    header, rows = _read_recipients(recipients)
    requests = []
    for recipient in rows:
        try:
            requests.append(recipient_files.link_request(recipient, autovalcode=autovalcode))
        except ApiError as err:
            raise _fail(f"line {recipient.line}: {err.description}") from None
    runtime = Runtime.from_settings(get_settings())
    line = 0
    base_url = runtime.settings.public_base_url
    try:
        _require_migrated(runtime)
        with _csv_out(out) as handle, runtime.db.transaction() as session:
            now = utcnow()
            found = service.resolve_campaign(session, None, campaign)
            expires_at = service.parse_expiry(expiry_date, now)
            try:
                results = service.create_links(
                    session,
                    found,
                    requests,
                    duplicate_check=duplicate_check,
                    expires_at=expires_at,
                    now=now,
                    base_url=base_url,
                )
            except service.RecipientRefused as refused:
                line = rows[refused.index].line
                raise refused.error from None
            created = sum(result.created for result in results)
            writer = csv.writer(handle)
            writer.writerow([csv_cell(name) for name in (*header, *LINK_COLUMNS)])
            for recipient, result in zip(rows, results, strict=True):
                link = {**result.answer, "duplicate": "0" if result.created else "1"}
                cells = [*recipient.cells, *(link[name] for name in LINK_COLUMNS)]
                writer.writerow([csv_cell(cell) for cell in cells])
    except ApiError as err:
        where = f"line {line}: " if line else ""
        raise _fail(where + err.description) from None
    finally:
        runtime.db.dispose()
    _publish(out, f"{created} new links were created in cam_{found.id}")
    typer.echo(
        f"{created} new links, {len(results) - created} already held, in cam_{found.id}; written to {out}",
        err=True,
    )
