"""Dashboard single-use pages over real HTTP: a batch with progress and its CSV, validation
messages, recipients imported from CSV (all or nothing), CSRF and tenancy."""

from __future__ import annotations

import csv
import io
import re

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in, singleuse_campaign, wait_batch_done
from foundation_fixtures import csrf_from

PAGE = "/dashboard/singleuse"


def test_batch_with_progress_and_csv(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    cid = singleuse_campaign(account)
    with signed_in(live_server.url, account.email) as web:
        for amount, message in (("0", "Digits only"), ("100001", "At most 100000"), ("", "Amount: enter")):
            bad = post_form(web, PAGE, f"{PAGE}/batches", {"campaign": cid, "amount": amount})
            assert bad.status_code == 422
            assert message in bad.text
        bad = post_form(
            web,
            PAGE,
            f"{PAGE}/batches",
            {
                "campaign": cid,
                "amount": "5",
                "automated_codes": "1",
                "code_length": "3",
                "code_type": "numeric",
            },
        )
        assert bad.status_code == 422
        assert "From 10 to 25" in bad.text
        started = post_form(
            web,
            PAGE,
            f"{PAGE}/batches",
            {
                "campaign": cid,
                "amount": "2000",
                "automated_codes": "1",
                "code_prefix": "SU-",
                "code_length": "12",
                "code_type": "alphanumeric",
            },
        )
        assert started.status_code == 303
        job_path = started.headers["location"]
        first = web.get(job_path)
        assert "progress" in first.text
        final = wait_batch_done(web, job_path)
        assert "2000 links ready" in final
        exported = web.get(job_path + "/links.csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 2000
        assert len({r["single_use_code"] for r in rows}) == 2000
        assert all(r["custom_validation_code"].startswith("SU-") for r in rows)
        assert all(r["single_use_url"].endswith(r["single_use_code"]) for r in rows)
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(job_path).status_code == 404
        assert stranger.get(job_path + "/links.csv").status_code == 404
        refused = post_form(stranger, PAGE, f"{PAGE}/batches", {"campaign": cid, "amount": "1"})
        assert refused.status_code == 422
        assert "not found" in refused.text.lower()


def test_import_recipients_all_or_nothing_and_csrf(live_server: LiveServer, account: TestAccount) -> None:
    cid = singleuse_campaign(account)
    good = (
        "firstname,email,customid,phone\n"
        "Ann,ann@example.com,=1+2,+32 2 123 45 67\n"
        "Bob,bob@example.com,@x,\n"
        "Ann again,ann@example.com,,\n"
    )
    bad = "firstname,email\nAnn,ann@example.com\nEve,not-an-email\n"
    with signed_in(live_server.url, account.email) as web:
        token = csrf_from(web.get(PAGE).text)
        refused = web.post(
            f"{PAGE}/import",
            data={"campaign": cid, "csrf_token": "x"},
            files={"file": ("r.csv", good.encode(), "text/csv")},
        )
        assert refused.status_code == 403
        answer = web.post(
            f"{PAGE}/import",
            data={"campaign": cid, "csrf_token": token},
            files={"file": ("r.csv", bad.encode(), "text/csv")},
        )
        assert answer.status_code == 422
        assert "Line 3: Email address is not valid." in answer.text
        answer = web.post(
            f"{PAGE}/import",
            data={"campaign": cid, "csrf_token": token},
            files={"file": ("r.csv", good.encode(), "text/csv")},
        )
        assert answer.status_code == 303
        page = web.get(answer.headers["location"])
        assert "1 recipients already had a link" in page.text
        rows = list(csv.DictReader(io.StringIO(web.get(answer.headers["location"] + "/links.csv").text)))
        assert len(rows) == 3
        assert rows[0]["single_use_code"] == rows[2]["single_use_code"]
        # Nothing from the refused file was created: Ann's link is the one from the good file only.
        sessions = web.get(f"/dashboard/campaigns/{cid}").text
        assert len(re.findall(r'data-session="', sessions)) == 2
        assert web.post(f"{PAGE}/batches", data={"campaign": cid, "amount": "1"}).status_code == 403


def test_import_names_the_file_line_of_a_bad_row(live_server: LiveServer, account: TestAccount) -> None:
    cid = singleuse_campaign(account)
    # Line 2 has nothing to pre-fill, line 3 is blank, Ann's note spans lines 4-5: Eve is line 6.
    bad = 'firstname,email,note\n,,just a note\n\nAnn,ann@example.com,"two\nlines"\nEve,not-an-email,y\n'
    with signed_in(live_server.url, account.email) as web:
        token = csrf_from(web.get(PAGE).text)
        answer = web.post(
            f"{PAGE}/import",
            data={"campaign": cid, "csrf_token": token},
            files={"file": ("r.csv", bad.encode(), "text/csv")},
        )
        assert answer.status_code == 422
        assert "Line 6: Email address is not valid." in answer.text


def test_import_refuses_a_cell_over_the_csv_limit(live_server: LiveServer, account: TestAccount) -> None:
    """A cell longer than the csv module reads (128 KiB) is a form message naming its line, not a
    server error."""
    cid = singleuse_campaign(account)
    huge = "firstname,email\nAnn,ann@example.com\n" + "B" * 200_000 + ",bob@example.com\n"
    with signed_in(live_server.url, account.email) as web:
        token = csrf_from(web.get(PAGE).text)
        answer = web.post(
            f"{PAGE}/import",
            data={"campaign": cid, "csrf_token": token},
            files={"file": ("r.csv", huge.encode(), "text/csv")},
        )
        assert answer.status_code == 422, answer.text[:300]
        assert "Line 3: this line cannot be read as CSV" in answer.text
        assert 'name="file"' in answer.text


def test_a_refused_batch_keeps_its_automated_codes_ticked(
    live_server: LiveServer, account: TestAccount
) -> None:
    cid = singleuse_campaign(account)
    fields = {"campaign": cid, "amount": "5", "code_length": "5", "code_type": "numeric"}
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, PAGE, f"{PAGE}/batches", {**fields, "automated_codes": "1"})
        assert refused.status_code == 422
        assert 'name="automated_codes" value="1" checked' in refused.text
        unticked = post_form(web, PAGE, f"{PAGE}/batches", {**fields, "amount": "0"})
        assert unticked.status_code == 422
        assert 'name="automated_codes" value="1">' in unticked.text
