"""The safety net of the HTML forms: every POST route of the app that is a page (not /v3, /v4, not
in the OpenAPI spec, so a new form is covered without a line here) gets bad input, and answers it
with a clear refusal: never a 500, never a stack trace, a 4xx page (HTML where the browser asked
for HTML), a redirect, or the form again; and a refusal leaves what is stored as it was.

Each route is posted with its path parameters filled with real objects of a signed-in account and
with garbage, with an empty form, with every field it reads (found in its source:
`text(form, "name")`, `form.get("name")`, FastAPI `Form()` parameters...) set in turn to hostile
values (100 KB, not a number, negative, 2**70, impossible dates, NUL, invalid UTF-8, the field
repeated, unicode) while the others keep plausible values, and with bodies that are not
form-encoded. GET pages get hostile query strings. One account and one client serve the module."""

from __future__ import annotations

import ast
import inspect
import json
import re
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import Table, func, literal, select, union_all
from starlette.datastructures import UploadFile

from conftest import TEST_SECRET_KEY, LiveServer, TestAccount, make_account
from coupons_fixtures import PIN, create_campaign, open_session
from directories_fixtures import PASSWORD, create_category, create_directory, create_user
from foundation_fixtures import csrf_from, path_of
from helpers import assert_ok
from loyalty_fixtures import create_card, create_holder
from opencoupon import web
from opencoupon.app import create_app
from opencoupon.config import Settings
from opencoupon.db.base import Base
from opencoupon.kit.fastlane import _api_routes
from opencoupon.models import CouponSession, LoyaltyHolder
from opencoupon.runtime import Runtime

# One TLS context for the many clients (httpx makes one per client otherwise, ~10 ms each).
TLS = ssl.create_default_context()
CSRF_NONCE = "safetynetcsrfnonce0123456789"

# --- the routes -----------------------------------------------------------------------------------


def _page_routes(app: Any) -> list[APIRoute]:
    return [
        route
        for route in _api_routes(app.routes)
        if not route.include_in_schema and not route.path.startswith(("/v3/", "/v4/"))
    ]


def _collection_app() -> Any:
    """The app as the suite builds it, for parametrising (no database is opened)."""
    tmp = Path(tempfile.mkdtemp(prefix="opencoupon-routes-"))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'routes.db'}",
        secret_key=TEST_SECRET_KEY,
        var_dir=tmp,
        run_worker_in_process=False,
    )
    return create_app(settings)


_APP = _collection_app()
POST_ROUTES = [r for r in _page_routes(_APP) if "POST" in (r.methods or ())]
GET_ROUTES = [r for r in _page_routes(_APP) if "GET" in (r.methods or ())]

UNKNOWN_ACTION = "explode"
# Path parameters that pick an action: each value is its own case (an unknown one too), and
# whether it reads the form's fields (all its route's fields get bad values in turn; the others get
# the empty form, other bodies and garbage IDs).
ACTIONS: dict[str, dict[str, bool]] = {
    "/dashboard/campaigns/{public_id}/sessions/{session_id}/{action}": {
        "void": True,
        "unvoid": False,
        "validate": True,
        "lock": False,
        "unlock": False,
        UNKNOWN_ACTION: False,
    },
    "/dashboard/webhooks/{public_id}/{action}": {
        "edit": True,
        "rotate": True,
        "replay": True,
        "delete": False,
        UNKNOWN_ACTION: False,
    },
    "/dashboard/subaccounts/{sub_id}/{action}": {
        "edit": True,
        "block": False,
        "unblock": False,
        "open": False,
        "reset": False,
        UNKNOWN_ACTION: False,
    },
    "/dashboard/account/{action}": {"settings": True, "rotate": True, UNKNOWN_ACTION: False},
    "/dashboard/loyalty/{card_id}/holders/{holder_id}/{action}": {
        "adjust": True,
        "void": False,
        "unvoid": False,
        UNKNOWN_ACTION: False,
    },
}
# Actions (and routes) that use up or change the objects they name: they get objects of their own.
DESTRUCTIVE = ("delete", "void", "block", "lock", "revoke", "validate", "scan", "claim", "open", "logout")
# Fields a page reads under names made at run time (a campaign's claim form).
DYNAMIC_FIELDS = {
    "/p/{code}/{session_code}/claim": (
        "firstname",
        "lastname",
        "email",
        "phone",
        "birthday",
        "custom_size",
        "consent",
    ),
}
# Browser-facing routes that answer JSON, not pages.
JSON_ROUTES = {"/push/subscriptions", "/push/subscriptions/status", "/push/subscriptions/renew"}


