"""Dashboard pages for directories: the directories, their campaigns (category, featured, status)
and loyalty cards, the category tree, registered users with payment status and expiry, and
granting or revoking access by hand (directories.service.grant_access / revoke_access)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.coupons import repository as coupons_repo
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    build,
    check_text,
    many,
    page,
    page_number,
    parse_int,
    saved_or_form_again,
    text,
)
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.directories import repository, service
from opencoupon.directories.schemas import (
    CategoryCreate,
    CategoryPatch,
    DirectoryCampaignUpdate,
    DirectoryCreate,
    DirectoryPatch,
)
from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.endpoint import ApiContext
from opencoupon.loyalty import repository as loyalty_repo
from opencoupon.models import Account, Campaign, Category, Directory, LoyaltyCard

router = APIRouter(include_in_schema=False)

USERS_PAGE = 50
NOT_FOUND = PageError(404, "Not found", "There is no such directory or user in your account.")
CATEGORY_NOT_FOUND = PageError(404, "Not found", "There is no such category in your account.")
# The API's "Missing parameter: name" speaks of parameters; a form's person typed nothing.
ENTER_A_NAME = "Enter a name."
# The service cuts a longer name to its column; the form refuses it instead (check_text).
NAME_LIMIT = 200
DESCRIPTION_LIMIT = 5000
# The service refuses a longer one (directories.service._payment_url): refused here by its label.
PAYMENT_URL_LIMIT = 2000


def _directory(ctx: ApiContext, public_id: str) -> Directory:
    """The directory on this page; another account's or a missing one is the 404 page."""
    try:
        return service.get_directory(ctx, public_id)
    except ApiError:
        raise NOT_FOUND from None


def _directories_context(
    request: Request, account: Account, new_category: dict[str, str] | None = None, problem: str = ""
) -> dict[str, Any]:
    """The directories and the category tree; `new_category` and `problem` refill a refused
    new-category form (otherwise they come from the redirect's query)."""
    with api_context(request, account) as ctx:
        rows = repository.directories(ctx.session, ctx.scope(Directory.account_id))
        found = [service.directory_v4(ctx, d) for d in rows]
        categories = _category_tree(ctx)
    return {
        "title": "Directories",
        "account": account,
        "directories": found,
        "categories": categories,
        # The new-category form's parents: only those that can take a child (levels 1 and 2).
        "parents": sorted(
            (c for c in categories if int(c["level"]) < service.MAX_CATEGORY_LEVEL),
            key=lambda c: str(c["path"]),
        ),
        "done": "" if problem else request.query_params.get("done", "")[:200],
        "problem": problem or request.query_params.get("problem", "")[:300],
        "at": "" if problem else request.query_params.get("at", "")[:40],
        "new_category": new_category or {"name": "", "parent": ""},
    }


@router.get("/dashboard/directories")
def directories_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/directories.html", _directories_context(request, account))


def _directory_context(
    request: Request, account: Account, public_id: str, typed: dict[str, str] | None = None, problem: str = ""
) -> dict[str, Any]:
    """The directory's page; `typed` (user ID: the Access until typed) and `problem` refill a
    refused Grant form (otherwise the message comes from the redirect's query)."""
    page_no = page_number(request)
    with api_context(request, account) as ctx:
        directory = _directory(ctx, public_id)
        info = service.directory_v4(ctx, directory)
        paths = service.category_paths(ctx)
        categories = sorted(service.categories_v4(ctx), key=lambda c: str(c["path"]))
        names = {
            f"cam_{c.id}": c.name
            for c in repository.campaigns_by_id(
                ctx.session, [int(item["id"][4:]) for item in info["campaigns"]]
            ).values()
            if c.deleted_at is None
        }
        users = [
            service.user_v4(directory, u, ctx.now)
            for u in repository.users_page(
                ctx.session, directory.id, (page_no - 1) * USERS_PAGE, USERS_PAGE + 1
            )
        ]
    # A deleted campaign stays in the directory's rows but is shown nowhere (nor ordered here).
    info["campaigns"] = [item for item in info["campaigns"] if item["id"] in names]
    for item in info["campaigns"]:
        item["name"] = names[item["id"]]
        category = item["category"]
        item["category_path"] = paths.get(int(category[4:]), "") if category else ""
    # As the consumer page shows them: featured first, then in the directory's order.
    info["campaigns"].sort(key=lambda i: not i["featured"])
    campaigns = info["campaigns"]
    for item in campaigns:
        group = [c for c in campaigns if c["featured"] == item["featured"]]
        item["first"], item["last"] = group[0] is item, group[-1] is item
    cards = info["loyalty_cards"]
    for index, card in enumerate(cards):
        card["first"], card["last"] = index == 0, index == len(cards) - 1
    return {
        "title": info["name"],
        "account": account,
        "directory": info,
        "categories": categories,
        "users": users[:USERS_PAGE],
        "page": page_no,
        "has_next": len(users) > USERS_PAGE,
        "public_id": public_id,
        "done": "" if problem else request.query_params.get("done", "")[:200],
        "problem": problem or request.query_params.get("problem", "")[:200],
        "typed": typed or {},
    }


