"""Directory rules: management, categories, registered users, paid access and template copies."""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencoupon.accounts import service as accounts
from opencoupon.directories import repository
from opencoupon.directories.schemas import (
    CampaignItemSpec,
    CategoryCreate,
    CategoryPatch,
    DirectoryCampaignCreate,
    DirectoryCampaignUpdate,
    DirectoryCreate,
    DirectoryPatch,
    DirectoryUserCreate,
)
from opencoupon.errors import ApiError, bad_value, missing
from opencoupon.events import service as events
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import hash_password, token
from opencoupon.kit.dates import fmt, fmt_date, parse_birthday, parse_datetime
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, Campaign, Category, Directory, DirectoryItem, DirectoryUser

MAX_CATEGORY_LEVEL = 3
USERS_PER_PAGE = 100
MAX_MEMBERSHIP_DAYS = 36600
CODE_LENGTH = 6
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The vendor's page: "yyyy-mm-dd hh:mm"; seconds are accepted too (the v4 format).
PAYMENT_EXPIRY_FORMATS = ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
ACCESS_EXPIRY_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]
SSO_PURPOSE = "directory_sso"
# Columns of a template campaign that a copy must not take over.
_NOT_COPIED = {
    "id",
    "account_id",
    "code",
    "name",
    "kind",
    "category_id",
    "created_at",
    "updated_at",
    "deleted_at",
    # A usage counter (the `…_count` columns are left out by their name too): a copy starts at 0.
    "custom_codes_issued",
    "custom_codes_position",
}

# The source of a member's coupon sessions (device ID `reg_<user id>`).
MEMBER_SOURCE = "directory"


def directory_not_found() -> ApiError:
    return ApiError(507, "Directory ID not found.")


def user_not_found() -> ApiError:
    return ApiError(511, "Directory user ID not found.")


def category_not_found() -> ApiError:
    # The vendor has no code for categories; 516 is the next free code in the not-found family.
    return ApiError(516, "Category ID not found.")


def campaign_not_found() -> ApiError:
    return ApiError(502, "Campaign ID not found.")


def loyalty_card_not_found() -> ApiError:
    return ApiError(508, "Loyalty card ID not found.")


def dir_id(directory: Directory) -> str:
    return ids.public_id("dir_", directory.id)


def reg_id(user: DirectoryUser) -> str:
    return ids.public_id("reg_", user.id)


def cat_id(category_id: int | None) -> str:
    return ids.public_id("cat_", category_id) if category_id else ""


def directory_path(directory: Directory) -> str:
    return f"/d/{directory.code}"


# ---- lookups ---------------------------------------------------------------------------------

Owned = TypeVar("Owned", Directory, Category, Campaign)


def _get_owned(
    ctx: ApiContext,
    raw: str,
    param: str,
    prefix: str,
    not_found: Callable[[], ApiError],
    find: Callable[[Session, ColumnElement[bool], int], Owned | None],
    account_column: Any,
) -> Owned:
    """A row of the caller (or of its subaccounts) by its public ID; any other is not found."""
    number = ids.parse_public_id(raw, prefix, param, not_found())
    found = find(ctx.session, ctx.scope(account_column), number)
    if found is None:
        raise not_found()
    return found


def get_directory(ctx: ApiContext, raw: str, param: str = "directory") -> Directory:
    return _get_owned(
        ctx, raw, param, "dir_", directory_not_found, repository.directory, Directory.account_id
    )


def get_user(
    ctx: ApiContext, directory: Directory, raw: str, param: str = "user", *, lock: bool = False
) -> DirectoryUser:
    number = ids.parse_public_id(raw, "reg_", param, user_not_found())
    found = repository.user(ctx.session, directory.id, number, lock=lock)
    if found is None:
        raise user_not_found()
    return found


def get_category(ctx: ApiContext, raw: str, param: str = "category") -> Category:
    return _get_owned(ctx, raw, param, "cat_", category_not_found, repository.category, Category.account_id)


def get_campaign(ctx: ApiContext, raw: str, param: str = "campaign") -> Campaign:
    return _get_owned(ctx, raw, param, "cam_", campaign_not_found, repository.campaign, Campaign.account_id)


# ---- directories -----------------------------------------------------------------------------


def _payment_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw == "":
        return ""
    refused = bad_value("payment_url", "Use an absolute http(s) URL.")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:  # that, or a broken IPv6 host (`https://[::1/`)
        raise refused from None
    if parts.scheme not in ("http", "https") or len(raw) > 2000:
        raise refused
    host = parts.hostname or ""
    # Every registration of the directory is sent there: a host with a space or a control
    # character in it (`https://a b.com/`) can never be reached.
    if not host or any(ch.isspace() or not ch.isprintable() for ch in host):
        raise refused
    return raw


def _membership_days(value: int | None) -> int | None:
    if value is None:
        return None
    if value < 0 or value > MAX_MEMBERSHIP_DAYS:
        raise bad_value("membership_days", f"Use a number of days from 1 to {MAX_MEMBERSHIP_DAYS} (0: none).")
    return value or None


