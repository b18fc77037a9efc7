"""`opencoupon send email --campaign cam_… recipients.csv` as a real process: throttled, and
killed half-way (SIGKILL) then rerun, every recipient gets exactly one email."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import func, select

from conftest import TEST_SECRET_KEY
from distribution_fixtures import CampaignRef, SmtpServer
from opencoupon.config import Settings
from opencoupon.models import CouponSession, DistributionSend
from opencoupon.runtime import Runtime
from test_distribution_email import configure_smtp, run_jobs

OPENCOUPON = str(Path(sys.executable).parent / "opencoupon")


def cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_BASE_URL": settings.base_url,
        "OPENCOUPON_VAR_DIR": str(tmp_path),
        "OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS": "1",
    }


def write_csv(path: Path, emails: list[str]) -> Path:
    lines = ["Email,First Name,last_name"] + [f"{e},Name{i},Surname{i}" for i, e in enumerate(emails)]
    path.write_text("\n".join(lines) + "\n")
    return path


def counts(runtime: Runtime, campaign_id: int) -> tuple[int, int]:
    with runtime.db.read() as session:
        sends = session.scalar(
            select(func.count())
            .select_from(DistributionSend)
            .where(DistributionSend.campaign_id == campaign_id)
        )
        sessions = session.scalar(
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == campaign_id)
        )
    return int(sends or 0), int(sessions or 0)


@pytest.mark.slow
def test_bulk_send_killed_half_way_and_rerun_sends_each_recipient_exactly_once(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    configure_smtp(account, dist_smtp.port)
    total = 40
    emails = [f"reader{i}@example.org" for i in range(total)]
    # A duplicate (other case) and a bad address are skipped, not sent.
    recipients = write_csv(tmp_path / "recipients.csv", [*emails, "READER0@example.org", "not-an-address"])
    command = [
        OPENCOUPON,
        "send",
        "email",
        "--campaign",
        dist_campaign.public_id,
        str(recipients),
        "--rate",
        "10",
    ]
    env = cli_env(settings, tmp_path)

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while counts(runtime, dist_campaign.id)[0] < total // 2:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    if process.stderr:
        process.stderr.close()
    sends_after_kill, sessions_after_kill = counts(runtime, dist_campaign.id)
    assert total // 2 <= sends_after_kill < total
    # A session and its send record are written together: no link without a record.
    assert sessions_after_kill == sends_after_kill

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"already sent or queued {sends_after_kill + 1}, invalid 1" in rerun.stderr
    assert counts(runtime, dist_campaign.id) == (total, total)

    # A third run after everything went out queues nothing.
    run_jobs(runtime)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert f"queued 0, already sent or queued {total + 1}" in again.stderr
    run_jobs(runtime)

    received = [r for m in dist_smtp.handler.messages for r in m.rcpt_tos]
    assert sorted(received) == sorted(emails)
    with runtime.db.read() as session:
        rows = session.execute(
            select(
                DistributionSend.status, DistributionSend.origin, CouponSession.source, CouponSession.email
            )
            .join(CouponSession, CouponSession.id == DistributionSend.session_id)
            .where(DistributionSend.campaign_id == dist_campaign.id)
        ).all()
    assert {(status, origin, source) for status, origin, source, _ in rows} == {
        ("sent", "bulk", "single_use")
    }
    assert sorted(email for *_, email in rows) == sorted(emails)
    # Each email carries its own single-use link.
    links = set()
    for message in dist_smtp.handler.messages:
        text = message.message.get_body(preferencelist=("plain",))
        assert text is not None
        links.update(line for line in text.get_content().splitlines() if f"/p/{dist_campaign.code}/" in line)
    assert len(links) == total


def test_bulk_send_is_throttled_and_can_deliver_by_itself(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    configure_smtp(account, dist_smtp.port)
    emails = [f"paced{i}@example.org" for i in range(8)]
    recipients = write_csv(tmp_path / "paced.csv", emails)
    command = [
        OPENCOUPON,
        "send",
        "email",
        "--campaign",
        dist_campaign.public_id,
        str(recipients),
        "--rate",
        "8",
        "--worker",
        "--subject",
        "Your personal coupon",
    ]
    done = subprocess.run(
        command, env=cli_env(settings, tmp_path), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "sent 8, failed 0" in done.stderr
    with runtime.db.read() as session:
        created = session.scalars(
            select(DistributionSend.created_at).where(DistributionSend.campaign_id == dist_campaign.id)
        ).all()
    # 8 recipients at 8 a second: the first and the last are queued most of a second apart.
    assert (max(created) - min(created)).total_seconds() >= 0.75
    assert sorted(r for m in dist_smtp.handler.messages for r in m.rcpt_tos) == sorted(emails)
    assert {m.message["Subject"] for m in dist_smtp.handler.messages} == {"Your personal coupon"}


def test_bulk_send_refuses_unknown_campaign_and_missing_integration(
    account: Any,
    dist_campaign: CampaignRef,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In process (the same command code, without a second interpreter's start-up time).
    from typer.testing import CliRunner

    from opencoupon.cli.main import app
    from opencoupon.config import get_settings

    for name, value in cli_env(settings, tmp_path).items():
        if name.startswith("OPENCOUPON_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        recipients = write_csv(tmp_path / "r.csv", ["x@example.org"])
        base = ["send", "email", str(recipients), "--campaign"]
        unknown = CliRunner().invoke(app, [*base, "cam_987654321"])
        assert unknown.exit_code == 1
        assert "not found" in unknown.stderr
        no_smtp = CliRunner().invoke(app, [*base, dist_campaign.public_id])
        assert no_smtp.exit_code == 1
        assert "no email integration" in no_smtp.stderr
    finally:
        get_settings.cache_clear()


def test_an_unreadable_recipients_file_is_one_clear_error(tmp_path: Path) -> None:
    """A cell over the CSV reader's 128 KiB, a file that is not UTF-8 or a directory: the command
    says it cannot read the file (it ended with a traceback)."""
    from opencoupon.distribution.cli import read_recipients

    big = tmp_path / "big.csv"
    big.write_text("email,first name\nx@example.org," + "A" * 200_000 + "\n")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("email,first name\nx@example.org,Ren\xe9e\n".encode("latin-1"))
    for path in (big, latin1, tmp_path):
        with pytest.raises(typer.BadParameter, match="cannot read"):
            read_recipients(path)


def test_a_rate_that_is_not_a_finite_positive_number_is_a_usage_error(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """`--rate inf` ended with a traceback (OverflowError) once the campaign and the file were
    checked; nan, 0 and below were quietly replaced by the default; below 0.01 a second, 1e-9 slept
    for decades between batches and 1e-300 crashed time.sleep after the first. Now each is one
    line, exit 2, before anything is queued; 0.01 (one every 100 seconds) is the slowest rate."""
    configure_smtp(account, dist_smtp.port)
    recipients = write_csv(tmp_path / "r.csv", ["bob@example.org"])
    env = cli_env(settings, tmp_path)
    for rate in ("inf", "nan", "0", "-2", "1e-300", "1e-9", "0.0099"):
        command = [OPENCOUPON, "send", "email", "--campaign", dist_campaign.public_id, str(recipients)]
        done = subprocess.run(
            [*command, f"--rate={rate}"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2, (rate, done.stderr)
        assert "Traceback" not in done.stderr
        assert "Invalid value for '--rate'" in done.stderr
        assert counts(runtime, dist_campaign.id) == (0, 0)
    done = subprocess.run(
        [*command, "--rate", "0.01"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert counts(runtime, dist_campaign.id) == (1, 1)
