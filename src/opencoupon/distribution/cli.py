"""`opencoupon send email --campaign cam_… recipients.csv`: one single-use coupon link per row.

Each recipient's coupon session, send record and delivery job are written in one transaction, and
the send record holds a unique key per (campaign, address): a run that is stopped (or killed) and
started again skips everyone already queued, so nobody gets the coupon twice."""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from opencoupon.cli.common import utf8_option as _utf8
from opencoupon.config import get_settings

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

send_app = typer.Typer(help="Send coupons to many recipients at once.", no_args_is_help=True)

EMAIL_COLUMNS = ("email", "e-mail", "email_address", "mail")
FIRSTNAME_COLUMNS = ("firstname", "first_name", "first name", "given_name")
LASTNAME_COLUMNS = ("lastname", "last_name", "last name", "family_name", "surname")


@dataclass
class Recipient:
    line: int
    email: str
    firstname: str
    lastname: str


@dataclass
class Tally:
    queued: int = 0
    skipped: int = 0
    invalid: int = 0


def _pick(row: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name)
        if value:
            return value.strip()
    return ""


def read_recipients(path: Path) -> list[Recipient]:
    """Rows of a CSV file with a header; `email` is required, first and last names are optional."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return []
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
            if not any(name in reader.fieldnames for name in EMAIL_COLUMNS):
                raise typer.BadParameter(f"{path} has no 'email' column in its header row")
            return [
                Recipient(
                    line=reader.line_num,
                    email=_pick(row, EMAIL_COLUMNS),
                    firstname=_pick(row, FIRSTNAME_COLUMNS)[:100],
                    lastname=_pick(row, LASTNAME_COLUMNS)[:100],
                )
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        # A directory, a file that is not UTF-8, a cell over the reader's 128 KiB: one line, no
        # traceback.
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None


def _queue_batch(
    runtime: Runtime, campaign_id: int, subject: str, batch: list[Recipient], tally: Tally
) -> None:
    from opencoupon.distribution import repository as repo
    from opencoupon.distribution import service
    from opencoupon.kit.clock import utcnow

    with runtime.db.transaction() as session:
        campaign = repo.campaign(session, campaign_id)
        if campaign is None:
            raise typer.BadParameter("the campaign was deleted")
        target = service.Target(
            account_id=campaign.account_id,
            public_id=f"cam_{campaign.id}",
            title=campaign.title or campaign.name,
            campaign=campaign,
        )
        for recipient in batch:
            prepared = service.record_send(
                session,
                runtime,
                target,
                channel="email",
                recipient=recipient.email,
                recipient_key=recipient.email.lower(),
                firstname=recipient.firstname,
                lastname=recipient.lastname,
                unique=True,
                session_code=None,
                session_source="single_use",
                origin="bulk",
                requested_by=None,
                now=utcnow(),
                subject=subject,
            )
            if prepared.already_sent:
                tally.skipped += 1
            else:
                tally.queued += 1


def _wait_for_delivery(runtime: Runtime, campaign_id: int, total: int) -> dict[str, int]:
    from opencoupon.distribution import repository as repo

    with typer.progressbar(length=total, label="Delivering", file=sys.stderr) as bar:
        done = 0
        while True:
            with runtime.db.read() as session:
                counts = repo.bulk_counts(session, campaign_id)
            finished = counts.get("sent", 0) + counts.get("failed", 0)
            bar.update(max(0, min(total, finished) - done))
            done = max(done, min(total, finished))
            if not any(counts.get(s, 0) for s in repo.PENDING):
                return counts
            time.sleep(0.2)


# The slowest --rate: one recipient every 100 seconds. Slower rates slept for decades between
# batches (1e-9), or crashed time.sleep with a traceback after the first batch (1e-300).
MIN_RATE = 0.01


def _positive_rate(value: float | None) -> float | None:
    """--rate as a number of recipients a second: finite and at least MIN_RATE (`inf` crashed the
    batch size computation; `nan`, 0 and below were quietly replaced by the default). One line,
    exit 2."""
    if value is not None and not (math.isfinite(value) and value >= MIN_RATE):
        raise typer.BadParameter(
            f"give a number of recipients a second from {MIN_RATE:g} up, such as 5 or 0.5"
        )
    return value


@send_app.command("email")
def send_email(
    recipients: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CSV file: email[,firstname,lastname]."
    ),
    campaign: str = typer.Option(..., "--campaign", help="The coupon to send (cam_…).", callback=_utf8),
    subject: str = typer.Option("", help="Email subject (default: the coupon's title).", callback=_utf8),
    rate: float | None = typer.Option(
        None,
        help=f"Recipients a second, {MIN_RATE:g} or more (default: OPENCOUPON_BULK_SEND_RATE).",
        callback=_positive_rate,
    ),
    wait: bool = typer.Option(False, "--wait", help="Stay until every email is sent or has failed."),
    worker: bool = typer.Option(
        False, "--worker", help="Deliver from this process too (no `serve`/`worker` running); implies --wait."
    ),
) -> None:
    """Queue one email with its own single-use coupon link per CSV row, throttled; safe to rerun."""
    from opencoupon.runtime import Runtime

    settings = get_settings()
    runtime = Runtime.from_settings(settings)
    try:
        per_second = rate if rate is not None else max(MIN_RATE, settings.bulk_send_rate)
        _send(runtime, recipients, campaign, subject, per_second, wait, worker)
    finally:
        runtime.db.dispose()


def _send(
    runtime: Runtime,
    recipients: Path,
    campaign: str,
    subject: str,
    per_second: float,
    wait: bool,
    worker: bool,
) -> None:
    from opencoupon.distribution import repository as repo
    from opencoupon.distribution import service
    from opencoupon.errors import ApiError
    from opencoupon.kit import ids

    try:
        campaign_id = ids.parse_public_id(campaign, "cam_", "campaign", service.CAMPAIGN_NOT_FOUND)
    except ApiError:
        campaign_id = 0
    with runtime.db.read() as session:
        found = repo.campaign(session, campaign_id) if campaign_id else None
        if found is None:
            typer.echo(f"error: campaign {campaign} not found", err=True)
            raise typer.Exit(1)
        if service.email_config(session, runtime, found.account_id) is None:
            typer.echo("error: the campaign's account has no email integration (error 104)", err=True)
            raise typer.Exit(1)
        subject = service.email_subject(subject, found.title or found.name)

    rows = read_recipients(recipients)
    valid: list[Recipient] = []
    tally = Tally()
    for row in rows:
        try:
            row.email = service.normalize_email(row.email)
        except ApiError:
            tally.invalid += 1
            typer.echo(f"line {row.line}: skipped, invalid email address {row.email!r}", err=True)
            continue
        valid.append(row)

    runner_thread: threading.Thread | None = None
    runner = None
    if worker:
        from opencoupon.worker.runner import Runner

        runner = Runner(runtime)
        runner_thread = runner.start_thread()
        wait = True

    # Small batches keep each transaction short and the pace even.
    batch_size = max(1, min(100, int(min(per_second, 500.0) / 5)))
    started = time.monotonic()
    with typer.progressbar(length=len(valid), label="Queueing", file=sys.stderr) as bar:
        for start in range(0, len(valid), batch_size):
            batch = valid[start : start + batch_size]
            _queue_batch(runtime, campaign_id, subject, batch, tally)
            if runner is not None:
                runner.wake()
            bar.update(len(batch))
            # Throttle: the n-th recipient is queued no earlier than n / rate seconds after the start.
            pause = started + (start + len(batch)) / per_second - time.monotonic()
            if pause > 0 and start + batch_size < len(valid):
                time.sleep(pause)

    typer.echo(
        f"queued {tally.queued}, already sent or queued {tally.skipped}, invalid {tally.invalid}",
        err=True,
    )
    if wait:
        counts = _wait_for_delivery(runtime, campaign_id, tally.queued + tally.skipped)
        typer.echo(f"sent {counts.get('sent', 0)}, failed {counts.get('failed', 0)}", err=True)
    if runner is not None and runner_thread is not None:
        runner.stop()
        runner_thread.join(timeout=30)
