"""Directory and category calls: the v3 action calls and the v4 REST calls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.directories import repository, service
from opencoupon.directories.schemas import (
    AccessGrant,
    CategoryCreate,
    CategoryPatch,
    DirectoryCampaignCreate,
    DirectoryCampaignUpdate,
    DirectoryCreate,
    DirectoryPatch,
    DirectoryRef,
    DirectoryUserBlock,
    DirectoryUserCreate,
    DirectoryUsersList,
    Page,
    PaymentStatusUpdate,
)
from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.params import NoParams
from opencoupon.models import Directory, DirectoryUser

router = APIRouter(tags=["Directory"])
categories_router = APIRouter(tags=["Category"])
routers = [router, categories_router]


# ---- v3 ----------------------------------------------------------------------------------------


@v3_endpoint(router, ["/v3/directory/list"], NoParams, summary="List directories")
def list_directories(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Every directory of the account (and, for a master, of its subaccounts)."""
    found = list(repository.directories(ctx.session, ctx.scope(Directory.account_id)))
    return {"amount_of_directories": str(len(found)), "directories": service.directories_v3(ctx, found)}


@v3_endpoint(router, ["/v3/directory/info"], DirectoryRef, summary="Directory info")
def directory_info(ctx: ApiContext, req: DirectoryRef) -> dict[str, Any]:
    """One directory: access mode, payment URL, counts, and the IDs of what it holds."""
    directory = service.get_directory(ctx, req.directory)
    data = service.directories_v3(ctx, [directory])[0]
    rows = repository.items(ctx.session, directory.id, live_only=True)
    data["campaigns"] = [f"cam_{r.item_id}" for r in rows if r.kind == "campaign"]
    data["loyalty_cards"] = [str(r.item_id) for r in rows if r.kind == "loyalty_card"]
    return {"directory": data}


@v3_endpoint(router, ["/v3/directory/campaigns"], DirectoryRef, summary="Campaigns of a directory")
def directory_campaigns(ctx: ApiContext, req: DirectoryRef) -> dict[str, Any]:
    """The directory's campaigns with their category, featured flag and status, featured first."""
    directory = service.get_directory(ctx, req.directory)
    campaigns = service.directory_campaigns_v3(ctx, directory)
    return {
        "directory": service.dir_id(directory),
        "amount_of_campaigns": str(len(campaigns)),
        "campaigns": campaigns,
    }