def new_code(session: Session, taken: Any) -> str:
    for _ in range(20):
        code = ids.random_code(CODE_LENGTH)
        if not taken(session, code):
            return code
    raise ApiError(309, "No free code could be drawn.")


def _required_name(raw: str | None) -> str:
    """A name must be given; it is cut to what the column holds."""
    if not raw:
        raise missing("name")
    return raw[:200]


def create_directory(ctx: ApiContext, req: DirectoryCreate) -> Directory:
    name = _required_name(req.name)
    payment_url = _payment_url(req.payment_url) or ""
    if req.access == "payment" and not payment_url:
        raise missing("payment_url")
    now = ctx.now
    directory = Directory(
        account_id=ctx.account.id,
        code=new_code(ctx.session, repository.directory_code_taken),
        name=name,
        description=req.description or "",
        access=req.access,
        payment_url=payment_url,
        membership_days=_membership_days(req.membership_days),
        created_at=now,
        updated_at=now,
    )
    categories = _assigned_categories(ctx, ctx.account.id, req.campaigns or [])
    ctx.session.add(directory)
    ctx.session.flush()
    if req.campaigns is not None:
        set_campaigns(ctx, directory, req.campaigns, categories)
    if req.loyalty_cards is not None:
        set_loyalty_cards(ctx, directory, req.loyalty_cards)
    return directory


def update_directory(ctx: ApiContext, directory: Directory, req: DirectoryPatch) -> Directory:
    # The categories it files items under first (the lock order of every category assignment).
    categories = _assigned_categories(ctx, directory.account_id, req.campaigns or [])
    # One change of a directory at a time, each starting from what the one before it left.
    repository.lock_directory(ctx.session, directory.id)
    ctx.session.refresh(directory)
    if directory.deleted_at is not None:
        raise directory_not_found()
    if req.name is not None:
        directory.name = _required_name(req.name)
    if req.description is not None:
        directory.description = req.description
    payment_url = _payment_url(req.payment_url)
    if payment_url is not None:
        directory.payment_url = payment_url
    if req.access is not None:
        directory.access = req.access
    if directory.access == "payment" and not directory.payment_url:
        raise missing("payment_url")
    if "membership_days" in req.model_fields_set:
        directory.membership_days = _membership_days(req.membership_days)
    if req.campaigns is not None:
        set_campaigns(ctx, directory, req.campaigns, categories)
    if req.loyalty_cards is not None:
        set_loyalty_cards(ctx, directory, req.loyalty_cards)
    directory.updated_at = ctx.now
    ctx.session.flush()
    return directory


def delete_directory(ctx: ApiContext, directory: Directory) -> None:
    repository.lock_directory(ctx.session, directory.id)
    # Soft delete: payment providers keep dir_/reg_ IDs, and a reused ID would grant access.
    directory.deleted_at = ctx.now
    directory.updated_at = ctx.now
    ctx.session.flush()


def may_hold(session: Session, directory: Directory, account_id: int) -> bool:
    """Whether `directory` may show a campaign, loyalty card or category of `account_id`: its
    owner's own, and for a master's directory its subaccounts' too. A subaccount's directory never
    shows its master's or a sibling's, even when the master (who reaches them all) puts them there:
    its page and its API answers would hand them to the subaccount."""
    return accounts.may_hold(session, directory.account_id, account_id)


def get_held_category(ctx: ApiContext, owner_id: int, raw: str, param: str = "category") -> Category:
    """A category the caller may reach that an object of `owner_id` (a directory or a campaign)
    may hold (accounts.may_hold); any other answers 516 as a missing one."""
    category = get_category(ctx, raw, param)
    if not accounts.may_hold(ctx.session, owner_id, category.account_id):
        raise category_not_found()
    return category


def lock_assigned_categories(
    ctx: ApiContext, categories: Iterable[Category], *, also: Iterable[int] = ()
) -> dict[int, Category]:
    """Wait for the changes of these categories' trees (repository.lock_categories, the lock
    delete_category takes), then each category as they left it, by ID: one deleted meanwhile is
    not found (516). Every write of a category onto a campaign or a directory item takes it, and
    before any directory lock (one order everywhere): a delete committed between reading the
    category and writing it broke the item's foreign key (a 500) or left the campaign holding
    the deleted ID (PostgreSQL). `also`: more accounts whose rows to lock the same way. Accounts
    in ID order: two callers never wait for each other."""
    wanted = {c.id: c.account_id for c in categories}
    for account_id in sorted({*wanted.values(), *also}):
        repository.lock_categories(ctx.session, account_id)
    locked: dict[int, Category] = {}
    for category_id in wanted:
        now = repository.category_now(ctx.session, category_id)
        if now is None:
            raise category_not_found()
        locked[category_id] = now
    return locked


def _assigned_categories(
    ctx: ApiContext, owner_id: int, specs: list[CampaignItemSpec]
) -> dict[str, Category]:
    """The categories `specs` file campaigns under (each one `owner_id` may hold, else 516), by
    their public ID, locked (lock_assigned_categories)."""
    named = {
        raw: get_held_category(ctx, owner_id, raw) for raw in dict.fromkeys(s.category for s in specs) if raw
    }
    locked = lock_assigned_categories(ctx, named.values())
    return {raw: locked[category.id] for raw, category in named.items()}


