"""`opencoupon singleuse create` and `opencoupon singleuse import`, run as a person would."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import TEST_SECRET_KEY
from opencoupon.config import Settings
from opencoupon.models import CouponSession
from opencoupon.runtime import Runtime
from singleuse_fixtures import CampaignRef

OPENCOUPON = str(Path(sys.executable).parent / "opencoupon")


def _run(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_BASE_URL": "https://links.example",
        "OPENCOUPON_VAR_DIR": str(tmp_path),
    }
    return subprocess.run(
        [OPENCOUPON, "singleuse", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _sessions(runtime: Runtime, campaign_id: int) -> dict[str, CouponSession]:
    with runtime.db.transaction() as session:
        rows = session.scalars(select(CouponSession).where(CouponSession.campaign_id == campaign_id))
        return {row.code: row for row in rows}


def test_create_writes_every_link_to_a_csv(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    out = tmp_path / "links" / "out.csv"
    done = _run(
        settings,
        tmp_path,
        "create",
        "--campaign",
        su_campaign.public_id,
        "--amount",
        "2500",
        "--csv",
        str(out),
        "--status",
        "voided",
        "--automated-codes",
        "--code-prefix",
        "CLI-",
        "--code-length",
        "10",
        "--code-type",
        "alphanumeric",
    )
    assert done.returncode == 0, done.stderr
    assert "2500 links" in done.stderr
    rows = _read(out)
    assert list(rows[0]) == [
        "single_use_code",
        "sequence_id",
        "single_use_url",
        "widget_validation_code",
        "custom_validation_code",
    ]
    stored = _sessions(runtime, su_campaign.id)
    assert len(rows) == len(stored) == 2500
    for row in rows:
        link = stored[row["single_use_code"]]
        assert int(row["sequence_id"]) == link.id
        assert row["single_use_url"] == f"https://links.example/p/{su_campaign.code}/{link.code}"
        assert row["widget_validation_code"] == link.short_code
        assert row["custom_validation_code"] == link.custom_validation_code
        assert row["custom_validation_code"].startswith("CLI-")
        assert link.link_status == "voided"


def test_create_refuses_bad_input_and_writes_nothing(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    out = tmp_path / "none.csv"
    for args, message in [
        (["--amount", "100001"], "At most 100000"),
        (["--campaign", "cam_999999999"], "Campaign ID not found"),
        (["--automated-codes", "--code-type", "numeric"], "Missing parameter: code_length"),
    ]:
        base = ["create", "--campaign", su_campaign.public_id, "--csv", str(out)]
        done = _run(settings, tmp_path, *base, *args)
        assert done.returncode == 1
        assert message in done.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".*.partial"))
    assert _sessions(runtime, su_campaign.id) == {}


RECIPIENTS = """First Name,last_name,email,phone,customid,customvalcode,segment
Ann,Lee,Ann@Example.com,,C-1,,gold
,,,,,,
Bob,Ray,ann@example.com,+3247000,C-3,BAR-2,silver
Cid,,cid@example.com,+3247000,,,bronze
Dee,Fox,dee@example.com,,C-2,,gold
Eve,Oak,eve@example.com,,,BAR-5,gold
"""


def _recipients(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipients.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_import_makes_one_link_per_recipient_and_honours_duplicate_check(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef, account: Any
) -> None:
    held = account.call("/v3/singleuse/create", campaign=su_campaign.public_id, customid="C-2").json()
    out = tmp_path / "links.csv"
    done = _run(
        settings,
        tmp_path,
        "import",
        str(_recipients(tmp_path, RECIPIENTS)),
        "--campaign",
        su_campaign.public_id,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    rows = _read(out)
    assert [row["segment"] for row in rows] == ["gold", "silver", "bronze", "gold", "gold"]
    assert list(rows[0])[-6:] == [
        "single_use_code",
        "sequence_id",
        "single_use_url",
        "widget_validation_code",
        "custom_validation_code",
        "duplicate",
    ]
    ann, bob, cid, dee, eve = rows
    # Bob shares Ann's email: same link. Cid shares Bob's phone, but Bob got Ann's link, which
    # has no phone: Cid gets a new one. Dee's customid C-2 already held a link before the import.
    assert (ann["duplicate"], bob["duplicate"]) == ("0", "1")
    assert bob["single_use_code"] == ann["single_use_code"]
    assert cid["duplicate"] == "0"
    assert cid["single_use_code"] != ann["single_use_code"]
    assert dee["single_use_code"] == held["single_use_code"]
    assert dee["duplicate"] == "1"
    assert eve["custom_validation_code"] == "BAR-5"
    stored = _sessions(runtime, su_campaign.id)
    assert len(stored) == 4  # held + Ann + Cid + Eve
    link = stored[ann["single_use_code"]]
    assert (link.firstname, link.lastname, link.email, link.customid) == (
        "Ann",
        "Lee",
        "ann@example.com",
        "C-1",
    )
    assert stored[cid["single_use_code"]].phone == "+3247000"
    assert ann["single_use_url"] == f"https://links.example/p/{su_campaign.code}/{ann['single_use_code']}"
    assert "3 new links, 2 already held" in done.stderr


def test_import_without_duplicate_check_gives_everyone_a_new_link(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    text = "firstname,email\nAnn,ann@example.com\nAnn again,ann@example.com\n"
    out = tmp_path / "links.csv"
    path = _recipients(tmp_path, text)
    args = ["import", str(path), "--campaign", su_campaign.public_id, "--out", str(out), "--autovalcode"]
    done = _run(settings, tmp_path, *args, "--no-duplicate-check")
    assert done.returncode == 0, done.stderr
    first, second = _read(out)
    assert first["single_use_code"] != second["single_use_code"]
    assert len(first["custom_validation_code"]) == len(second["custom_validation_code"]) == 12
    assert stored_names(runtime, su_campaign.id) == ["Ann", "Ann again"]


def stored_names(runtime: Runtime, campaign_id: int) -> list[str]:
    return sorted(row.firstname for row in _sessions(runtime, campaign_id).values())


def test_a_bad_row_stops_the_import_with_its_line_and_creates_nothing(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    text = "firstname,email\nAnn,ann@example.com\n\nBob,not-an-email\n"
    out = tmp_path / "links.csv"
    done = _run(
        settings, tmp_path, "import", str(_recipients(tmp_path, text)), "--campaign", su_campaign.public_id,
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1
    assert "line 4: Email address is not valid." in done.stderr
    assert not out.exists()
    with runtime.db.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == su_campaign.id)
        )
    assert count == 0


def test_a_row_longer_than_the_header_stops_the_import(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    """Its extra cells were dropped from the output, which promises the rows as written."""
    text = "firstname,email\nAnn,ann@example.com\nCy,cy@example.com,extra,cells\n"
    out = tmp_path / "links.csv"
    done = _run(
        settings, tmp_path, "import", str(_recipients(tmp_path, text)), "--campaign", su_campaign.public_id,
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1
    assert "line 3: 4 cells but the header names 2 columns" in done.stderr
    assert not out.exists()
    assert _sessions(runtime, su_campaign.id) == {}


def test_a_code_prefix_ending_in_a_line_break_is_refused(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    """`$` matched before a final line break: every code held "AB\\n", untypable at the counter."""
    out = tmp_path / "links.csv"
    done = _run(
        settings, tmp_path, "create", "--campaign", su_campaign.public_id, "--amount", "3", "--csv", str(out),
        "--automated-codes", "--code-prefix", "AB\n", "--code-length", "10", "--code-type", "numeric",
    )  # fmt: skip
    assert done.returncode == 1
    assert "code_prefix" in done.stderr
    assert _sessions(runtime, su_campaign.id) == {}


def test_an_output_path_that_cannot_be_written_is_refused_before_any_link(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    recipients = str(_recipients(tmp_path, "firstname,email\nAnn,ann@example.com\n"))
    for args, message in [
        (["create", "--csv", str(folder)], f"error: cannot write {folder}: it is a directory"),
        (["import", recipients, "--out", str(folder)], f"error: cannot write {folder}: it is a directory"),
        (["create", "--csv", "/proc/nope/x.csv"], "error: cannot write /proc/nope/x.csv: "),
        (["import", recipients, "--out", "/proc/nope/x.csv"], "error: cannot write /proc/nope/x.csv: "),
    ]:
        done = _run(settings, tmp_path, *args, "--campaign", su_campaign.public_id)
        assert done.returncode == 1, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    assert list(folder.iterdir()) == []
    assert not list(tmp_path.glob(".*.partial"))
    assert _sessions(runtime, su_campaign.id) == {}


def test_a_csv_that_cannot_take_its_name_after_the_commit_is_reported(tmp_path: Path) -> None:
    import typer

    from opencoupon.singleuse.cli import _publish

    target = tmp_path / "links.csv"
    target.mkdir()  # appeared while the links were being made
    partial = tmp_path / ".links.csv.partial"
    partial.write_text("single_use_code\n")
    with pytest.raises(typer.Exit) as raised:
        _publish(target, "3 links were created in cam_1")
    assert raised.value.exit_code == 1
    assert partial.read_text() == "single_use_code\n"  # kept: the links exist


def test_an_unmigrated_database_gets_a_hint(tmp_path: Path) -> None:
    empty = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", secret_key=TEST_SECRET_KEY)
    recipients = str(_recipients(tmp_path, "firstname,email\nAnn,ann@example.com\n"))
    for args in (
        ["create", "--csv", str(tmp_path / "a.csv")],
        ["import", recipients, "--out", str(tmp_path / "b.csv")],
    ):
        done = _run(empty, tmp_path, *args, "--campaign", "cam_1")
        assert done.returncode == 1
        assert done.stderr.strip() == "error: the database is not migrated: run opencoupon migrate"
    assert not (tmp_path / "a.csv").exists()
    assert not (tmp_path / "b.csv").exists()


def test_the_csv_files_carry_no_formulas(
    runtime: Runtime, settings: Settings, tmp_path: Path, su_campaign: CampaignRef
) -> None:
    made = tmp_path / "made.csv"
    args = [
        "--automated-codes",
        "--code-prefix",
        "=HYPERLINK(",
        "--code-length",
        "10",
        "--code-type",
        "numeric",
    ]
    done = _run(
        settings,
        tmp_path,
        "create",
        "--campaign",
        su_campaign.public_id,
        "--csv",
        str(made),
        "--amount",
        "2",
        *args,
    )
    assert done.returncode == 0, done.stderr
    codes = [row["custom_validation_code"] for row in _read(made)]
    assert len(codes) == 2
    assert all(code.startswith("'=HYPERLINK(") for code in codes)
    text = (
        "firstname,email,customvalcode,note\n"
        "@Ann,ann@example.com,=2+2,-1+1\n"
        "Bob,bob@example.com,,+32 2 123 45 67\n"
    )
    out = tmp_path / "links.csv"
    path = str(_recipients(tmp_path, text))
    done = _run(settings, tmp_path, "import", path, "--campaign", su_campaign.public_id, "--out", str(out))
    assert done.returncode == 0, done.stderr
    ann, bob = _read(out)
    assert (ann["firstname"], ann["customvalcode"], ann["note"]) == ("'@Ann", "'=2+2", "'-1+1")
    assert ann["custom_validation_code"] == "'=2+2"
    assert bob["note"] == "+32 2 123 45 67"  # a phone number stays as it is
    stored = {row.custom_validation_code for row in _sessions(runtime, su_campaign.id).values()}
    assert "=2+2" in stored  # the link itself keeps the code as given