@v3_endpoint(router, ["/v3/directoryusers/list"], DirectoryUsersList, summary="Registered users")
def directory_users(ctx: ApiContext, req: DirectoryUsersList) -> dict[str, Any]:
    """Registrations, newest first, 100 a page (`page` from 1)."""
    directory = service.get_directory(ctx, req.directory)
    page = service.page_number(req.page)
    total = repository.count_users(ctx.session, directory.id)
    per = service.USERS_PER_PAGE
    users = repository.users_page(ctx.session, directory.id, (page - 1) * per, per)
    return {
        "directory": service.dir_id(directory),
        "page": str(page),
        "amount_of_pages": str(max(1, -(-total // per))),
        "amount_of_users": str(total),
        "amount_of_results": str(len(users)),  # on this page, as every other v3 list says it
        "users": [service.user_v3(u) for u in users],
    }


@v3_endpoint(router, ["/v3/directoryusers/update"], PaymentStatusUpdate, summary="Update payment status")
def update_payment_status(ctx: ApiContext, req: PaymentStatusUpdate) -> dict[str, Any]:
    """Your payment page reports back: `status` pending / completed / cancelled, optional
    `expiry_date` "yyyy-mm-dd hh:mm" in UTC (none: no expiry)."""
    directory = service.get_directory(ctx, req.directory)
    user = service.get_user(ctx, directory, req.user, lock=True)
    expires_at = service.parse_payment_expiry(req.expiry_date)
    service.set_payment(ctx.session, directory, user, req.status, expires_at, ctx.now, source="api_v3")
    return {
        "directory": service.dir_id(directory),
        "user": service.reg_id(user),
        "payment_status": req.status,
    }


@v3_endpoint(router, ["/v3/category/list"], NoParams, summary="List categories (tree)")
def category_list(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Every category as a tree: level 1 with its `subcategories`, down to level 3."""
    tree = service.category_tree_v3(ctx)
    return {"amount_of_categories": str(len(tree)), "categories": tree}


@v3_endpoint(router, ["/v3/category/main/list"], NoParams, summary="List 3rd-level categories")
def category_main_list(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Only the third-level categories, each with its full path."""
    found = service.third_level_v3(ctx)
    return {"amount_of_categories": str(len(found)), "categories": found}


@v3_endpoint(
    router, ["/v3/directory/campaign/create"], DirectoryCampaignCreate, summary="Campaign from a template"
)
def directory_campaign_create(ctx: ApiContext, req: DirectoryCampaignCreate) -> dict[str, Any]:
    """A new campaign copied from the `template` campaign, added to the directory with a `name`
    and an optional `category`."""
    directory, campaign, row, template = service.create_from_template(ctx, req)
    names = repository.categories_by_id(ctx.session, [row.category_id] if row.category_id else [])
    data = service.campaign_item_v3(ctx, directory, row, campaign, names)
    data["template"] = f"cam_{template.id}"
    return {"campaign": data}


@v3_endpoint(
    router, ["/v3/directory/campaign/update"], DirectoryCampaignUpdate, summary="Update a directory campaign"
)
def directory_campaign_update(ctx: ApiContext, req: DirectoryCampaignUpdate) -> dict[str, Any]:
    """Status (active/inactive in the directory), description, category and featured flag."""
    campaign, holders = service.update_directory_campaign(ctx, req)
    names = repository.categories_by_id(ctx.session, [r.category_id for _, r in holders if r.category_id])
    items = [service.campaign_item_v3(ctx, d, r, campaign, names) for d, r in holders]
    return {"campaign": items[0], "directories": [item["directory"] for item in items]}


# ---- v4: directories -----------------------------------------------------------------------------


@v4_endpoint(router, "POST", "/v4/directory", DirectoryCreate, summary="Create a directory", status_code=201)
def create_directory(ctx: ApiContext, req: DirectoryCreate) -> dict[str, Any]:
    """`name`, `access` public/login/payment, `payment_url` (required for payment), `description`,
    `membership_days`, `campaigns` (IDs or objects with category/featured/status), `loyalty_cards`."""
    return service.directory_v4(ctx, service.create_directory(ctx, req))


@v4_endpoint(router, "GET", "/v4/directory", NoParams, summary="List directories")
def list_directories_v4(ctx: ApiContext, req: NoParams) -> list[Any]:
    """A bare array of directories."""
    found = repository.directories(ctx.session, ctx.scope(Directory.account_id))
    return [service.directory_v4(ctx, d) for d in found]


@v4_endpoint(router, "GET", "/v4/directory/{id}", NoParams, summary="Get a directory")
def get_directory_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    return service.directory_v4(ctx, service.get_directory(ctx, ctx.path_params["id"], "id"))


@v4_endpoint(router, "PATCH", "/v4/directory/{id}", DirectoryPatch, summary="Update a directory")
def update_directory_v4(ctx: ApiContext, req: DirectoryPatch) -> dict[str, Any]:
    """Any create field; `campaigns` / `loyalty_cards` replace what the directory holds."""
    directory = service.get_directory(ctx, ctx.path_params["id"], "id")
    return service.directory_v4(ctx, service.update_directory(ctx, directory, req))


@v4_endpoint(router, "DELETE", "/v4/directory/{id}", NoParams, summary="Delete a directory")
def delete_directory_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    directory = service.get_directory(ctx, ctx.path_params["id"], "id")
    service.delete_directory(ctx, directory)
    return {"id": service.dir_id(directory), "deleted": True}


# ---- v4: directory users -------------------------------------------------------------------------


@v4_endpoint(router, "GET", "/v4/directory/{id}/users", Page, summary="List directory users")
def list_users_v4(ctx: ApiContext, req: Page) -> list[Any]:
    """A bare array, newest first, 100 a page (`?page=`)."""
    directory = service.get_directory(ctx, ctx.path_params["id"], "id")
    page = service.page_number(req.page)
    per = service.USERS_PER_PAGE
    users = repository.users_page(ctx.session, directory.id, (page - 1) * per, per)
    return [service.user_v4(directory, u, ctx.now) for u in users]


@v4_endpoint(
    router, "POST", "/v4/directory/{id}/users", DirectoryUserCreate, summary="Create a user", status_code=201
)
def create_user_v4(ctx: ApiContext, req: DirectoryUserCreate) -> dict[str, Any]:
    """`email` (required), `password` (random when omitted), names, phone, `birth_date`
    yyyy-MM-dd, address, zip, city, `custom_1`…`custom_3`. The answer's `id` is the reg_ ID."""
    directory = service.get_directory(ctx, ctx.path_params["id"], "id")
    user = service.create_user_v4(ctx, directory, req)
    return service.user_v4(directory, user, ctx.now)


def _user(ctx: ApiContext, *, lock: bool = False) -> tuple[Directory, DirectoryUser]:
    directory = service.get_directory(ctx, ctx.path_params["id"], "id")
    return directory, service.get_user(ctx, directory, ctx.path_params["userId"], "userId", lock=lock)


@v4_endpoint(router, "GET", "/v4/directory/{id}/users/{userId}", NoParams, summary="Get a user")
def get_user_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    directory, user = _user(ctx)
    return service.user_v4(directory, user, ctx.now)


@v4_endpoint(
    router, "POST", "/v4/directory/{id}/users/{userId}", DirectoryUserBlock, summary="Block or unblock a user"
)
def block_user_v4(ctx: ApiContext, req: DirectoryUserBlock) -> dict[str, Any]:
    """Only `block` true/false, as the vendor's v4 call."""
    directory, user = _user(ctx, lock=True)
    user.blocked = req.block
    user.updated_at = ctx.now
    ctx.session.flush()
    return service.user_v4(directory, user, ctx.now)


@v4_endpoint(router, "POST", "/v4/directory/{id}/users/{userId}/sso", NoParams, summary="User single sign-on")
def sso_user_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """A one-time sign-in URL for the user (valid for a minute, usable once)."""
    directory, user = _user(ctx)
    return service.issue_sso(ctx, directory, user)


@v4_endpoint(
    router, "POST", "/v4/directory/{id}/users/{userId}/access", AccessGrant, summary="Give paid access"
)
def grant_access_v4(ctx: ApiContext, req: AccessGrant) -> dict[str, Any]:
    """Payment status completed until `expires_at` (yyyy-MM-dd HH:mm:ss UTC); without it, for the
    directory's default membership length from now, or without end when it has none. A repeated
    call with the same end changes nothing; without `expires_at` and with a membership length
    each call is a renewal (a new end, an event): retry it with an `Idempotency-Key` header."""
    directory, user = _user(ctx, lock=True)
    service.grant_access(ctx, directory, user, req.expires_at)
    return service.user_v4(directory, user, ctx.now)


@v4_endpoint(
    router, "DELETE", "/v4/directory/{id}/users/{userId}/access", NoParams, summary="Revoke paid access"
)
def revoke_access_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Payment status cancelled: the directory's coupons lock for this user."""
    directory, user = _user(ctx, lock=True)
    service.revoke_access(ctx, directory, user)
    return service.user_v4(directory, user, ctx.now)


# ---- v4: categories ------------------------------------------------------------------------------


@v4_endpoint(
    categories_router, "POST", "/v4/categories", CategoryCreate, summary="Create a category", status_code=201
)
def create_category_v4(ctx: ApiContext, req: CategoryCreate) -> dict[str, Any]:
    """`name`, optional `parent` (cat_ ID; three levels at most) and `position`."""
    category = service.create_category(ctx, req)
    return service.category_v4(category, service.category_paths(ctx))


@v4_endpoint(categories_router, "GET", "/v4/categories", NoParams, summary="List categories")
def list_categories_v4(ctx: ApiContext, req: NoParams) -> list[Any]:
    """A bare array, level 1 first, each with its `parent`, `level` and `path`."""
    return service.categories_v4(ctx)


@v4_endpoint(categories_router, "GET", "/v4/categories/{id}", NoParams, summary="Get a category")
def get_category_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    category = service.get_category(ctx, ctx.path_params["id"], "id")
    return service.category_v4(category, service.category_paths(ctx))


@v4_endpoint(categories_router, "PATCH", "/v4/categories/{id}", CategoryPatch, summary="Update a category")
def update_category_v4(ctx: ApiContext, req: CategoryPatch) -> dict[str, Any]:
    """`name`, `position`, or `parent` (a cat_ ID, or "" for the top level) to move it with its
    subcategories; the result may not exceed three levels."""
    category = service.get_category(ctx, ctx.path_params["id"], "id")
    service.update_category(ctx, category, req)
    return service.category_v4(category, service.category_paths(ctx))


@v4_endpoint(categories_router, "DELETE", "/v4/categories/{id}", NoParams, summary="Delete a category")
def delete_category_v4(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Deletes the category and its subcategories; campaigns and directory items lose them."""
    category = service.get_category(ctx, ctx.path_params["id"], "id")
    removed = service.delete_category(ctx, category)
    return {"id": service.cat_id(category.id), "deleted": [service.cat_id(i) for i in removed]}
