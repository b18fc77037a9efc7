"""Dashboard pages for directories: the directories, their campaigns (category, featured, status)
and loyalty cards, the category tree, registered users with payment status and expiry, and
granting or revoking access by hand (directories.service.grant_access / revoke_access)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.dashboard.common import api_context, page, text
from opencoupon.dashboard.security import PageError, require_login, verify_csrf
from opencoupon.directories import repository, service
from opencoupon.errors import ApiError
from opencoupon.models import Account, Directory

router = APIRouter(include_in_schema=False)

USERS_PAGE = 50
NOT_FOUND = PageError(404, "Not found", "There is no such directory or user in your account.")


@router.get("/dashboard/directories")
def directories_page(request: Request, account: Account = Depends(require_login)) -> Response:
    with api_context(request, account) as ctx:
        rows = repository.directories(ctx.session, ctx.scope(Directory.account_id))
        found = [service.directory_v4(ctx, d) for d in rows]
        categories = service.categories_v4(ctx)
    context = {"title": "Directories", "account": account, "directories": found, "categories": categories}
    return page(request, "dashboard/directories.html", context)


def _directory_context(request: Request, account: Account, public_id: str) -> dict[str, Any]:
    try:
        page_no = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page_no = 1
    with api_context(request, account) as ctx:
        try:
            directory = service.get_directory(ctx, public_id)
        except ApiError:
            raise NOT_FOUND from None
        info = service.directory_v4(ctx, directory)
        paths = service.category_paths(ctx)
        names = {
            f"cam_{c.id}": c.name
            for c in repository.campaigns_by_id(
                ctx.session, [int(item["id"][4:]) for item in info["campaigns"]]
            ).values()
        }
        users = [
            service.user_v4(directory, u, ctx.now)
            for u in repository.users_page(
                ctx.session, directory.id, (page_no - 1) * USERS_PAGE, USERS_PAGE + 1
            )
        ]
    for item in info["campaigns"]:
        item["name"] = names.get(item["id"], item["id"])
        category = item["category"]
        item["category_path"] = paths.get(int(category[4:]), "") if category else ""
    info["campaigns"].sort(key=lambda i: (not i["featured"], i["name"]))
    return {
        "title": info["name"],
        "account": account,
        "directory": info,
        "users": users[:USERS_PAGE],
        "page": page_no,
        "has_next": len(users) > USERS_PAGE,
        "public_id": public_id,
        "done": request.query_params.get("done", "")[:200],
        "problem": request.query_params.get("problem", "")[:200],
    }


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
        if grant:
            service.grant_access(ctx, directory, user, expiry or None)
        else:
            service.revoke_access(ctx, directory, user)


@router.post("/dashboard/directories/{public_id}/users/{user_id}/{action}")
async def user_access(
    request: Request, public_id: str, user_id: str, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await request.form()
    verify_csrf(request, form)
    if action not in ("grant", "revoke"):
        raise NOT_FOUND
    base = f"/dashboard/directories/{public_id}"
    try:
        await run_in_threadpool(
            _access, request, account, public_id, user_id, action == "grant", text(form, "expires_at", 40)
        )
    except ApiError as err:
        return RedirectResponse(f"{base}?{urlencode({'problem': err.description})}#users", status_code=303)
    done = "Access granted." if action == "grant" else "Access revoked."
    return RedirectResponse(f"{base}?{urlencode({'done': done})}#users", status_code=303)