@dataclass(frozen=True)
class Case:
    route: APIRoute
    path: str  # the route's path with any {action} filled in
    reads_fields: bool = True

    @property
    def id(self) -> str:
        return self.path

    @property
    def destructive(self) -> bool:
        return self.path.rsplit("/", 1)[-1] in DESTRUCTIVE


def _cases() -> list[Case]:
    cases = []
    for route in POST_ROUTES:
        actions = ACTIONS.get(route.path)
        if actions:
            cases += [Case(route, route.path.replace("{action}", a), reads) for a, reads in actions.items()]
        else:
            assert "{action}" not in route.path, f"name the actions of {route.path} in ACTIONS"
            cases.append(Case(route, route.path))
    return cases


CASES = _cases()


# --- the fields a route reads ---------------------------------------------------------------------

READERS = {"text", "_text", "many", "many_raw", "password_text"}
_trees: dict[str, ast.Module] = {}


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _form_reads(node: ast.Call) -> list[str]:
    func = node.func
    if isinstance(func, ast.Name) and func.id in READERS:
        args = node.args[1:2]
    elif (
        isinstance(func, ast.Attribute)
        and func.attr in ("get", "getlist")
        and isinstance(func.value, ast.Name)
        and func.value.id == "form"
    ):
        args = node.args[:1]
    else:
        return []
    return [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value]


