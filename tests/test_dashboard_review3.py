"""Dashboard review 3: campaign text is saved whole (the forms cut it at 5,000 characters and said
saved), a value is refused rather than cut to what the API takes, every form body is limited
before it is read (OPENCOUPON_MAX_BODY_BYTES, as API bodies are), and a subaccount post without an
expiry keeps it."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in, singleuse_campaign
from foundation_fixtures import browser, csrf_from

MIB = 1024 * 1024
LOGIN = "/dashboard/login"
FORM = "application/x-www-form-urlencoded"
CAMPAIGN_FORM = {"validation_methods": ["pin"], "status": "active", "expiry_mode": "none"}
LONG_TEXTS = {"description": "D" * 8000, "terms": "T" * 7000, "consent_text": "C" * 6000}


def _campaign_texts(account: TestAccount, campaign_id: str) -> dict[str, int]:
    made = account.client.get(f"/v4/campaigns/{campaign_id}", headers=account.headers).json()
    return {name: len(made[name]) for name in LONG_TEXTS}


def test_a_campaign_edit_keeps_long_text(live_server: LiveServer, account: TestAccount) -> None:
    """A campaign made through the API with an 8,000-character description, renamed on the
    dashboard, keeps its description, terms and consent text whole."""
    made = account.client.post(
        "/v4/campaigns", json={"name": "Long", "pin": "4321", **LONG_TEXTS}, headers=account.headers
    )
    assert made.status_code == 201, made.text
    campaign_id = made.json()["id"]
    edit = f"/dashboard/campaigns/{campaign_id}/edit"
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(web, edit, edit, {**CAMPAIGN_FORM, "name": "Renamed", **LONG_TEXTS})
        assert saved.status_code == 303, saved.text[:500]
    assert _campaign_texts(account, campaign_id) == {name: len(text) for name, text in LONG_TEXTS.items()}


def test_a_new_campaign_keeps_long_text(live_server: LiveServer, account: TestAccount) -> None:
    new = "/dashboard/campaigns/new"
    with signed_in(live_server.url, account.email) as web:
        saved = post_form(web, new, new, {**CAMPAIGN_FORM, "name": "Long", "pin": "4321", **LONG_TEXTS})
        assert saved.status_code == 303, saved.text[:500]
    campaign_id = saved.headers["location"].split("/")[-1].split("?")[0]
    assert _campaign_texts(account, campaign_id) == {name: len(text) for name, text in LONG_TEXTS.items()}


def test_the_campaign_form_refuses_nul(live_server: LiveServer, account: TestAccount) -> None:
    """As the API refuses it (error 301): SQLite stored it, PostgreSQL failed on it."""
    new = "/dashboard/campaigns/new"
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, new, new, {**CAMPAIGN_FORM, "name": "Nul", "description": "a\x00b"})
    assert refused.status_code == 422, refused.text[:500]
    assert "Invalid character in parameter: description." in refused.text


def test_a_payment_link_too_long_is_refused_not_cut(live_server: LiveServer, account: TestAccount) -> None:
    """The API refuses a payment link over 2,000 characters; the form cut it to 2,000 and saved."""
    new = "/dashboard/directories-new"
    link = "https://pay.example.com/" + "p" * 2000
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, new, new, {"name": "Paid book", "access": "payment", "payment_url": link})
    assert refused.status_code == 422, refused.text[:500]
    assert "Payment URL: use at most 2000 characters." in refused.text


def test_a_value_valid_only_once_cut_is_refused(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """An expiry with junk after 245 spaces: cut to 255 characters (and stripped) it was a date,
    and saved; the API refuses it."""
    page = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as master:
        answer = post_form(master, page, f"{page}/edit", {"expiry_date": "2031-01-31" + " " * 245 + "junk"})
    assert answer.status_code == 422, answer.text[:500]
    info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
    assert info["expiry_date"] != "2031-01-31"


def test_a_subaccount_post_without_an_expiry_keeps_it(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", expiry_date="2031-01-31")
    page = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as master:
        assert post_form(master, page, f"{page}/edit", {"company_name": "Acme"}).status_code == 303
        info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
        assert info["expiry_date"] == "2031-01-31"
        # An emptied expiry still removes it.
        assert post_form(master, page, f"{page}/edit", {"expiry_date": ""}).status_code == 303
    info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
    assert not info["expiry_date"]


# --- body limits --------------------------------------------------------------------------------


def _connected(live_server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", live_server.port), timeout=15)


def _status_line(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n")[0]


def _headers(path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: testserver.local", "Accept: text/html", f"Content-Type: {FORM}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def test_a_large_form_body_is_refused_before_it_is_read(live_server: LiveServer) -> None:
    """20 MB declared: 413 with not one byte of it sent (Starlette read all of it into memory
    before the sign-in form's CSRF check refused it, 403)."""
    with _connected(live_server) as sock:
        sock.sendall(_headers(LOGIN, f"Content-Length: {20 * MIB}"))
        assert _status_line(sock).startswith(b"HTTP/1.1 413 ")


def test_a_large_form_body_sent_whole_is_refused(live_server: LiveServer) -> None:
    """The review's post: twenty fields just under 1 MB each. A browser gets the error page, a
    script the API's envelope."""
    big = b"&".join(b"f%d=" % i + b"a" * 1_000_000 for i in range(20))
    with browser(live_server.url) as anonymous:
        page = anonymous.post(LOGIN, content=big, headers={"content-type": FORM})
        assert page.status_code == 413
        assert "text/html" in page.headers["content-type"]
        assert "Too large" in page.text
        script = anonymous.post(
            LOGIN, content=big, headers={"content-type": FORM, "accept": "application/json"}
        )
    assert script.status_code == 413
    assert script.json()["status"]["errors"]["error_code"] == [413]


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes of form fields of `size` each, one a chunk."""
    for number in range(total // size):
        field = b"&f%d=" % number
        field += b"a" * (size - len(field))
        yield b"%x\r\n" % len(field) + field + b"\r\n"


def test_a_chunked_body_is_refused_once_past_the_limit(live_server: LiveServer) -> None:
    """No length declared: counted as it is read, answered 413 once past 1 MiB, while the rest
    (here never sent: the body has no end) is still to come."""
    with _connected(live_server) as sock:
        sock.sendall(_headers(LOGIN, "Transfer-Encoding: chunked"))
        sock.sendall(b"%x\r\nemail=\r\n" % len(b"email="))
        for chunk in _chunks(MIB + 128 * 1024):
            sock.sendall(chunk)
        assert _status_line(sock).startswith(b"HTTP/1.1 413 ")


def test_consumer_page_forms_are_bounded(live_server: LiveServer) -> None:
    """A coupon page's claim form, and a directory's sign-in form, whose fields FastAPI reads (and
    answers 400 when it cannot)."""
    with _connected(live_server) as sock:
        sock.sendall(_headers("/p/ABCDEFGH/abcdefghijklmnopqrstu/claim", f"Content-Length: {2 * MIB}"))
        assert _status_line(sock).startswith(b"HTTP/1.1 413 ")
    with _connected(live_server) as sock:
        sock.sendall(_headers("/d/ABCDEFGH/login", "Transfer-Encoding: chunked"))
        for chunk in _chunks(2 * MIB):
            sock.sendall(chunk)
        assert _status_line(sock).startswith(b"HTTP/1.1 413 ")


def _recipients_file(size: int) -> bytes:
    """A CSV of `size` bytes whose lines pre-fill nothing (so none is imported)."""
    header = b"firstname,email,note\n"
    line = b",," + b"n" * 1021 + b"\n"  # 1 KiB
    body = line * ((size - len(header)) // len(line))
    return header + body + b",," + b"n" * (size - len(header) - len(body) - 3) + b"\n"


def test_the_recipient_import_still_takes_5_mb(live_server: LiveServer, account: TestAccount) -> None:
    """The import's 5 MB file is read whole (its answer is about what the file holds); a body
    past the file's 5 MB and a form's 1 MiB more is answered 413."""
    campaign_id = singleuse_campaign(account)
    with signed_in(live_server.url, account.email) as web:
        token = csrf_from(web.get("/dashboard/singleuse").text)
        fields = {"campaign": campaign_id, "csrf_token": token}
        whole = _recipients_file(5 * MIB)
        assert len(whole) == 5 * MIB
        read = web.post(
            "/dashboard/singleuse/import", data=fields, files={"file": ("r.csv", whole, "text/csv")}
        )
        assert read.status_code == 422, read.text[:500]
        assert "The file has no recipients." in read.text
        too_big = _recipients_file(6 * MIB + 1)
        refused = web.post(
            "/dashboard/singleuse/import", data=fields, files={"file": ("r.csv", too_big, "text/csv")}
        )
        assert refused.status_code == 413


def test_a_webhook_url_too_long_is_refused_not_cut(live_server: LiveServer, account: TestAccount) -> None:
    """The API refuses a webhook URL over 2,000 characters; the form cut it to 2,000 and saved
    an endpoint at an address nobody gave."""
    url = "https://hooks.example.com/" + "h" * 2000
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, "/dashboard/webhooks", "/dashboard/webhooks", {"url": url, "events": "*"})
    assert refused.status_code == 422, refused.text[:500]
    assert "too long" in refused.text, re.findall(r"<li>[^<]*</li>", refused.text)
    listed = account.client.get("/v4/webhooks", headers=account.headers)
    assert listed.status_code == 200
    assert listed.json() == [] or all(len(e["url"]) != 2000 for e in listed.json())