@contextmanager
def category_gone_is_not_found(session: Session) -> Iterator[None]:
    """The second line of defence behind lock_assigned_categories: an item written with a
    category deleted meanwhile breaks its foreign key (PostgreSQL names it), which is a missing
    category (516), never a 500. SQLite runs one writer at a time: no delete comes between."""
    try:
        yield
        session.flush()
    except IntegrityError as exc:
        if "category_id" not in str(exc.orig):
            raise
        raise category_not_found() from None


def _held_campaign(ctx: ApiContext, directory: Directory, raw: str, param: str) -> Campaign:
    campaign = get_campaign(ctx, raw, param)
    if not may_hold(ctx.session, directory, campaign.account_id):
        raise campaign_not_found()
    return campaign


def set_campaigns(
    ctx: ApiContext, directory: Directory, specs: list[CampaignItemSpec], categories: dict[str, Category]
) -> None:
    """Make the directory hold exactly these campaigns, in this order; settings of campaigns it
    already held are kept unless the spec changes them. `categories`: the specs' categories by
    public ID, locked before the directory (_assigned_categories). The directory's row is locked
    first: its items change one PATCH after the other."""
    repository.lock_directory(ctx.session, directory.id)
    existing = {row.item_id: row for row in repository.items(ctx.session, directory.id, "campaign")}
    wanted: list[int] = []
    with category_gone_is_not_found(ctx.session):
        for position, spec in enumerate(specs):
            campaign = _held_campaign(ctx, directory, spec.id, "campaigns")
            if campaign.id in wanted:
                continue
            wanted.append(campaign.id)
            row = existing.get(campaign.id) or add_item(
                ctx.session, directory, "campaign", campaign.id, ctx.now
            )
            row.position = position
            if spec.category is not None:
                row.category_id = categories[spec.category].id if spec.category else None
            if spec.featured is not None:
                row.featured = spec.featured
            if spec.status is not None:
                row.status = spec.status
            row.updated_at = ctx.now
        repository.delete_items(ctx.session, [row for cid, row in existing.items() if cid not in wanted])


def set_loyalty_cards(ctx: ApiContext, directory: Directory, raw_ids: list[str]) -> None:
    repository.lock_directory(ctx.session, directory.id)
    card_ids: list[int] = []
    for raw in raw_ids:
        number = ids.parse_public_id(raw, "", "loyalty_cards", loyalty_card_not_found())
        if number not in card_ids:
            card_ids.append(number)
    found = repository.loyalty_cards(ctx.session, ctx.scope, card_ids)
    if found is not None and any(
        card_id not in found or not may_hold(ctx.session, directory, found[card_id].account_id)
        for card_id in card_ids
    ):
        raise loyalty_card_not_found()
    existing = {row.item_id: row for row in repository.items(ctx.session, directory.id, "loyalty_card")}
    for position, card_id in enumerate(card_ids):
        row = existing.get(card_id) or add_item(ctx.session, directory, "loyalty_card", card_id, ctx.now)
        row.position = position
    repository.delete_items(ctx.session, [row for cid, row in existing.items() if cid not in card_ids])


def move_item(ctx: ApiContext, directory: Directory, kind: str, item_id: int, step: int) -> bool:
    """Swap a campaign (or loyalty card) with its neighbour in the order the directory shows
    them, and number the shown ones 0, 1, 2, … in that order (rows of deleted campaigns and cards,
    shown nowhere, are left as they are). Campaigns show featured first, so a campaign moves among the
    campaigns with the same featured flag. False when there is nowhere to move."""
    repository.lock_directory(ctx.session, directory.id)
    if kind == "campaign":
        rows = [
            row for row, _campaign in repository.campaign_items(ctx.session, directory.id, visible_only=False)
        ]
    else:
        rows = list(repository.items(ctx.session, directory.id, kind, live_only=True))
    index = next((i for i, row in enumerate(rows) if row.item_id == item_id), None)
    if index is None:
        raise campaign_not_found() if kind == "campaign" else loyalty_card_not_found()
    other = index + step
    if step not in (-1, 1) or not 0 <= other < len(rows) or rows[other].featured != rows[index].featured:
        return False
    rows[index], rows[other] = rows[other], rows[index]
    for position, row in enumerate(rows):
        row.position = position
    directory.updated_at = ctx.now
    ctx.session.flush()
    return True


