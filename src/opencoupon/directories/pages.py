"""Consumer pages of a directory under /d/{code}, and the gate that locks its coupons.

Importing this module registers `directory_gate` with the coupon pages' gates: a campaign held
only by login or payment directories opens for a consumer signed in to one of them whose access
is granted (payment completed and not expired, for payment directories)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select, true
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from opencoupon import branding, web
from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import service as accounts
from opencoupon.coupons import gates
from opencoupon.coupons import service as coupon_service
from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.directories import repository, service, signin
from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import hash_password, verify_password
from opencoupon.kit.dates import fmt
from opencoupon.kit.lockout import ADDRESS_FACTOR, BACKSTOP_FACTOR, GuessLimit, Lockout
from opencoupon.models import Campaign, Category, CouponSession, Directory, DirectoryUser, LoyaltyCard
from opencoupon.pages import private_page, render, render_error_page
from opencoupon.runtime import Runtime

router = APIRouter(tags=["Directory pages"], include_in_schema=False)

MIN_PASSWORD = 8
MEMBER_SOURCE = service.MEMBER_SOURCE


def reason_text(access: service.Access, user: DirectoryUser | None) -> str:
    if access.reason == "login":
        return "Sign in or register to open the coupons in this directory."
    if access.reason == "blocked":
        return "Your account in this directory is blocked. Please contact the business."
    if access.reason == "cancelled":
        return "Your payment was cancelled, so the coupons in this directory are locked."
    if access.reason == "revoked":
        return "Your access to this directory was revoked. Please contact the business."
    if access.reason == "expired":
        ended = fmt(user.payment_expires_at) if user else ""
        return f"Your access ended on {ended} UTC. Renew it to unlock the coupons again."
    if access.reason == "pending":
        return "Your payment has not been confirmed yet. The coupons unlock as soon as it is."
    return ""


def _pay_url(directory: Directory, user: DirectoryUser | None, access: service.Access) -> str:
    if (
        directory.access == "payment"
        and user is not None
        and access.reason in ("pending", "cancelled", "expired")
    ):
        return service.payment_redirect(directory, user)
    return ""


def _not_found(request: Request) -> Response:
    if web.wants_json(request):
        return JSONResponse({"error": "Directory not found."}, status_code=404)
    return render_error_page(request, 404, "Directory not found", "There is no directory at this address.")


def _login_redirect(request: Request, directory: Directory, item: Campaign | LoyaltyCard) -> Response:
    base = service.directory_path(directory)
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        # After signing in the browser GETs `next`: a form's address (…/join, …/claim) has no
        # page, so it goes back to the coupon or card, where the form is.
        target = f"/p/{item.code}" if isinstance(item, Campaign) else f"/l/{item.code}"
    login = f"{base}/login?next={quote(target, safe='/')}"
    if web.wants_json(request):
        return JSONResponse(
            {
                "locked": True,
                "reason": "login",
                "message": reason_text(service.Access(False, "login"), None),
                "directory": service.dir_id(directory),
                "login_url": web.runtime_of(request).url(login),
                "register_url": web.runtime_of(request).url(f"{base}/register"),
            },
            status_code=401,
        )
    return RedirectResponse(login, status_code=303)


def _locked(
    request: Request,
    directory: Directory,
    user: DirectoryUser,
    access: service.Access,
    item: Campaign | LoyaltyCard | None,
) -> Response:
    message = reason_text(access, user)
    pay_url = _pay_url(directory, user, access)
    if web.wants_json(request):
        return JSONResponse(
            {
                "locked": True,
                "reason": access.reason,
                "message": message,
                "directory": service.dir_id(directory),
                "user": service.reg_id(user),
                "payment_status": user.payment_status,
                "expiry_date": fmt(user.payment_expires_at),
                "payment_url": pay_url,
            },
            status_code=403,
        )
    return render(
        request,
        "directories/locked.html",
        {
            "brand": branding.of(web.runtime_of(request), directory),
            "title": "Card locked" if isinstance(item, LoyaltyCard) else "Coupon locked",
            "directory": directory,
            "base": service.directory_path(directory),
            "item_name": (item.title or item.name)
            if isinstance(item, Campaign)
            else (item.name if item else ""),
            "message": message,
            "reason": access.reason,
            "pay_url": pay_url,
        },
        status_code=403,
    )


def _unavailable(request: Request) -> Response:
    """Held by login or payment directories, shown (active) in none of them nor in a public one."""
    message = "This coupon is not available in its directory at the moment."
    if web.wants_json(request):
        return JSONResponse({"locked": True, "reason": "hidden", "message": message}, status_code=403)
    return render_error_page(request, 403, "Not available", message)


def _holding(session: Session, item: Campaign | LoyaltyCard) -> tuple[bool, list[Directory]]:
    """Whether a login or payment directory holds the item (shown or hidden), and the
    directories showing it (item status active)."""
    kind = "campaign" if isinstance(item, Campaign) else "loyalty_card"
    locking = False
    holders: list[Directory] = []
    for row, directory in repository.items_holding(session, kind, item.id):
        locking |= directory.access != "public"
        if row.status == "active" and directory not in holders:
            holders.append(directory)
    return locking, holders


def directory_gate(session: Session, request: Request, item: Campaign | LoyaltyCard) -> Response | None:
    """Let the consumer in when no directory locks this campaign or loyalty card, or when they
    are signed in to a directory showing it whose access they have. An item is as open as the
    most open directory showing it: every login or payment directory holding it locks it, shown
    or hidden ("inactive" there), but only one that shows it can open it, and a public one
    opens it only while it shows it (hiding a paid coupon in a public directory gives it away
    no more than hiding it in its paid one)."""
    locking, holders = _holding(session, item)
    if not locking or any(d.access == "public" for d in holders):
        return None
    if not holders:
        return _unavailable(request)
    now = utcnow()
    refused: list[tuple[Directory, DirectoryUser, service.Access]] = []
    for directory in holders:
        user = signin.signed_in_user(session, request, directory)
        access = service.access_for(directory, user, now)
        if access.granted:
            return None
        if user is not None:
            refused.append((directory, user, access))
    if refused:
        directory, user, access = refused[0]
        return _locked(request, directory, user, access, item)
    return _login_redirect(request, holders[0], item)


gates.register(directory_gate)


_OWNER_REASONS = {
    "blocked": "the member is blocked",
    "cancelled": "payment cancelled",
    "pending": "payment not confirmed",
    "revoked": "access revoked",
    "hidden": "the coupon is not available in its directory",
    "gone": "the member is no longer registered",
}


def member_refusal(session: Session, campaign: Campaign, row: CouponSession, action: str) -> str | None:
    """The counter pages' and claim form's check of a member's session (source `directory`, device
    `reg_<id>`): it is validated or claimed (`action`) only while the member could open it, as the
    directory gate would decide for them signed in (docs/directories.md, "Which directory
    decides"): the campaign open to anyone, or shown by the member's directory, where they have
    access now. Any other session: None."""
    if row.source != MEMBER_SOURCE:
        return None
    locking, holders = _holding(session, campaign)
    if not locking or any(d.access == "public" for d in holders):
        return None
    # No `reg_<id>` any more (a member erased before erasure kept it): a member who is gone.
    number = row.device_id.removeprefix("reg_") if row.device_id.startswith("reg_") else ""
    user = session.get(DirectoryUser, int(number)) if number.isdigit() else None
    if user is None:
        reason = "gone"
    else:
        directory = next((d for d in holders if d.id == user.directory_id), None)
        if directory is None:
            reason = "hidden"
        else:
            access = service.access_for(directory, user, utcnow())
            if access.granted:
                return None
            reason = access.reason
    if reason == "expired" and user is not None:
        why = f"access ended on {fmt(user.payment_expires_at)} UTC"
    else:
        why = _OWNER_REASONS.get(reason, reason)
    return f"This coupon cannot be {action}: its directory member no longer has access ({why})."


gates.register_owner_check(member_refusal)


# ---- the directory -----------------------------------------------------------------------------


def _sections(
    pairs: list[tuple[Any, Campaign]], categories: list[Category], base: str
) -> list[dict[str, Any]]:
    """Featured first, then one section per category in tree order, then the uncategorised."""
    paths = service.paths_of(categories)
    order = [service.cat_id(c.id) for c in service.tree_order(categories)]

    def card(row: Any, campaign: Campaign) -> dict[str, Any]:
        return {
            "id": f"cam_{campaign.id}",
            "title": campaign.title or campaign.name,
            "name": campaign.name,
            "description": campaign.description,
            "featured": row.featured,
            "category": service.cat_id(row.category_id),
            "category_name": paths.get(row.category_id, "") if row.category_id else "",
            "href": f"{base}/c/cam_{campaign.id}",
        }

    featured = [card(r, c) for r, c in pairs if r.featured]
    by_category: dict[str, list[dict[str, Any]]] = {}
    rest: list[dict[str, Any]] = []
    for row, campaign in pairs:
        if row.featured:
            continue
        if row.category_id:
            by_category.setdefault(service.cat_id(row.category_id), []).append(card(row, campaign))
        else:
            rest.append(card(row, campaign))
    sections: list[dict[str, Any]] = []
    if featured:
        sections.append({"title": "Featured", "category": "", "items": featured})
    for key in order:
        if key in by_category:
            number = int(key.removeprefix("cat_"))
            sections.append({"title": paths.get(number, ""), "category": key, "items": by_category[key]})
    if rest:
        sections.append({"title": "More coupons", "category": "", "items": rest})
    return sections


def _shown_categories(session: Session, directory: Directory) -> list[Category]:
    """The owner's categories, and those of its subaccounts that the directory's items are filed
    under, with their parents: a master's directory may file campaigns under a subaccount's."""
    shown = list(repository.categories(session, Category.account_id == directory.account_id))
    known = {c.id for c in shown}
    wanted = repository.item_category_ids(session, directory.id) - known
    while wanted:  # at most MAX_CATEGORY_LEVEL rounds: each goes one level up
        found = repository.categories_by_id(session, wanted).values()
        shown += found
        known |= {c.id for c in found}
        wanted = {c.parent_id for c in found if c.parent_id is not None} - known
    return shown


def _with_descendants(categories: list[Category], root: int) -> list[int]:
    found = [root]
    for _ in range(service.MAX_CATEGORY_LEVEL):
        found += [c.id for c in categories if c.parent_id in found and c.id not in found]
    return found


@router.get("/d/{code}")
def directory_page(request: Request, code: str, q: str = "", category: str = "") -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        user = signin.signed_in_user(session, request, directory)
        access = service.access_for(directory, user, utcnow())
        if user is not None and user.blocked and access.granted:
            # A blocked member of a public directory is signed out (it still opens to anyone);
            # in a login or payment directory the page says they are blocked.
            user = None
        categories = _shown_categories(session, directory)
        selected = ""
        category_ids: list[int] | None = None
        known = {c.id for c in categories}
        if category:
            try:
                number = ids.parse_public_id(category, "cat_", "category", ApiError(516, ""))
            except ApiError:
                number = 0
            if number in known:
                selected = service.cat_id(number)
                category_ids = _with_descendants(categories, number)
        search = q.strip()[:100]
        pairs = list(
            repository.campaign_items(
                session, directory.id, visible_only=True, search=search, category_ids=category_ids
            )
        )
        base = service.directory_path(directory)
        sections = _sections(pairs, categories, base)
        cards = _loyalty_cards(session, directory)
        paths = service.paths_of(categories)
        options = [{"id": service.cat_id(c.id), "label": paths[c.id]} for c in service.tree_order(categories)]
        message = reason_text(access, user) if not access.granted else ""
        pay_url = _pay_url(directory, user, access)
        if web.wants_json(request):
            # The member's ID and payment link, and on the page the sign-out form's token: no cache
            # keeps them (pages.private_page).
            return private_page(
                JSONResponse(
                    {
                        "directory": service.dir_id(directory),
                        "name": directory.name,
                        "access": directory.access,
                        "locked": not access.granted,
                        "reason": "" if access.granted else access.reason,
                        "message": message,
                        "user": service.reg_id(user) if user else None,
                        "payment_status": user.payment_status if user else None,
                        "payment_url": pay_url,
                        "sections": [
                            {
                                "title": s["title"],
                                "category": s["category"],
                                "campaigns": [{**i, "url": runtime.url(i["href"])} for i in s["items"]],
                            }
                            for s in sections
                        ],
                        "loyalty_cards": cards,
                        "categories": [{"id": service.cat_id(c.id), "path": paths[c.id]} for c in categories],
                    }
                )
            )
        form_token, fresh = signin.csrf_token(request)
        response = render(
            request,
            "directories/index.html",
            {
                "brand": branding.for_account(session, directory.account_id),
                "title": directory.name,
                "directory": directory,
                "base": base,
                "user": user,
                "access": access,
                "message": message,
                "pay_url": pay_url,
                "sections": sections,
                "loyalty_cards": cards,
                "options": options,
                "selected": selected,
                "q": search,
                "csrf_token": form_token,
            },
        )
        signin.set_csrf_cookie(response, request, fresh)
        return private_page(response)


def _loyalty_cards(session: Session, directory: Directory) -> list[dict[str, Any]]:
    """The cards the directory shows that it may hold: its account's own, and for a master's
    directory its subaccounts' too (service.may_hold), as its campaigns."""
    rows = [r for r in repository.items(session, directory.id, "loyalty_card") if r.status == "active"]
    found = repository.loyalty_cards(session, lambda _column: true(), [r.item_id for r in rows])
    if not found:
        # Without the loyalty capability there is nothing to link to.
        return []
    found = {
        card_id: card
        for card_id, card in found.items()
        if service.may_hold(session, directory, card.account_id)
    }
    return [
        {
            "id": str(r.item_id),
            "name": getattr(found[r.item_id], "name", ""),
            "href": f"/l/{found[r.item_id].code}",
        }
        for r in rows
        if r.item_id in found
    ]


@router.get("/d/{code}/c/{campaign_ref}")
def open_coupon(request: Request, code: str, campaign_ref: str) -> Response:
    """Open a coupon of the directory: the gates decide; a signed-in user gets their own session
    (the same one again on every visit), an anonymous visitor of a public directory goes to the
    coupon's own page."""
    runtime = web.runtime_of(request)
    with runtime.db.transaction() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        try:
            number = ids.parse_public_id(campaign_ref, "cam_", "campaign", ApiError(502, ""))
        except ApiError:
            number = 0
        row = repository.item(session, directory.id, "campaign", number) if number else None
        campaign = session.get(Campaign, number) if row is not None else None
        if row is None or row.status != "active" or campaign is None or campaign.deleted_at is not None:
            if web.wants_json(request):
                return JSONResponse({"error": "Coupon not found in this directory."}, status_code=404)
            return render_error_page(request, 404, "Coupon not found", "This directory has no such coupon.")
        answer = gates.check(session, request, campaign)
        if answer is not None:
            return answer
        user = signin.signed_in_user(session, request, directory)
        if user is None or user.blocked:
            # Anonymous, or blocked (past the gates only through a public directory): the
            # coupon's own page, as for anyone; never a personal session in a blocked name.
            return RedirectResponse(f"/p/{campaign.code}", status_code=303)
        coupon = _member_session(session, campaign, user)
        if coupon is None:
            # No coupon of theirs yet, and the campaign opens none now (inactive, not started,
            # ended), as on the coupon's own page.
            problem = coupon_service.campaign_open_problem(campaign, utcnow()) or ""
            if web.wants_json(request):
                return JSONResponse({"error": problem}, status_code=410)
            return render_error_page(request, 410, campaign.title or campaign.name, problem)
        target = session_path(campaign, coupon)
        # The member's own session address: a bearer token, kept by no cache.
        if web.wants_json(request):
            return private_page(JSONResponse({"session": coupon.code, "url": runtime.url(target)}))
        return private_page(RedirectResponse(target, status_code=303))


def _member_session(session: Session, campaign: Campaign, user: DirectoryUser) -> CouponSession | None:
    """The member's session of the campaign: the one they have, or a new one when the campaign
    opens sessions now (None when it does not). The member's row is locked first, so their
    openings of a coupon at the same moment (a double tap, several tabs) make one session. Only
    a session the directory made counts (source `directory`): the device ID `reg_<id>` is
    guessable, and a session of another source under it is not the member's."""
    repository.lock_user_for_opening(session, user.id)
    device = f"reg_{user.id}"
    existing = session.scalar(
        select(CouponSession)
        .where(
            CouponSession.campaign_id == campaign.id,
            CouponSession.source == MEMBER_SOURCE,
            CouponSession.device_id == device,
            CouponSession.removed_at.is_(None),
        )
        .order_by(CouponSession.id.desc())
        .limit(1)
    )
    if existing is not None:
        return existing
    if coupon_service.campaign_open_problem(campaign, utcnow()) is not None:
        return None
    return new_session(
        session,
        campaign,
        source=MEMBER_SOURCE,
        device_id=device,
        firstname=user.first_name,
        lastname=user.last_name,
        email=user.email,
    )


# ---- registration, sign-in, sign-out, single sign-on ---------------------------------------------


def _login_limit(runtime: Runtime) -> GuessLimit:
    """Sign-in attempts per directory and email, as the dashboard's sign-in counts them
    (OPENCOUPON_LOGIN_ATTEMPTS_PER_MINUTE a minute from one client address, ten times that from
    all addresses together; fixed windows, counted in the database so every API process shares one
    count): a password cannot be guessed by trying many, and failing as someone else from one
    address does not keep the member out. The right password gives its attempt back."""
    per_minute = max(1, int(runtime.settings.login_attempts_per_minute))
    window = dt.timedelta(minutes=1)
    return GuessLimit(
        per_client=Lockout("directory-login-email-address", limit=per_minute, window=window),
        per_secret=Lockout("directory-login", limit=per_minute * BACKSTOP_FACTOR, window=window),
    )


def _login_address_limit(runtime: Runtime) -> Lockout:
    """Sign-in attempts per client address, at ADDRESS_FACTOR times the per-email rate (as the
    dashboard's sign-in): an office behind one address is not held up, a sweep of emails is."""
    per_minute = runtime.settings.login_attempts_per_minute * ADDRESS_FACTOR
    return Lockout("directory-login-address", limit=max(1, int(per_minute)), window=dt.timedelta(minutes=1))


def _register_limit(runtime: Runtime) -> Lockout:
    """Registrations per client address: OPENCOUPON_LOGIN_ATTEMPTS_PER_MINUTE a minute, so one
    address cannot fill a directory with made-up members (nor the server with password hashing)."""
    per_minute = runtime.settings.login_attempts_per_minute
    return Lockout("directory-register", limit=max(1, int(per_minute)), window=dt.timedelta(minutes=1))


def _form_page(
    request: Request,
    template: str,
    directory: Directory,
    *,
    error: str = "",
    values: dict[str, str] | None = None,
    status_code: int = 200,
    next_path: str = "",
) -> Response:
    form_token, fresh = signin.csrf_token(request)
    response = render(
        request,
        template,
        {
            "brand": branding.of(web.runtime_of(request), directory),
            "title": directory.name,
            "directory": directory,
            "base": service.directory_path(directory),
            "error": error,
            "values": values or {},
            "csrf_token": form_token,
            "next": next_path,
        },
        status_code=status_code,
    )
    signin.set_csrf_cookie(response, request, fresh)
    # A sign-in or registration form in another site's frame could take a member's password; the
    # form's CSRF token is this browser's: no cache keeps it.
    return private_page(response)


_FIELD_LABELS = {
    "email": "email",
    "password": "password",
    "first_name": "first name",
    "last_name": "last name",
    "phone": "phone",
}


@router.get("/d/{code}/register")
def register_form(request: Request, code: str) -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        return _form_page(request, "directories/register.html", directory)


@router.post("/d/{code}/register")
def register(
    request: Request,
    code: str,
    email: str = Form(""),
    password: str = Form(""),
    first_name: str = Form(""),
    last_name: str = Form(""),
    phone: str = Form(""),
    csrf_token: str = Form(""),
) -> Response:
    """The password is hashed only for a genuine form within the limit, and outside any write
    transaction: tens of milliseconds in which, on SQLite, no other call could write."""
    runtime = web.runtime_of(request)
    values = {"email": email, "first_name": first_name, "last_name": last_name, "phone": phone}
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        session.expunge_all()  # used below, after this transaction

    def form_again(status_code: int, error: str) -> Response:
        """The form again, filled in as sent, with what stopped it."""
        return _form_page(
            request,
            "directories/register.html",
            directory,
            values=values,
            status_code=status_code,
            error=error,
        )

    if not web.csrf_ok(request, csrf_token):
        return form_again(400, web.csrf_refusal(request))
    unusable = web.fields_with_control_characters({"email": email, "password": password, **values})
    if unusable:
        values.update({name: "" for name in unusable if name in values})  # not shown back as sent
        labels = ", ".join(_FIELD_LABELS.get(name, name) for name in unusable)
        return form_again(422, f"Please remove the invisible control characters from: {labels}.")
    if len(password) < MIN_PASSWORD:
        return form_again(422, f"Choose a password of at least {MIN_PASSWORD} characters.")
    with runtime.db.transaction() as session:
        within_limit = _register_limit(runtime).attempt(session, runtime.keyring, web.client_key(request))
    if not within_limit:
        return form_again(429, "Too many registrations from here. Wait a minute and try again.")
    password_hash = hash_password(password)
    with runtime.db.transaction() as session:
        try:
            user = service.register_user(
                session,
                directory,
                email=email,
                password_hash=password_hash,
                now=utcnow(),
                source="registration",
                first_name=first_name.strip()[:100],
                last_name=last_name.strip()[:100],
                phone=phone.strip()[:40],
            )
        except ApiError as err:
            # Saying so tells who is a member, as a registration form must; the answer was
            # counted by the per-address limit above (docs/directories.md, "Who is a member").
            message = {
                304: "This email is already registered. Sign in instead.",
                305: "Please enter a valid email address.",
            }.get(err.code, err.description)
            return form_again(422, message)
        user.last_login_at = utcnow()
        if directory.access == "payment":
            target = service.payment_redirect(directory, user)
        else:
            target = service.directory_path(directory)
        response = RedirectResponse(target, status_code=303)
        signin.sign_in(response, request, directory, user)
        return response


@router.get("/d/{code}/login")
def login_form(request: Request, code: str, next: str = "") -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        base = service.directory_path(directory)
        return _form_page(
            request, "directories/login.html", directory, next_path=signin.safe_next(next, base)
        )


@router.post("/d/{code}/login")
def login(
    request: Request,
    code: str,
    email: str = Form(""),
    password: str = Form(""),
    next: str = Form(""),
    csrf_token: str = Form(""),
) -> Response:
    """Three short transactions, the password checked outside them all: an argon2 check takes
    tens of milliseconds, during which a write transaction on SQLite would hold every writer."""
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        normalized = accounts.normalize_email(email)
        user = repository.user_by_email(session, directory.id, normalized)
        session.expunge_all()  # read below, after this transaction
    base = service.directory_path(directory)
    target = signin.safe_next(next, base)

    def form_again(status_code: int, error: str) -> Response:
        """The form again, with the email as sent and what stopped it."""
        return _form_page(
            request,
            "directories/login.html",
            directory,
            values={"email": email},
            status_code=status_code,
            next_path=target,
            error=error,
        )

    if not web.csrf_ok(request, csrf_token):
        return form_again(400, web.csrf_refusal(request))
    client = web.client_key(request)
    login_limit = _login_limit(runtime)
    with runtime.db.transaction() as session:
        # One address trying a password on many emails (each within its own limit) is held too;
        # an attempt its address's limit refuses does not count for the email from all addresses.
        within_limits = _login_address_limit(runtime).attempt(
            session, runtime.keyring, client
        ) and login_limit.attempt(session, runtime.keyring, (directory.id, normalized), client)
    if not within_limits:
        return form_again(429, "Too many sign-in attempts. Wait a minute and try again.")
    if not verify_password(user.password_hash if user else None, password) or user is None:
        return form_again(401, "Email or password is not correct.")
    with runtime.db.transaction() as session:
        login_limit.refund(session, runtime.keyring, (directory.id, normalized), client)
    if user.blocked:
        return form_again(403, reason_text(service.Access(False, "blocked"), user))
    with runtime.db.transaction() as session:
        repository.record_login(session, user.id, utcnow())
    response = RedirectResponse(target, status_code=303)
    signin.sign_in(response, request, directory, user)
    return response


@router.post("/d/{code}/logout")
def logout(request: Request, code: str) -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        response = RedirectResponse(service.directory_path(directory), status_code=303)
    # Signed out even when the form's token expired (the form's token is not checked): a forged
    # sign-out can only sign someone out, while refusing a real one left them signed in unaware.
    signin.sign_out(response, request, directory)
    return response


@router.get("/d/{code}/sso/{raw_token}")
def single_sign_on(request: Request, code: str, raw_token: str) -> Response:
    """Redeem a one-time token from POST /v4/directory/{id}/users/{userId}/sso."""
    runtime = web.runtime_of(request)
    with runtime.db.transaction() as session:
        directory = repository.directory_by_code(session, code)
        if directory is None:
            return _not_found(request)
        # Compared first, redeemed after: a link opened at another directory's address is not
        # used up there, and still signs its member in at its own directory.
        found = accounts_repo.token_by_digest(session, runtime.keyring.digest(raw_token), service.SSO_PURPOSE)
        user = None
        if found is not None and found.page == service.dir_id(directory):
            number = int(found.target.removeprefix("reg_") or 0)
            user = repository.user(session, directory.id, number)
            if user is not None and (
                user.blocked or not accounts_repo.consume_token(session, found.id, utcnow())
            ):
                user = None
        if user is None:
            return render_error_page(
                request, 403, "Sign-in link not valid", "This sign-in link was used already or has expired."
            )
        user.last_login_at = utcnow()
        response = RedirectResponse(service.directory_path(directory), status_code=303)
        signin.sign_in(response, request, directory, user)
        return response


__all__ = ["directory_gate", "member_refusal", "router"]