def _category_tree(ctx: ApiContext) -> list[dict[str, Any]]:
    """The categories in tree order (siblings by position), each with what its row offers: move
    up/down among its siblings. The parents a category can move under are on its own Move page
    (_move_context), so this page grows with the number of categories, not its square."""
    rows = service.tree_order(list(repository.categories(ctx.session, ctx.scope(Category.account_id))))
    paths = service.paths_of(rows)
    # Siblings share a parent and an account (a master's page shows its subaccounts' trees too).
    siblings: dict[tuple[int, int | None], list[int]] = {}
    for c in rows:
        siblings.setdefault((c.account_id, c.parent_id), []).append(c.id)
    out = []
    for c in rows:
        group = siblings[(c.account_id, c.parent_id)]
        info = service.category_v4(c, paths)
        info["first"] = group[0] == c.id
        info["last"] = group[-1] == c.id
        out.append(info)
    return out


@router.get("/dashboard/directories/{public_id}")
def directory_page(request: Request, public_id: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/directory.html", _directory_context(request, account, public_id))


def _access(
    request: Request, account: Account, public_id: str, user_id: str, grant: bool, expiry: str
) -> None:
    with api_context(request, account, write=True) as ctx:
        try:
            directory = service.get_directory(ctx, public_id)
            user = service.get_user(ctx, directory, user_id, lock=True)
        except ApiError:
            raise NOT_FOUND from None
        # Labelled as the owner's own change: an audit tells it from the payment provider's call.
        if grant:
            service.grant_access(ctx, directory, user, expiry or None, source="dashboard")
        else:
            service.revoke_access(ctx, directory, user, source="dashboard")


async def _access_answer(
    request: Request, account: Account, public_id: str, user_id: str, *, grant: bool, expiry: str = ""
) -> Response:
    base = f"/dashboard/directories/{public_id}"
    try:
        await run_in_threadpool(_access, request, account, public_id, user_id, grant, expiry)
    except ApiError as err:
        # The page again with what was typed, so a mistyped date is corrected, not retyped.
        context = await run_in_threadpool(
            _directory_context, request, account, public_id, {user_id: expiry}, err.description
        )
        return page(request, "dashboard/directory.html", context, status_code=422)
    done = "Access granted." if grant else "Access revoked."
    return RedirectResponse(f"{base}?{urlencode({'done': done})}#users", status_code=303)


@router.post("/dashboard/directories/{public_id}/users/{user_id}/grant")
async def grant_access(
    request: Request, public_id: str, user_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    expiry = text(form, "expires_at")
    return await _access_answer(request, account, public_id, user_id, grant=True, expiry=expiry)


@router.post("/dashboard/directories/{public_id}/users/{user_id}/revoke")
async def revoke_access(
    request: Request, public_id: str, user_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    back = f"/dashboard/directories/{public_id}#users"
    asked = ask_first(request, form, account, "directory_user.revoke", back=back)
    if asked is not None:
        return asked
    return await _access_answer(request, account, public_id, user_id, grant=False)


# --- create / edit a directory ------------------------------------------------------------------

_DIRECTORY_DEFAULTS: dict[str, Any] = {"access": "public", "campaigns": [], "loyalty_cards": []}


def _choices(request: Request, account: Account) -> dict[str, Any]:
    """The account's campaigns and loyalty cards a directory can hold (checkboxes on the form)."""
    with api_context(request, account) as ctx:
        campaigns = [
            {"id": f"cam_{c.id}", "name": c.name}
            for c in coupons_repo.campaigns(ctx.session, ctx.scope(Campaign.account_id))
        ]
        cards = [
            {"id": str(c.id), "name": c.name}
            for c in loyalty_repo.cards(
                ctx.session, ctx.scope(LoyaltyCard.account_id), only_active=False, descending=False
            )
        ]
    return {"campaign_choices": campaigns, "card_choices": cards}


def _directory_form_context(
    request: Request, account: Account, values: dict[str, Any], errors: list[str], public_id: str = ""
) -> dict[str, Any]:
    return {
        "title": "Edit directory" if public_id else "New directory",
        "account": account,
        "values": values,
        "errors": errors,
        "public_id": public_id,
        **_choices(request, account),
    }


def _directory_values(form: Any) -> dict[str, Any]:
    return {
        "name": text(form, "name", NAME_LIMIT + 1),
        "description": text(form, "description", DESCRIPTION_LIMIT + 1),
        "access": text(form, "access"),
        "payment_url": text(form, "payment_url", PAYMENT_URL_LIMIT + 1),
        "membership_days": text(form, "membership_days"),
        "campaigns": many(form, "campaigns"),
        "loyalty_cards": many(form, "loyalty_cards"),
    }


def _directory_data(values: dict[str, Any]) -> dict[str, Any]:
    if not values["name"]:
        raise FormProblem(["Name: enter a name for the directory."])
    check_text(
        values,
        {
            "name": ("Name", NAME_LIMIT),
            "description": ("Description", DESCRIPTION_LIMIT),
            "payment_url": ("Payment URL", PAYMENT_URL_LIMIT),
        },
    )
    days = parse_int(values["membership_days"], "Default membership length (days)", high=36500)
    return {
        "name": values["name"],
        "description": values["description"],
        "access": values["access"],
        "payment_url": values["payment_url"],
        "membership_days": days,
        # Campaigns keep their category, featured and status: set_campaigns only adds and removes.
        "campaigns": [{"id": c} for c in values["campaigns"]],
        "loyalty_cards": values["loyalty_cards"],
    }


def _save_directory(request: Request, account: Account, public_id: str, data: dict[str, Any]) -> str:
    try:
        with api_context(request, account, write=True) as ctx:
            if public_id:
                directory = _directory(ctx, public_id)
                # Its items read under the lock update_directory takes: one change at a time.
                repository.lock_directory(ctx.session, directory.id)
                data["campaigns"] = _keep_order(ctx, directory, data["campaigns"])
                service.update_directory(ctx, directory, build(DirectoryPatch, data))
            else:
                directory = service.create_directory(ctx, build(DirectoryCreate, data))
            return service.dir_id(directory)
    except ApiError as err:
        raise FormProblem([err.description]) from None


def _keep_order(ctx: ApiContext, directory: Directory, specs: list[dict[str, str]]) -> list[dict[str, str]]:
    """The ticked campaigns with the ones the directory already holds in their current order
    (the checkboxes list every campaign of the account, which says nothing about the order), new
    ones after them."""
    # By stored position only: campaign_items lists featured ones first, an order for showing,
    # which saved as the positions would move them for good.
    rows = [
        row for row, _campaign in repository.campaign_items(ctx.session, directory.id, visible_only=False)
    ]
    current = [f"cam_{row.item_id}" for row in sorted(rows, key=lambda row: (row.position, row.id))]
    rank = {public_id: index for index, public_id in enumerate(current)}
    return sorted(specs, key=lambda spec: rank.get(spec["id"], len(rank)))


async def _directory_post(request: Request, account: Account, public_id: str) -> Response:
    form = await checked_form(request)
    values = _directory_values(form)
    return await saved_or_form_again(
        request,
        "dashboard/directory_form.html",
        save=lambda: _save_directory(request, account, public_id, _directory_data(values)),
        form_again=lambda errors: _directory_form_context(request, account, values, errors, public_id),
        saved_path=lambda saved: f"/dashboard/directories/{saved}",
    )


@router.get("/dashboard/directories-new")
def new_directory_form(request: Request, account: Account = Depends(require_login)) -> Response:
    context = _directory_form_context(request, account, dict(_DIRECTORY_DEFAULTS), [])
    return page(request, "dashboard/directory_form.html", context)


@router.post("/dashboard/directories-new")
async def create_directory(request: Request, account: Account = Depends(require_login)) -> Response:
    return await _directory_post(request, account, "")


@router.get("/dashboard/directories/{public_id}/edit")
def edit_directory_form(
    request: Request, public_id: str, account: Account = Depends(require_login)
) -> Response:
    with api_context(request, account) as ctx:
        directory = _directory(ctx, public_id)
        info = service.directory_v4(ctx, directory)
    values = {
        "name": info["name"],
        "description": directory.description,
        "access": info["access"],
        "payment_url": directory.payment_url,
        "membership_days": info["membership_days"] or "",
        "campaigns": [c["id"] for c in info["campaigns"]],
        "loyalty_cards": [str(c["id"]) for c in info["loyalty_cards"]],
    }
    context = _directory_form_context(request, account, values, [], public_id)
    return page(request, "dashboard/directory_form.html", context)


@router.post("/dashboard/directories/{public_id}/edit")
async def update_directory(
    request: Request, public_id: str, account: Account = Depends(require_login)
) -> Response:
    return await _directory_post(request, account, public_id)


# --- a campaign's settings in one directory -----------------------------------------------------


def _set_item(request: Request, account: Account, public_id: str, data: dict[str, Any]) -> None:
    with api_context(request, account, write=True) as ctx:
        try:
            directory = service.get_directory(ctx, public_id)
            campaign = service.get_campaign(ctx, str(data["campaign"]))
        except ApiError:
            raise NOT_FOUND from None
        data["directory"] = service.dir_id(directory)
        # The form always sends a category ("" for "(none)"): only a changed one is a change, so
        # saving the Featured box or the status leaves the item's and the campaign's own alone.
        row = repository.item(ctx.session, directory.id, "campaign", campaign.id)
        if row is not None and data["category"] == service.cat_id(row.category_id):
            data["category"] = None
        service.update_directory_campaign(ctx, build(DirectoryCampaignUpdate, data))


@router.post("/dashboard/directories/{public_id}/campaigns/{campaign_id}")
async def campaign_settings(
    request: Request, public_id: str, campaign_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    base = f"/dashboard/directories/{public_id}"
    data = {
        "campaign": campaign_id,
        "category": text(form, "category"),
        "featured": text(form, "featured") == "1",
        "status": text(form, "status"),
    }
    try:
        await run_in_threadpool(_set_item, request, account, public_id, data)
    except (ApiError, FormProblem) as err:
        message = err.description if isinstance(err, ApiError) else "; ".join(err.messages)
        return RedirectResponse(f"{base}?{urlencode({'problem': message})}#campaigns", status_code=303)
    return RedirectResponse(f"{base}?{urlencode({'done': 'Campaign saved.'})}#campaigns", status_code=303)


# --- the category tree --------------------------------------------------------------------------


# What a change does to the category it is about, and the message it leaves above the tree.
CategoryChange = Callable[[ApiContext, Category], str]


def _change_category(request: Request, account: Account, category_id: str, change: CategoryChange) -> str:
    with api_context(request, account, write=True) as ctx:
        try:
            category = service.get_category(ctx, category_id)
        except ApiError:
            raise CATEGORY_NOT_FOUND from None
        return change(ctx, category)


async def _category_answer(
    request: Request, account: Account, category_id: str, change: CategoryChange
) -> Response:
    try:
        done = await run_in_threadpool(_change_category, request, account, category_id, change)
    except (ApiError, FormProblem) as err:
        return _to_tree(category_id, problem=_message(err))
    return _to_tree(category_id, done=done)


def _message(err: ApiError | FormProblem) -> str:
    return err.description if isinstance(err, ApiError) else "; ".join(err.messages)


def _create_category(request: Request, account: Account, data: dict[str, str]) -> str:
    if not data["name"]:
        raise FormProblem([ENTER_A_NAME])
    check_text(data, {"name": ("Name", NAME_LIMIT)})
    with api_context(request, account, write=True) as ctx:
        made = service.create_category(ctx, build(CategoryCreate, data))
        return f"Category {made.name} created."


@router.post("/dashboard/categories")
async def create_category(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    data = {"name": text(form, "name", NAME_LIMIT + 1), "parent": text(form, "parent")}
    try:
        done = await run_in_threadpool(_create_category, request, account, data)
    except (ApiError, FormProblem) as err:
        # The tree again with the form as it was sent (422), not a redirect that empties it.
        context = await run_in_threadpool(_directories_context, request, account, data, _message(err))
        return page(request, "dashboard/directories.html", context, status_code=422)
    return _to_tree("", done=done)


@router.post("/dashboard/categories/{category_id}/rename")
async def rename_category(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)

    def rename(ctx: ApiContext, category: Category) -> str:
        name = text(form, "name", NAME_LIMIT + 1)
        if not name:
            raise FormProblem([f"Rename: {ENTER_A_NAME}"])
        check_text({"name": name}, {"name": ("Rename", NAME_LIMIT)})
        service.update_category(ctx, category, build(CategoryPatch, {"name": name}))
        return "Category renamed."

    return await _category_answer(request, account, category_id, rename)


@router.post("/dashboard/categories/{category_id}/move")
async def move_category(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    # "" (top level) is a value here: the form always sends the field.
    if "parent" not in form:
        return _to_tree(category_id, problem="Move: choose where the category goes.")

    def move(ctx: ApiContext, category: Category) -> str:
        service.update_category(ctx, category, build(CategoryPatch, {"parent": text(form, "parent")}))
        return f"Category {category.name} moved."

    return await _category_answer(request, account, category_id, move)


def _move_context(request: Request, account: Account, category_id: str) -> dict[str, Any]:
    """One category's Move page: the parents it could move under, by path (its own account's, not
    itself or anything below it, and only those under which it and its subcategories stay within
    three levels; the service checks again)."""
    with api_context(request, account) as ctx:
        try:
            category = service.get_category(ctx, category_id)
        except ApiError:
            raise CATEGORY_NOT_FOUND from None
        rows = service.tree_order(
            list(repository.categories(ctx.session, Category.account_id == category.account_id))
        )
    paths = service.paths_of(rows)
    # Tree order puts every category after its parent: one walk collects the subtree.
    below = {category.id}
    deepest = category.level
    for c in rows:
        if c.parent_id in below:
            below.add(c.id)
            deepest = max(deepest, c.level)
    # Levels the moved category and its subcategories take up: under a parent of level L they
    # end at L + height, which must not pass the last level.
    height = deepest - category.level + 1
    parents = [
        {"id": service.cat_id(c.id), "path": paths[c.id]}
        for c in sorted(rows, key=lambda c: paths[c.id])
        if c.level + height <= service.MAX_CATEGORY_LEVEL and c.id not in below
    ]
    return {
        "title": f"Move {category.name}",
        "account": account,
        "category": service.category_v4(category, paths),
        "parents": parents,
    }


@router.get("/dashboard/categories/{category_id}/move")
def move_category_form(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    return page(request, "dashboard/category_move.html", _move_context(request, account, category_id))


def _step(step: int) -> CategoryChange:
    """Up (-1) or Down (1) among the category's siblings."""
    up = step < 0

    def change(ctx: ApiContext, category: Category) -> str:
        if not service.move_category(ctx, category, step):
            return f"Category {category.name} is already {'first' if up else 'last'}."
        return f"Category {category.name} moved {'up' if up else 'down'}."

    return change


@router.post("/dashboard/categories/{category_id}/up")
async def move_category_up(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    await checked_form(request)
    return await _category_answer(request, account, category_id, _step(-1))


@router.post("/dashboard/categories/{category_id}/down")
async def move_category_down(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    await checked_form(request)
    return await _category_answer(request, account, category_id, _step(1))


def _delete_category(ctx: ApiContext, category: Category) -> str:
    service.delete_category(ctx, category)
    return "Category deleted."


@router.post("/dashboard/categories/{category_id}/delete")
async def delete_category(
    request: Request, category_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    asked = ask_first(request, form, account, "category.delete", back="/dashboard/directories#categories")
    if asked is not None:
        return asked
    return await _category_answer(request, account, category_id, _delete_category)


def _to_tree(category_id: str, **message: str) -> Response:
    """Back to the tree; `at` puts the message next to the category it is about too."""
    params = {**message, **({"at": category_id} if category_id else {})}
    anchor = f"c-{category_id}" if category_id and "problem" in message else "categories"
    return RedirectResponse(f"/dashboard/directories?{urlencode(params)}#{anchor}", status_code=303)


# --- the order of campaigns and loyalty cards in a directory ------------------------------------


def _move(request: Request, account: Account, public_id: str, kind: str, raw: str, step: int) -> bool:
    with api_context(request, account, write=True) as ctx:
        try:
            directory = service.get_directory(ctx, public_id)
            if kind == "campaign":
                item_id = service.get_campaign(ctx, raw).id
            else:
                item_id = ids.parse_public_id(raw, "", "card", service.loyalty_card_not_found())
            return service.move_item(ctx, directory, kind, item_id, step)
        except ApiError:
            raise NOT_FOUND from None


async def _move_answer(
    request: Request, account: Account, public_id: str, kind: str, raw: str, step: int
) -> Response:
    """Move a campaign or loyalty card one place up (step -1) or down (1), back to its list."""
    await checked_form(request)
    moved = await run_in_threadpool(_move, request, account, public_id, kind, raw, step)
    up = step < 0
    done = f"Moved {'up' if up else 'down'}." if moved else f"Already {'first' if up else 'last'}."
    anchor = "campaigns" if kind == "campaign" else "cards"
    return RedirectResponse(
        f"/dashboard/directories/{public_id}?{urlencode({'done': done})}#{anchor}", status_code=303
    )


def _mover(kind: str, step: int) -> Callable[..., Awaitable[Response]]:
    async def move(
        request: Request, public_id: str, item_id: str, account: Account = Depends(require_login)
    ) -> Response:
        return await _move_answer(request, account, public_id, kind, item_id, step)

    return move


# Up and Down of a directory's campaigns and loyalty cards: a route each (any other section or
# action is routing's 404).
for _section, _kind in (("campaigns", "campaign"), ("cards", "loyalty_card")):
    for _direction, _step_by in (("up", -1), ("down", 1)):
        router.add_api_route(
            f"/dashboard/directories/{{public_id}}/{_section}/{{item_id}}/{_direction}",
            _mover(_kind, _step_by),
            methods=["POST"],
            name=f"move_{_kind}_{_direction}",
        )


# --- delete a directory (asks first) ------------------------------------------------------------


def _directory_name(request: Request, account: Account, public_id: str) -> str:
    with api_context(request, account) as ctx:
        return _directory(ctx, public_id).name


def _delete(request: Request, account: Account, public_id: str) -> str:
    with api_context(request, account, write=True) as ctx:
        directory = _directory(ctx, public_id)
        service.delete_directory(ctx, directory)
        return directory.name


@router.post("/dashboard/directories/{public_id}/delete")
async def delete_directory(
    request: Request, public_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    # Read first: the question names the directory, and a missing one is a 404 before any question.
    name = await run_in_threadpool(_directory_name, request, account, public_id)
    asked = ask_first(
        request, form, account, "directory.delete", back=f"/dashboard/directories/{public_id}", what=name
    )
    if asked is not None:
        return asked
    name = await run_in_threadpool(_delete, request, account, public_id)
    done = f"Directory {name} deleted."
    return RedirectResponse(f"/dashboard/directories?{urlencode({'done': done})}", status_code=303)