def add_item(
    session: Session, directory: Directory, kind: str, item_id: int, now: dt.datetime
) -> DirectoryItem:
    row = DirectoryItem(
        directory_id=directory.id,
        account_id=directory.account_id,
        kind=kind,
        item_id=item_id,
        featured=False,
        status="active",
        position=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def directory_v4(ctx: ApiContext, directory: Directory) -> dict[str, Any]:
    rows = repository.items(ctx.session, directory.id, live_only=True)
    cards = repository.loyalty_cards(
        ctx.session, ctx.scope, [r.item_id for r in rows if r.kind == "loyalty_card"]
    )
    return {
        "id": dir_id(directory),
        "code": directory.code,
        "name": directory.name,
        "description": directory.description,
        "access": directory.access,
        "payment_url": directory.payment_url,
        "membership_days": directory.membership_days,
        "url": ctx.url(directory_path(directory)),
        "campaigns": [
            {
                "id": f"cam_{r.item_id}",
                "category": cat_id(r.category_id) or None,
                "featured": r.featured,
                "status": r.status,
            }
            for r in rows
            if r.kind == "campaign"
        ],
        "loyalty_cards": [
            {"id": str(r.item_id), "name": getattr((cards or {}).get(r.item_id), "name", None)}
            for r in rows
            if r.kind == "loyalty_card"
        ],
        "users": repository.count_users(ctx.session, directory.id),
        "created_at": fmt(directory.created_at),
        "updated_at": fmt(directory.updated_at),
    }


def directories_v3(ctx: ApiContext, found: list[Directory]) -> list[dict[str, Any]]:
    dir_ids = [d.id for d in found]
    items = repository.item_counts(ctx.session, dir_ids)
    users = repository.user_counts(ctx.session, dir_ids)
    return [
        {
            "ID": dir_id(d),
            "code": d.code,
            "name": d.name,
            "description": d.description,
            "access": d.access,
            "payment_url": d.payment_url,
            "membership_days": str(d.membership_days or ""),
            "url": ctx.url(directory_path(d)),
            "amount_of_campaigns": str(items.get((d.id, "campaign"), 0)),
            "amount_of_loyalty_cards": str(items.get((d.id, "loyalty_card"), 0)),
            "amount_of_users": str(users.get(d.id, 0)),
            "created_date_utc": fmt(d.created_at),
        }
        for d in found
    ]


def campaign_item_v3(
    ctx: ApiContext, directory: Directory, row: DirectoryItem, campaign: Campaign, names: dict[int, Category]
) -> dict[str, Any]:
    category = names.get(row.category_id) if row.category_id else None
    return {
        "ID": f"cam_{campaign.id}",
        "code": campaign.code,
        "name": campaign.name,
        "title": campaign.title,
        "description": campaign.description,
        "url": ctx.url(f"/p/{campaign.code}"),
        "directory": dir_id(directory),
        "directory_url": ctx.url(f"{directory_path(directory)}/c/cam_{campaign.id}"),
        "category": cat_id(row.category_id),
        "category_name": category.name if category else "",
        "featured": "1" if row.featured else "0",
        "status": row.status,
        "campaign_status": campaign.status,
    }


def directory_campaigns_v3(ctx: ApiContext, directory: Directory) -> list[dict[str, Any]]:
    pairs = repository.campaign_items(ctx.session, directory.id, visible_only=False)
    names = repository.categories_by_id(ctx.session, [r.category_id for r, _ in pairs if r.category_id])
    return [campaign_item_v3(ctx, directory, row, campaign, names) for row, campaign in pairs]


# ---- template copies and directory campaign settings -----------------------------------------


def create_from_template(
    ctx: ApiContext, req: DirectoryCampaignCreate
) -> tuple[Directory, Campaign, DirectoryItem, Campaign]:
    directory = get_directory(ctx, req.directory)
    # The copy belongs to the directory's owner: a template or category it may not show is
    # answered like a missing one.
    template = _held_campaign(ctx, directory, req.template, "template")
    name = _required_name(req.name)
    owner = ctx.session.get(Account, directory.account_id)
    assert owner is not None  # a directory's account is deleted with it
    category = get_held_category(ctx, directory.account_id, req.category) if req.category else None
    # The category locked before the directory, as every category assignment does; the owner's
    # row too (the same NO KEY UPDATE lock), even without a category: the allowance below
    # upgrades it, and doing so while a PATCH filing an item under the owner's category held it
    # and waited for this directory would deadlock (PostgreSQL).
    locked = lock_assigned_categories(ctx, [category] if category else [], also=[owner.id])
    category = locked[category.id] if category else None
    # The directory before the allowance's lock of the account (FOR UPDATE), as every change of
    # a directory's items does: a PATCH adding an item holds the directory, then its foreign key
    # share-locks the account. The other order deadlocked with it on PostgreSQL.
    repository.lock_directory(ctx.session, directory.id)
    ctx.session.refresh(directory)
    if directory.deleted_at is not None:
        # Deleted while this call waited for it: a copy would be added to a deleted directory.
        raise directory_not_found()
    accounts.check_campaign_allowance(ctx.session, owner)
    now = ctx.now
    fields = {
        column.key: copy.deepcopy(getattr(template, column.key))
        for column in Campaign.__table__.columns
        if column.key not in _NOT_COPIED and not column.key.endswith("_count")
    }
    fields["status"] = "active"
    settings = dict(fields.get("settings") or {})
    if settings.get("custom_code_mode") == "imported":
        # The imported list is not copied: each of its codes is meant for one customer, and two
        # campaigns handing out the same list would let every code be used twice at the till.
        # The copy hands out no custom codes until a list is imported for it.
        settings["custom_code_mode"] = "none"
        settings.pop("custom_codes_count", None)
    fields["settings"] = settings
    campaign = Campaign(
        **fields,
        account_id=directory.account_id,
        name=name,
        kind="coupon",
        category_id=category.id if category else None,
        created_at=now,
        updated_at=now,
    )
    for attempt in range(8):
        campaign.code = new_code(ctx.session, repository.campaign_code_taken)
        try:
            with ctx.session.begin_nested():
                ctx.session.add(campaign)
                ctx.session.flush()
            break
        except IntegrityError:
            # Another request drew the same code between the check and the insert.
            if attempt == 7:
                raise
    with category_gone_is_not_found(ctx.session):
        row = add_item(ctx.session, directory, "campaign", campaign.id, now)
        row.category_id = category.id if category else None
        row.position = len(repository.items(ctx.session, directory.id, "campaign"))
    return directory, campaign, row, template


def update_directory_campaign(
    ctx: ApiContext, req: DirectoryCampaignUpdate
) -> tuple[Campaign, list[tuple[Directory, DirectoryItem]]]:
    """Settings of a campaign in its directory (every directory holding it, or the one named)."""
    campaign = get_campaign(ctx, req.campaign)
    category: Category | None = None
    if req.category:
        # Locked before the directories, as every category assignment does (checked against
        # each directory below).
        category = get_category(ctx, req.category)
        category = lock_assigned_categories(ctx, [category])[category.id]
    # Its directories locked (in one order: no deadlock) before their items are read, so a PATCH
    # of a directory's campaigns at the same moment goes first or after, not in between.
    for directory_id in sorted(
        {d.id for _row, d in repository.items_holding(ctx.session, "campaign", campaign.id)}
    ):
        repository.lock_directory(ctx.session, directory_id)
    holders = [
        (directory, row)
        for row, directory in repository.items_holding(ctx.session, "campaign", campaign.id)
        if ctx.may_reach(directory.account_id)
    ]
    if req.directory:
        wanted = get_directory(ctx, req.directory)
        holders = [(d, r) for d, r in holders if d.id == wanted.id]
    if not holders:
        raise ApiError(502, "Campaign ID not found in a directory.")
    # The item's category: one every holding directory may show, as set_campaigns checks.
    if category is not None and not all(
        may_hold(ctx.session, directory, category.account_id) for directory, _row in holders
    ):
        raise category_not_found()
    category_id = category.id if category else None
    # The categories the directory put on the campaign, before this change: clearing the item's
    # category clears the campaign's own only when it is one of them.
    filed = {row.category_id for _directory, row in holders if row.category_id}
    now = ctx.now
    with category_gone_is_not_found(ctx.session):
        for _directory, row in holders:
            if req.status is not None:
                row.status = req.status
            if req.featured is not None:
                row.featured = req.featured
            if req.category is not None:
                row.category_id = category_id
            row.updated_at = now
        if req.description is not None:
            campaign.description = req.description
        if category is not None and accounts.may_hold(ctx.session, campaign.account_id, category.account_id):
            # The campaign's own category too, so coupon/list's `category` filter finds it; a
            # master's category stays off a subaccount's campaign (its answers go to the subaccount).
            campaign.category_id = category_id
        elif req.category == "" and campaign.category_id in filed:
            # "" (no category): the directory's filing is undone; a category the campaign got
            # elsewhere (its own form, PATCH /v4/campaigns) is not the directory's to clear.
            campaign.category_id = None
        campaign.updated_at = now
    return campaign, holders


# ---- categories ------------------------------------------------------------------------------


# How many levels a walk down the category tree goes at most. The tree holds three; the walk
# stops far past that, and at a category it already met, so a tree damaged by hand (or by two
# moves at once before they were serialized: a cycle) can never make it loop.
_WALK_LIMIT = 32


def _subtree(session: Session, root: Category) -> list[list[int]]:
    """The category and everything under it, level by level: [[root], [its subcategories], …].
    Each category once."""
    layers = [[root.id]]
    seen = {root.id}
    while len(layers) < _WALK_LIMIT:
        below = [c.id for c in repository.children(session, layers[-1]) if c.id not in seen]
        if not below:
            break
        seen.update(below)
        layers.append(below)
    return layers


def _too_deep() -> ApiError:
    return bad_value("parent", f"Categories have at most {MAX_CATEGORY_LEVEL} levels.")


def _lock_tree(ctx: ApiContext, category: Category) -> Category:
    """Wait for the other changes of the category's tree (repository.lock_categories), then the
    category as they left it: a category deleted meanwhile is not found (516)."""
    repository.lock_categories(ctx.session, category.account_id)
    now = repository.category_now(ctx.session, category.id)
    if now is None:
        raise category_not_found()
    return now


def create_category(ctx: ApiContext, req: CategoryCreate) -> Category:
    name = _required_name(req.name)
    parent = get_category(ctx, req.parent, "parent") if req.parent else None
    if parent is None:
        repository.lock_categories(ctx.session, ctx.account.id)
    else:
        parent = _lock_tree(ctx, parent)
    level = parent.level + 1 if parent else 1
    if level > MAX_CATEGORY_LEVEL:
        raise _too_deep()
    category = Category(
        account_id=parent.account_id if parent else ctx.account.id,
        parent_id=parent.id if parent else None,
        level=level,
        name=name,
        position=req.position or 0,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(category)
    ctx.session.flush()
    return category


def update_category(ctx: ApiContext, category: Category, req: CategoryPatch) -> Category:
    category = _lock_tree(ctx, category)
    if req.name is not None:
        category.name = _required_name(req.name)
    if req.position is not None:
        category.position = req.position
    if req.parent is not None:
        layers = _subtree(ctx.session, category)
        subtree = [c for layer in layers for c in layer]
        parent = get_category(ctx, req.parent, "parent") if req.parent else None
        if parent is not None and parent.id in subtree:
            raise bad_value("parent", "A category cannot move under itself or one of its own subcategories.")
        if parent is not None and parent.account_id != category.account_id:
            raise category_not_found()
        if parent is not None:
            parent = repository.category_now(ctx.session, parent.id) or parent
        level = parent.level + 1 if parent else 1
        if level + len(layers) - 1 > MAX_CATEGORY_LEVEL:
            raise _too_deep()
        # Every level set from where it now is (not shifted): a level a damaged tree got wrong
        # is right again after the move.
        repository.set_levels(ctx.session, layers, level)
        ctx.session.refresh(category)
        category.parent_id = parent.id if parent else None
    category.updated_at = ctx.now
    ctx.session.flush()
    return category


def sibling_key(c: Category) -> tuple[int, str, int]:
    """The order of categories under one parent (and of the top level): position, then name."""
    return (c.position, c.name.lower(), c.id)


def tree_order(rows: list[Category]) -> list[Category]:
    """Categories depth first: each parent followed by its subcategories, siblings in order
    (sibling_key). A category whose parent is not among `rows` counts as top level. The one walk
    of the tree: the v3 tree (build_tree), the dashboard and the directory pages all use it."""
    by_parent: dict[int | None, list[Category]] = {}
    known = {c.id for c in rows}
    for c in sorted(rows, key=sibling_key):
        by_parent.setdefault(c.parent_id if c.parent_id in known else None, []).append(c)
    out: list[Category] = []
    placed: set[int] = set()

    def walk(parent_id: int | None) -> None:
        for c in by_parent.get(parent_id, []):
            if c.id not in placed:
                placed.add(c.id)
                out.append(c)
                walk(c.id)

    walk(None)
    # A cycle (a tree damaged by hand, or by two moves at once before they were serialized) is
    # reached from no top-level category: its categories come last, the first one as top level,
    # each once, so they can still be seen, moved and deleted.
    for c in sorted(rows, key=sibling_key):
        if c.id not in placed:
            placed.add(c.id)
            out.append(c)
            walk(c.id)
    return out


def move_category(ctx: ApiContext, category: Category, step: int) -> bool:
    """Swap the category with its previous (step -1) or next (step 1) sibling, then number the
    siblings 0, 1, 2, … in their new order (the API's `position`), all in one flush. False when
    it already is first or last."""
    category = _lock_tree(ctx, category)
    siblings = sorted(
        repository.siblings(ctx.session, category.account_id, category.parent_id), key=sibling_key
    )
    index = next(i for i, c in enumerate(siblings) if c.id == category.id)
    other = index + step
    if step not in (-1, 1) or not 0 <= other < len(siblings):
        return False
    siblings[index], siblings[other] = siblings[other], siblings[index]
    for position, sibling in enumerate(siblings):
        if sibling.position != position:
            sibling.position = position
            sibling.updated_at = ctx.now
    ctx.session.flush()
    return True


def delete_category(ctx: ApiContext, category: Category) -> list[int]:
    """Delete a category with its subcategories; every campaign and directory item holding one
    loses it (a master's campaign may hold a subaccount's category, accounts.may_hold)."""
    category = _lock_tree(ctx, category)
    subtree = [c for layer in _subtree(ctx.session, category) for c in layer]
    repository.delete_categories(ctx.session, subtree)
    return subtree


def paths_of(rows: list[Category]) -> dict[int, str]:
    by_id = {c.id: c for c in rows}
    out: dict[int, str] = {}
    for c in sorted(rows, key=lambda c: c.level):
        parent = by_id.get(c.parent_id) if c.parent_id else None
        out[c.id] = f"{out[parent.id]} > {c.name}" if parent and parent.id in out else c.name
    return out


def category_v4(c: Category, paths: dict[int, str] | None = None) -> dict[str, Any]:
    return {
        "id": cat_id(c.id),
        "name": c.name,
        "parent": cat_id(c.parent_id) or None,
        "level": c.level,
        "position": c.position,
        "path": (paths or {}).get(c.id, c.name),
        "created_at": fmt(c.created_at),
        "updated_at": fmt(c.updated_at),
    }


def categories_v4(ctx: ApiContext) -> list[dict[str, Any]]:
    rows = list(repository.categories(ctx.session, ctx.scope(Category.account_id)))
    paths = paths_of(rows)
    return [category_v4(c, paths) for c in rows]


def category_paths(ctx: ApiContext) -> dict[int, str]:
    return paths_of(list(repository.categories(ctx.session, ctx.scope(Category.account_id))))


def _node_v3(c: Category, path: str) -> dict[str, Any]:
    return {
        "ID": cat_id(c.id),
        "name": c.name,
        "level": str(c.level),
        "parent": cat_id(c.parent_id),
        "position": str(c.position),
        "path": path,
    }


def category_tree_v3(ctx: ApiContext) -> list[dict[str, Any]]:
    rows = list(repository.categories(ctx.session, ctx.scope(Category.account_id)))
    return build_tree(rows)


def build_tree(rows: list[Category]) -> list[dict[str, Any]]:
    """The v3 tree: nested nodes in tree_order (a parent always comes before its subcategories)."""
    paths = paths_of(rows)
    nodes: dict[int, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for c in tree_order(rows):
        node = nodes[c.id] = {**_node_v3(c, paths[c.id]), "subcategories": []}
        parent = nodes.get(c.parent_id) if c.parent_id else None
        (parent["subcategories"] if parent else roots).append(node)
    return roots


def third_level_v3(ctx: ApiContext) -> list[dict[str, Any]]:
    rows = list(repository.categories(ctx.session, ctx.scope(Category.account_id)))
    paths = paths_of(rows)
    return [_node_v3(c, paths[c.id]) for c in rows if c.level == MAX_CATEGORY_LEVEL]


# ---- users -----------------------------------------------------------------------------------


@dataclass
class Access:
    """Whether a directory user may open the directory's coupons, and why not."""

    granted: bool
    # ok / login / blocked / pending / cancelled / expired / revoked
    reason: str


def access_for(directory: Directory, user: DirectoryUser | None, now: dt.datetime) -> Access:
    if directory.access == "public":
        return Access(True, "ok")
    if user is None:
        return Access(False, "login")
    if user.blocked:
        return Access(False, "blocked")
    if directory.access == "login":
        # Registering is enough (pending is every new user's status), but access revoked by hand
        # or by the API (cancelled) locks, and access granted until a date ends on that date.
        if user.payment_status == "cancelled":
            return Access(False, "revoked")
        if user.payment_status == "completed" and _ended(user, now):
            return Access(False, "expired")
        return Access(True, "ok")
    if user.payment_status == "completed":
        return Access(False, "expired") if _ended(user, now) else Access(True, "ok")
    return Access(
        False, user.payment_status if user.payment_status in ("pending", "cancelled") else "pending"
    )


def _ended(user: DirectoryUser, now: dt.datetime) -> bool:
    return user.payment_expires_at is not None and now >= user.payment_expires_at


def normalize_email(raw: str) -> str:
    email = accounts.normalize_email(raw)
    if not EMAIL.match(email) or len(email) > 254:
        raise ApiError(305, "Email address is not valid.")
    return email


def register_user(
    session: Session,
    directory: Directory,
    *,
    email: str,
    password_hash: str,
    now: dt.datetime,
    source: str,
    **fields: Any,
) -> DirectoryUser:
    """A new registered user (payment status pending) and its directory_user_registered event.
    The password comes hashed: hashing takes tens of milliseconds, which a page spends before its
    write transaction (on SQLite that holds every writer)."""
    email = normalize_email(email)
    if repository.user_by_email(session, directory.id, email) is not None:
        raise ApiError(304, "Email already exists.")
    user = DirectoryUser(
        directory_id=directory.id,
        account_id=directory.account_id,
        email=email,
        password_hash=password_hash,
        blocked=False,
        payment_status="pending",
        created_at=now,
        updated_at=now,
        **{k: v for k, v in fields.items() if v is not None},
    )
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        # The same email registered concurrently: the unique key decided.
        raise ApiError(304, "Email already exists.") from None
    events.emit(
        session,
        directory.account_id,
        "directory_user_registered",
        {
            "directory": dir_id(directory),
            "user": reg_id(user),
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "access": directory.access,
            "payment_status": user.payment_status,
            "source": source,
            "created_date_utc": fmt(now),
        },
    )
    return user


def create_user_v4(ctx: ApiContext, directory: Directory, req: DirectoryUserCreate) -> DirectoryUser:
    # yyyy-MM-dd from 1900 to today: year 1 was stored and answered as "1-01-01".
    birth = parse_birthday("birth_date", req.birth_date, ctx.now.date()) if req.birth_date else None
    return register_user(
        ctx.session,
        directory,
        email=req.email,
        # Hashed before the write transaction (kit.params.WithPassword); always set for this model.
        password_hash=req.password_hash or hash_password(token(18)),
        now=ctx.now,
        source="api",
        first_name=req.first_name,
        last_name=req.last_name,
        phone=req.phone,
        birth_date=birth,
        address=req.address,
        zip=req.zip,
        city=req.city,
        custom_1=req.custom_1,
        custom_2=req.custom_2,
        custom_3=req.custom_3,
    )


def set_payment(
    session: Session,
    directory: Directory,
    user: DirectoryUser,
    status: str,
    expires_at: dt.datetime | None,
    now: dt.datetime,
    *,
    source: str,
) -> bool:
    """Store a payment status; the change and its event are written together. No event (and no
    change) when the status and the expiry are what they already were: providers retry."""
    previous, previous_expiry = user.payment_status, user.payment_expires_at
    if previous == status and previous_expiry == expires_at:
        return False
    user.payment_status = status
    user.payment_expires_at = expires_at
    user.payment_updated_at = now
    user.updated_at = now
    session.flush()
    events.emit(
        session,
        directory.account_id,
        "directory_payment_status_changed",
        {
            "directory": dir_id(directory),
            "user": reg_id(user),
            "email": user.email,
            "payment_status": status,
            "previous_payment_status": previous,
            "expiry_date": fmt(expires_at),
            "source": source,
        },
    )
    return True


def parse_payment_expiry(raw: str | None) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    return parse_datetime("expiry_date", raw, PAYMENT_EXPIRY_FORMATS, "yyyy-mm-dd hh:mm")


def parse_access_expiry(raw: str | None) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    return parse_datetime("expires_at", raw, ACCESS_EXPIRY_FORMATS, "yyyy-MM-dd HH:mm:ss")


def grant_access(
    ctx: ApiContext,
    directory: Directory,
    user: DirectoryUser,
    raw_expiry: str | None,
    *,
    source: str = "api_v4",
) -> None:
    """v4 paid access (or the dashboard's button, `source="dashboard"`): `expires_at`, or the
    directory's default membership length, or no end."""
    expires_at = parse_access_expiry(raw_expiry)
    if expires_at is None and directory.membership_days:
        expires_at = (ctx.now + dt.timedelta(days=directory.membership_days)).replace(microsecond=0)
    set_payment(ctx.session, directory, user, "completed", expires_at, ctx.now, source=source)


def revoke_access(
    ctx: ApiContext, directory: Directory, user: DirectoryUser, *, source: str = "api_v4"
) -> None:
    set_payment(ctx.session, directory, user, "cancelled", user.payment_expires_at, ctx.now, source=source)


def issue_sso(ctx: ApiContext, directory: Directory, user: DirectoryUser) -> dict[str, Any]:
    if user.blocked:
        raise ApiError(308, "The directory user is blocked.")
    owner = ctx.session.get(Account, directory.account_id)
    assert owner is not None
    ttl = dt.timedelta(seconds=ctx.runtime.settings.sso_token_ttl_seconds)
    raw = accounts.issue_token(
        ctx.session,
        ctx.runtime.keyring,
        owner,
        purpose=SSO_PURPOSE,
        ttl=ttl,
        page=dir_id(directory),
        target=reg_id(user),
    )
    return {
        "id": reg_id(user),
        "directory": dir_id(directory),
        "token": raw,
        "url": ctx.url(f"{directory_path(directory)}/sso/{raw}"),
        "expires_at": fmt((utcnow() + ttl).replace(microsecond=0)),
    }


def payment_redirect(directory: Directory, user: DirectoryUser) -> str:
    """The business's payment URL with `directory=dir_…` and `user=reg_…` added."""
    parts = urlsplit(directory.payment_url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("directory", "user")
    ]
    query += [("directory", dir_id(directory)), ("user", reg_id(user))]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def user_v4(directory: Directory, user: DirectoryUser, now: dt.datetime) -> dict[str, Any]:
    access = access_for(directory, user, now)
    return {
        "id": reg_id(user),
        "directory": dir_id(directory),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "phone": user.phone,
        "birth_date": fmt_date(user.birth_date) or None,
        "address": user.address,
        "zip": user.zip,
        "city": user.city,
        "custom_1": user.custom_1,
        "custom_2": user.custom_2,
        "custom_3": user.custom_3,
        "blocked": user.blocked,
        "payment_status": user.payment_status,
        "expires_at": fmt(user.payment_expires_at) or None,
        "has_access": access.granted,
        "created_at": fmt(user.created_at),
        "last_login_at": fmt(user.last_login_at) or None,
    }


def user_v3(user: DirectoryUser) -> dict[str, Any]:
    return {
        "ID": reg_id(user),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "phone": user.phone,
        "birth_date": fmt_date(user.birth_date),
        "address": user.address,
        "zip": user.zip,
        "city": user.city,
        "custom_1": user.custom_1,
        "custom_2": user.custom_2,
        "custom_3": user.custom_3,
        "blocked": "1" if user.blocked else "0",
        "payment_status": user.payment_status,
        "payment_expiry_date_utc": fmt(user.payment_expires_at),
        "created_date_utc": fmt(user.created_at),
        "last_login_date_utc": fmt(user.last_login_at),
    }


def page_number(page: int | None) -> int:
    if page is None:
        return 1
    if page < 1:
        raise bad_value("page", "Pages start at 1.")
    return page