def fields_of(route: APIRoute) -> list[str]:
    """The form fields the route's code reads: its Form() parameters, or the names passed to the
    form readers in its function and the module's functions it uses, in order."""
    found = [p.alias for p in route.dependant.body_params]
    endpoint = route.endpoint
    module = endpoint.__module__
    if module not in _trees:
        _trees[module] = ast.parse(inspect.getsource(sys.modules[module]))
    tree = _trees[module]
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    start: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    first_line = endpoint.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node in tree.body:
                functions[node.name] = node
            lines = [node.lineno, *(d.lineno for d in node.decorator_list)]
            if node.name == endpoint.__name__ and first_line in lines:
                start = node
    constants = {
        node.targets[0].id: _strings(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    todo = [start] if start else []
    seen: set[str] = set()
    while todo:
        function = todo.pop()
        for node in ast.walk(function):
            names: list[str] = []
            if isinstance(node, ast.Call):
                names = _form_reads(node)
            elif isinstance(node, ast.For | ast.comprehension):
                it = node.iter
                names = constants.get(it.id, []) if isinstance(it, ast.Name) else _strings(it)
            elif isinstance(node, ast.Name) and node.id in functions and node.id not in seen:
                seen.add(node.id)
                todo.append(functions[node.id])
            found += [n for n in names if n not in found]
    found += [n for n in DYNAMIC_FIELDS.get(route.path, ()) if n not in found]
    return found


# --- hostile values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A value put into the urlencoded body as it is (already percent-encoded)."""

    encoded: str


Value = str | Raw | list[str]

HOSTILE: dict[str, Value] = {
    "long": "x" * 100_000,
    "negative": "-1",
    "huge": str(2**70),
    "bad_date": "2024-02-30",
    "yesterday": "yesterday",
    "nul": "a\x00b",
    # Unicode (accents, an emoji, right-to-left override, a byte order mark) with bytes that are not
    # UTF-8 (%FF%FE, a cut sequence).
    "unicode": Raw(quote("Zoë 😀 \u202emoc.evil\u202c مرحبا \ufeff", safe="") + "%FF%FEab%C3%28"),
    "repeated": ["1", "abc"],
}

GARBAGE_IDS = ("0", "-1", str(2**70), "cam_abc", "x" * 300, "%00", "%FF")


def _encode(pairs: list[tuple[str, Value]]) -> bytes:
    out = []
    for name, value in pairs:
        values = value if isinstance(value, list) else [value]
        for one in values:
            encoded = one.encoded if isinstance(one, Raw) else quote(one, safe="")
            out.append(f"{quote(name, safe='')}={encoded}")
    return "&".join(out).encode()


# --- the account and its objects ------------------------------------------------------------------


@dataclass
class World:
    """A master account's objects, made through the API when a route first needs them."""

    runtime: Runtime
    live_server: LiveServer
    master: TestAccount
    sub: TestAccount
    cache: dict[str, Any] = field(default_factory=dict)

    def fresh(self) -> World:
        return World(self.runtime, self.live_server, self.master, self.sub)

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def _v4(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.master.client.request(method, path, json=body, headers=self.master.headers)
        assert answer.status_code in (200, 201), answer.text
        data: dict[str, Any] = answer.json()
        return data

    @property
    def campaign(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "campaign",
            lambda: create_campaign(
                self.master,
                validation_methods="pin,widget,custom_code,qr",
                validations_per_session=1000,
                claim_fields="firstname,lastname,email,phone,birthday",
                custom_fields="size",
                consent_text="I agree",
            ),
        )

    @property
    def session_code(self) -> str:
        return self._once(  # type: ignore[no-any-return]
            "session", lambda: open_session(self.live_server, self.campaign["code"])
        )

    @property
    def session_row(self) -> tuple[int, str]:
        def find() -> tuple[int, str]:
            with self.runtime.db.read() as s:
                row = s.scalars(select(CouponSession).where(CouponSession.code == self.session_code)).one()
                return row.id, row.short_code

        return self._once("session_row", find)  # type: ignore[no-any-return]

    @property
    def card(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "card", lambda: create_card(self.master, pin=PIN, reward_goal=10)
        )

    @property
    def holder(self) -> dict[str, Any]:
        return self._once("holder", lambda: create_holder(self.master, self.card["id"]))  # type: ignore[no-any-return]

    @property
    def holder_id(self) -> str:
        holder = self.holder
        return str(holder["ID"] if "ID" in holder else holder["id"])

    @property
    def holder_codes(self) -> tuple[str, str]:
        """The holder's page token and its short code."""

        def find() -> tuple[str, str]:
            with self.runtime.db.read() as s:
                row = s.get(LoyaltyHolder, int(self.holder_id))
                assert row is not None
                return row.token, row.short_code

        return self._once("holder_codes", find)  # type: ignore[no-any-return]

    @property
    def directory(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "directory",
            lambda: create_directory(
                self.master, campaigns=[{"id": self.campaign["id"]}], loyalty_cards=[str(self.card["id"])]
            ),
        )

    @property
    def directory_user(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "user",
            lambda: create_user(
                self.master, self.directory["id"], email=f"u{time.time_ns()}@example.com", password=PASSWORD
            ),
        )

    @property
    def category(self) -> dict[str, Any]:
        return self._once("category", lambda: create_category(self.master, "Food"))  # type: ignore[no-any-return]

    @property
    def webhook(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "webhook",
            lambda: self._v4("POST", "/v4/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )

    def reset_token(self) -> str:
        body = assert_ok(self.master.call("/v3/subaccount/reset/url", subaccount=f"sub_{self.sub.id}"))
        return path_of(body["url"]).rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def world(runtime: Runtime, live_server: LiveServer) -> Iterator[World]:
    master = make_account(runtime, live_server)
    sub = make_account(runtime, live_server, parent_id=master.id, password=None)
    yield World(runtime, live_server, master, sub)
    master.client.close()
    sub.client.close()


def _sign_in(base_url: str, email: str) -> httpx2.Client:
    client = httpx2.Client(
        base_url=base_url,
        timeout=30,
        headers={"Accept": "text/html"},
        cookies={"oc_csrf": CSRF_NONCE},
        verify=TLS,
    )
    login = client.get("/dashboard/login")
    answer = client.post(
        "/dashboard/login",
        data={
            "email": email,
            "password": PASSWORD,
            "csrf_token": csrf_from(login.text),
            "next": "/dashboard/",
        },
    )
    assert answer.status_code == 303, answer.text
    return client


@dataclass
class Signed:
    cookies: dict[str, str]
    token: str


@pytest.fixture(scope="module")
def signed(world: World) -> Signed:
    """The master's dashboard session: its cookies and CSRF token (each case gets its own client
    with a copy, so a case that signs out or in as someone else changes no other case)."""
    client = _sign_in(world.live_server.url, world.master.email)
    token = csrf_from(client.get("/dashboard/account").text)
    cookies = dict(client.cookies.items())
    client.close()
    return Signed(cookies, token)


# --- what a route gets: path parameters and plausible values --------------------------------------


def _path_values(case: Case, world: World) -> dict[str, str]:
    """Real objects for the route's path parameters."""
    path = case.path
    values: dict[str, str] = {}
    for name in re.findall(r"{(\w+)}", path):
        if path.startswith("/p/"):
            value = {"code": world.campaign["code"], "session_code": world.session_code}[name]
        elif path.startswith("/l/"):
            value = world.card["code"] if name == "code" else world.holder_codes[0]
        elif path.startswith("/d/") and name == "code":
            value = world.directory["code"]
        elif name == "token":
            value = world.reset_token()
        elif name == "public_id":
            if path.startswith("/dashboard/campaigns/"):
                value = world.campaign["id"]
            elif path.startswith("/dashboard/webhooks/"):
                value = world.webhook["id"]
            else:
                value = world.directory["id"]
        elif name == "session_id":
            value = str(world.session_row[0])
        elif name == "sub_id":
            value = f"sub_{world.sub.id}"
        elif name == "card_id":
            value = str(world.card["id"])
        elif name == "holder_id":
            value = world.holder_id
        elif name == "user_id":
            value = world.directory_user["id"]
        elif name == "category_id":
            value = world.category["id"]
        elif name == "campaign_id" or (name == "item_id" and "/campaigns/" in path):
            value = world.campaign["id"]
        elif name == "item_id":
            value = str(world.card["id"])
        elif name == "campaign_ref":
            value = world.campaign["id"]
        elif name in ("fanout_id", "key", "raw_token"):
            value = "nosuch"
        else:
            raise AssertionError(f"say what fills {{{name}}} of {path}")
        values[name] = value
    return values


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _plausible(case: Case, name: str, world: World, signed: Signed) -> Value:
    """A value the field would be sent with by a person using the page."""
    path = case.path
    if name in ("csrf_token", "csrf", "form_token"):
        if path.startswith("/dashboard/"):
            return signed.token
        return web.form_token(world.runtime, CSRF_NONCE)
    if path.startswith("/dashboard/singleuse") and name == "amount":
        return "2"
    if path.startswith("/d/") and name == "next":
        return f"/d/{world.directory['code']}"
    if name == "status":
        return "customer" if "/subaccounts" in path else "active"
    if name == "email":
        if path.startswith(("/dashboard/login", "/d/")) and path.endswith("/login"):
            return world.master.email if path.startswith("/dashboard/") else world.directory_user["email"]
        return f"n{time.time_ns()}@example.com"
    if name == "code" and path.startswith("/p/"):
        return world.session_row[1]
    if name == "holder":
        return world.holder_codes[1]
    if name in ("campaign", "target", "reward_campaign"):
        return world.campaign["id"]
    if name == "campaigns":
        return [world.campaign["id"]]
    if name == "loyalty_cards":
        return [str(world.card["id"])]
    if name == "back":
        return f"/dashboard/campaigns/{world.campaign['id']}"
    return PLAUSIBLE.get(name, "1")


PLAUSIBLE: dict[str, Value] = {
    "name": "Safety net",
    "title": "Title",
    "subtitle": "Sub",
    "description": "Words",
    "terms": "Terms",
    "image": "https://example.com/a.png",
    "tags": "a,b",
    "folder": "f",
    "start_date": "2024-01-01",
    "end_date": "2099-12-31",
    "expiry_mode": "none",
    "expiry_date": "2099-12-31",
    "expiry_minutes": "60",
    "expiry_days": "3",
    "pin": PIN,
    "validations_per_session": "1000",
    "max_validations": "",
    "custom_fields": "size",
    "consent_text": "I agree",
    "require_claim": "",
    "validation_methods": ["pin", "widget", "custom_code", "qr"],
    "claim_fields": ["firstname", "lastname", "email"],
    "required_fields": ["firstname"],
    "validation_value": "12.50",
    "firstname": "Ann",
    "lastname": "Lee",
    "first_name": "Ann",
    "last_name": "Lee",
    "phone": "+32 470 00 00 00",
    "birthday": "1990-05-01",
    "custom_size": "L",
    "consent": "on",
    "amount": "1",
    "password": PASSWORD,
    "password_confirm": PASSWORD,
    "next": "/dashboard/",
    "code_prefix": "",
    "code_length": "12",
    "code_type": "alphanumeric",
    "automated_codes": "1",
    "url": "http://127.0.0.1:9/hook",
    "events": ["*"],
    "subaccount": "",
    "since": "2024-01-01 00:00:00",
    "event": "",
    "enabled": "1",
    "grace_hours": "1",
    "company_name": "Company",
    "expiry_date_sub": "",
    "max_campaigns": "10",
    "timezone": "Europe/Brussels",
    "reason": "correction",
    "reward_name": "Coffee",
    "reward_threshold": "5",
    "type": "stamp",
    "reward_goal": "10",
    "expire_days": "30",
    "join_fields": ["first_name", "email"],
    "active": "1",
    "expires_at": "2099-01-01",
    "access": "public",
    "payment_url": "",
    "membership_days": "30",
    "category": "",
    "featured": "1",
    "parent": "",
    "recipient": "",
    "message": "Hello",
    "confirmed": "yes",
    "file": "",
}


# --- stored data ----------------------------------------------------------------------------------

# Columns a refusal may change on purpose: wrong PINs are counted (and lock the coupon).
VOLATILE = {"pin_failures", "locked", "locked_at", "updated_at", "last_login_at", "login_count"}
# Tables whose rows a refusal may add: the event log, jobs, one-time tokens, idempotency answers.
UNWATCHED = {"events", "jobs", "one_time_tokens", "idempotency_records", "attempt_counters"}


def _watched_tables() -> list[Table]:
    return [
        t
        for t in Base.metadata.sorted_tables
        if "account_id" in t.c and t.name not in UNWATCHED and not t.name.startswith("webhook_")
    ]


WATCHED = _watched_tables()
# The objects a case names, by table: their whole rows are compared.
OBJECT_TABLES = {
    "campaign": "campaigns",
    "card": "loyalty_cards",
    "directory": "directories",
    "category": "categories",
    "webhook": "webhook_endpoints",
}


def snapshot(world: World) -> Any:
    """What a refused form must leave as it was: how many rows the accounts own in each table (and
    the highest ID), and the whole rows of the objects the case works on."""
    ids = (world.master.id, world.sub.id)
    counts = union_all(
        *(
            select(literal(t.name), func.count(), func.max(*t.primary_key.columns)).where(
                t.c.account_id.in_(ids)
            )
            for t in WATCHED
        )
    )
    accounts = Base.metadata.tables["accounts"]
    wanted: list[tuple[Table, Any]] = [(accounts, accounts.c.id.in_(ids))]
    for key, name in OBJECT_TABLES.items():
        if key in world.cache:
            table = Base.metadata.tables[name]
            wanted.append((table, table.c.id == int(str(world.cache[key]["id"]).split("_")[-1])))
    if "session" in world.cache:
        table = Base.metadata.tables["coupon_sessions"]
        wanted.append((table, table.c.code == world.cache["session"]))
    if "holder" in world.cache:
        table = Base.metadata.tables["loyalty_holders"]
        wanted.append((table, table.c.id == int(world.holder_id)))
    with world.runtime.db.read() as s:
        out: list[Any] = [sorted(tuple(r) for r in s.execute(counts))]
        for table, where in wanted:
            columns = [c for c in table.c if c.name not in VOLATILE]
            # In a set's order: PostgreSQL returns the rows in storage order, which an UPDATE of
            # a volatile column (a sign-in's last_login_at) changes.
            rows = [tuple(r) for r in s.execute(select(*columns).where(where))]
            out.append((table.name, sorted(rows, key=repr)))
    return out


# --- posting and judging --------------------------------------------------------------------------


@dataclass
class Poster:
    case: Case
    world: World
    client: httpx2.Client
    html: bool
    failures: list[str] = field(default_factory=list)
    before: Any = None

    def send(self, label: str, path: str, **kwargs: Any) -> httpx2.Response:
        if self.before is None:
            self.before = snapshot(self.world)
        response = self.client.post(path, **kwargs)
        self.judge(label, path, response)
        return response

    def judge(self, label: str, path: str, response: httpx2.Response) -> None:
        status, body = response.status_code, response.text
        where = f"{self.case.path} [{label}] POST {path[:120]}"
        if status >= 500:
            self.failures.append(f"{where} -> {status} {body[:300]}")
            return
        if "Traceback" in body or 'File "' in body:
            self.failures.append(f"{where} -> {status}: a stack trace in the answer")
        if not (200 <= status < 500):
            self.failures.append(f"{where} -> unexpected {status}")
        kind = response.headers.get("content-type", "")
        if self.html and status >= 400 and "text/html" not in kind:
            self.failures.append(f"{where} -> {status} {kind}: not a page: {body[:200]}")
        location = response.headers.get("location", "")
        refused = status >= 400 or "problem=" in location
        after = snapshot(self.world)
        if refused and after != self.before:
            changed = [a for a, b in zip(after, self.before, strict=True) if a != b]
            self.failures.append(f"{where} -> {status}: refused, but stored rows changed: {changed}"[:2000])
        self.before = after


def _client(case: Case, world: World, signed: Signed) -> httpx2.Client:
    if case.path == "/dashboard/logout":
        # Signing out ends the session on the server: this case signs in on its own.
        return _sign_in(world.live_server.url, world.master.email)
    return httpx2.Client(
        base_url=world.live_server.url,
        timeout=30,
        headers={"Accept": "text/html"},
        cookies={**signed.cookies, "oc_csrf": CSRF_NONCE},
        verify=TLS,
    )


@pytest.fixture
def poster_for(world: World, signed: Signed) -> Iterator[Callable[[Case], Poster]]:
    made: list[Poster] = []

    def make(case: Case) -> Poster:
        objects = world.fresh() if case.destructive else world
        poster = Poster(
            case, objects, _client(case, objects, signed), html=case.route.path not in JSON_ROUTES
        )
        made.append(poster)
        return poster

    yield make
    for poster in made:
        poster.client.close()


URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


def _baseline(case: Case, world: World, signed: Signed) -> list[tuple[str, Value]]:
    return [(name, _plausible(case, name, world, signed)) for name in fields_of(case.route)]


def _assert_none(poster: Poster) -> None:
    assert not poster.failures, "\n".join(poster.failures)


def _params(kinds: list[str]) -> list[Any]:
    params = []
    for case in CASES:
        for kind in kinds:
            if not case.reads_fields and kind in HOSTILE:
                continue
            params.append(pytest.param(case, kind, id=f"{case.id}-{kind}"))
    return params


# --- the tests ------------------------------------------------------------------------------------


def test_the_routes_are_the_apps(app: Any) -> None:
    """The cases come from the app the suite serves, and every form has its fields found."""
    served = {(r.path, tuple(sorted(r.methods or ()))) for r in _page_routes(app)}
    assert served == {(r.path, tuple(sorted(r.methods or ()))) for r in _page_routes(_APP)}
    spec_paths = set(app.openapi()["paths"])
    assert not [r.path for r in POST_ROUTES if r.path in spec_paths]
    assert len(POST_ROUTES) >= 40
    for route in POST_ROUTES:
        source = inspect.getsource(sys.modules[route.endpoint.__module__])
        if "form" in source and route.path not in ("/noop", *JSON_ROUTES):
            assert fields_of(route) or route.path.endswith(
                ("/up", "/down", "/delete", "/revoke", "/logout")
            ), route.path


@pytest.mark.parametrize(("case", "kind"), _params(["empty", *HOSTILE]))
def test_form_fields_with_bad_values(
    case: Case, kind: str, world: World, signed: Signed, poster_for: Callable[[Case], Poster]
) -> None:
    poster = poster_for(case)
    objects = poster.world
    path = _fill(case.path, _path_values(case, objects))
    base = _baseline(case, objects, signed)
    if kind == "empty":
        token = [p for p in base if p[0] in ("csrf_token", "csrf", "form_token")]
        poster.send("empty form", path, content=_encode(token), headers=URLENCODED)
        poster.send("no body", path)
        poster.send("no csrf", path, content=_encode([p for p in base if p not in token]), headers=URLENCODED)
    else:
        for name in fields_of(case.route):
            pairs = [(n, HOSTILE[kind] if n == name else v) for n, v in _baseline(case, objects, signed)]
            poster.send(f"{name}={kind}", path, content=_encode(pairs), headers=URLENCODED)
    _assert_none(poster)


BAD_CSV = {
    "nul": b"email,firstname\na@example.com,An\x00n\n",
    "long cell": b"email,firstname\na@example.com," + b"x" * 200_000 + b"\n",
    "not utf-8": b"email\n\xff\xfe@example.com\n",
    "no header": b"\n\n\n",
    "quotes": b'email,firstname\n"a@example.com,"Ann\n',
    "huge numbers": b"email,customid\na@example.com," + str(2**70).encode() + b"\n",
    "bad email": b"email\nnot an email\n",
}


@pytest.mark.parametrize(("case", "kind"), _params(["bodies"]))
def test_bodies_that_are_not_a_form(
    case: Case, kind: str, world: World, signed: Signed, poster_for: Callable[[Case], Poster]
) -> None:
    poster = poster_for(case)
    objects = poster.world
    path = _fill(case.path, _path_values(case, objects))
    base = _baseline(case, objects, signed)
    flat = {n: (v if isinstance(v, str) else "") for n, v in base}
    poster.send("json", path, content=json.dumps(flat).encode(), headers={"Content-Type": "application/json"})
    poster.send("json list", path, content=b"[1, 2", headers={"Content-Type": "application/json"})
    poster.send(
        "multipart garbage",
        path,
        content=b"--xyz\r\nContent-Disposition: form-data; name=\r\n\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    poster.send(
        "multipart without boundary", path, content=b"abc", headers={"Content-Type": "multipart/form-data"}
    )
    poster.send("text", path, content=b"\x00\xff%%%&&==;", headers={"Content-Type": "text/plain"})
    poster.send("urlencoded garbage", path, content=b"%%%&&==&=&%zz=%", headers=URLENCODED)
    _assert_none(poster)


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[UploadFile]]:
    """Every file the server receives while the test runs (the server runs in this process)."""
    made: list[UploadFile] = []
    original = UploadFile.__init__

    def recording(self: UploadFile, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(UploadFile, "__init__", recording)
    yield made
    for upload in made:
        upload.file.close()


def _left_open(uploads: list[UploadFile]) -> list[UploadFile]:
    """The uploads the server has not closed (it closes some after the answer is sent)."""
    deadline = time.monotonic() + 0.5
    while any(not u.file.closed for u in uploads) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [u for u in uploads if not u.file.closed]


@pytest.mark.parametrize(("case", "kind"), _params(["files"]))
def test_files_where_text_is_expected(
    case: Case,
    kind: str,
    world: World,
    signed: Signed,
    poster_for: Callable[[Case], Poster],
    uploads: list[UploadFile],
) -> None:
    """Uploaded files where the page reads text, and bad CSV files where it reads one: refused,
    and their temporary files closed with the request (not left to the garbage collector)."""
    poster = poster_for(case)
    objects = poster.world
    path = _fill(case.path, _path_values(case, objects))
    flat = {n: (v if isinstance(v, str) else "") for n, v in _baseline(case, objects, signed)}
    strings = {n: v for n, v in flat.items() if n in ("csrf_token", "csrf", "form_token", "campaign")}
    files = {n: ("f.txt", b"1", "text/plain") for n in flat if n not in strings}
    poster.send("files", path, data=strings, files=files or {"x": ("f.txt", b"1", "text/plain")})
    if "file" in flat:
        for label, content in BAD_CSV.items():
            poster.send(f"csv {label}", path, data=strings, files={"file": ("r.csv", content, "text/csv")})
    open_files = _left_open(uploads)
    if open_files:
        poster.failures.append(f"{case.path}: {len(open_files)} uploaded files left open after the answer")
    _assert_none(poster)


@pytest.mark.parametrize(("case", "kind"), _params(["garbage_ids"]))
def test_unknown_and_garbage_ids(
    case: Case, kind: str, world: World, signed: Signed, poster_for: Callable[[Case], Poster]
) -> None:
    poster = poster_for(case)
    objects = poster.world
    real = _path_values(case, objects)
    base = _encode(_baseline(case, objects, signed))
    for name in real:
        for garbage in GARBAGE_IDS:
            path = _fill(case.path, {**real, name: garbage})
            poster.send(f"{{{name}}}={garbage[:20]}", path, content=base, headers=URLENCODED)
    _assert_none(poster)


# --- GET pages with hostile query strings ---------------------------------------------------------

QUERIES = (
    "page=-1&q=%00%FF&tag=%00&state=%FF&category=cat_%00&added=-1&holder=%00&done=%00&problem=%FF",
    # The longest request line the server reads is 16 KB (h11): longer ones never reach a page.
    f"page=abc&q={'x' * 12_000}&category=cat_{2**70}&added={2**70}&holder={'x' * 1000}",
    f"page={2**70}&page=1&q=a&q=b&added=abc&category=abc&tag={'t' * 3000}",
    "page=1e400&next=//evil.example&created=1&saved=1",
    f"next=/%5Cevil.example&done={'d' * 5000}&state=validated",
    "next=javascript:alert(1)&page=0",
)


def _get_cases() -> list[Any]:
    return [pytest.param(route, id=route.path) for route in GET_ROUTES if route.path != "/docs"]


@pytest.mark.parametrize("route", _get_cases())
def test_pages_with_hostile_query_strings(route: APIRoute, world: World, signed: Signed) -> None:
    case = Case(route, route.path)
    failures: list[str] = []
    with _client(case, world, signed) as client:
        values = _path_values(case, world) if "{fmt}" not in route.path else {}
        if "{fmt}" in route.path:
            values = {"code": world.campaign["code"], "session_code": world.session_code, "fmt": "svg"}
        path = _fill(route.path, values)
        for query in QUERIES:
            response = client.get(f"{path}?{query}")
            status, body = response.status_code, response.text
            where = f"GET {route.path}?{query[:60]}"
            if status >= 500 or "Traceback" in body or 'File "' in body:
                failures.append(f"{where} -> {status} {body[:300]}")
            location = response.headers.get("location", "")
            if location.startswith(("//", "http:", "https:", "javascript:", "/\\")) and "evil" in location:
                failures.append(f"{where} -> redirects off the site: {location}")
    assert not failures, "\n".join(failures)
