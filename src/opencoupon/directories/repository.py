"""Every query of the directories capability."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from opencoupon import models
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign, Category, Directory, DirectoryItem, DirectoryUser

# ---- directories -----------------------------------------------------------------------------


def directory(session: Session, scope: ColumnElement[bool], directory_id: int) -> Directory | None:
    return session.scalar(
        select(Directory).where(Directory.id == directory_id, Directory.deleted_at.is_(None), scope)
    )


def directories(session: Session, scope: ColumnElement[bool]) -> Sequence[Directory]:
    return session.scalars(
        select(Directory).where(Directory.deleted_at.is_(None), scope).order_by(Directory.id)
    ).all()


def directory_by_code(session: Session, code: str) -> Directory | None:
    return session.scalar(select(Directory).where(Directory.code == code, Directory.deleted_at.is_(None)))


def lock_directory(session: Session, directory_id: int) -> None:
    """Hold the directory's row until commit (FOR NO KEY UPDATE on PostgreSQL; SQLite's write
    transactions already run one at a time), so changes of its items run one after the other:
    two PATCHes of the same campaigns each inserted the rows it did not see, and the second
    broke the unique key (a 500). NO KEY UPDATE: users can still register meanwhile."""
    session.execute(select(Directory.id).where(Directory.id == directory_id).with_for_update(key_share=True))


def directory_code_taken(session: Session, code: str) -> bool:
    return session.scalar(select(Directory.id).where(Directory.code == code)) is not None


def item_counts(session: Session, directory_ids: list[int]) -> dict[tuple[int, str], int]:
    """Campaigns and loyalty cards per directory, deleted ones left out (live_item)."""
    if not directory_ids:
        return {}
    rows = session.execute(
        select(DirectoryItem.directory_id, DirectoryItem.kind, func.count())
        .where(DirectoryItem.directory_id.in_(directory_ids), live_item())
        .group_by(DirectoryItem.directory_id, DirectoryItem.kind)
    ).all()
    return {(d, k): n for d, k, n in rows}


def live_item() -> ColumnElement[bool]:
    """For a statement on `directory_items`: its campaign or loyalty card exists and is not
    deleted. A deleted one keeps its item row (restoring nothing, but harmless) and is shown,
    counted and listed nowhere, as the dashboard already showed it."""
    campaign = select(Campaign.id).where(Campaign.id == DirectoryItem.item_id, Campaign.deleted_at.is_(None))
    conditions = [and_(DirectoryItem.kind == "campaign", campaign.exists())]
    model = loyalty_card_model()
    if model is None:
        conditions.append(DirectoryItem.kind == "loyalty_card")  # nothing to check them against
    else:
        card = select(model.id).where(model.id == DirectoryItem.item_id)
        if hasattr(model, "deleted_at"):
            card = card.where(model.deleted_at.is_(None))
        conditions.append(and_(DirectoryItem.kind == "loyalty_card", card.exists()))
    return or_(*conditions)


def user_counts(session: Session, directory_ids: list[int]) -> dict[int, int]:
    if not directory_ids:
        return {}
    rows = session.execute(
        select(DirectoryUser.directory_id, func.count())
        .where(DirectoryUser.directory_id.in_(directory_ids))
        .group_by(DirectoryUser.directory_id)
    ).all()
    return {int(d): int(n) for d, n in rows}


# ---- items -----------------------------------------------------------------------------------


def items(
    session: Session, directory_id: int, kind: str | None = None, *, live_only: bool = False
) -> Sequence[DirectoryItem]:
    """The directory's item rows in order; `live_only`: without deleted campaigns and cards."""
    query = select(DirectoryItem).where(DirectoryItem.directory_id == directory_id)
    if kind is not None:
        query = query.where(DirectoryItem.kind == kind)
    if live_only:
        query = query.where(live_item())
    return session.scalars(query.order_by(DirectoryItem.position, DirectoryItem.id)).all()


def item(session: Session, directory_id: int, kind: str, item_id: int) -> DirectoryItem | None:
    return session.scalar(
        select(DirectoryItem).where(
            DirectoryItem.directory_id == directory_id,
            DirectoryItem.kind == kind,
            DirectoryItem.item_id == item_id,
        )
    )


def delete_items(session: Session, rows: Iterable[DirectoryItem]) -> None:
    for row in rows:
        session.delete(row)
    session.flush()


def campaign_items(
    session: Session,
    directory_id: int,
    *,
    visible_only: bool,
    search: str = "",
    category_ids: list[int] | None = None,
) -> Sequence[tuple[DirectoryItem, Campaign]]:
    """The directory's campaigns with their settings, featured first, then in position order."""
    query = (
        select(DirectoryItem, Campaign)
        .join(Campaign, Campaign.id == DirectoryItem.item_id)
        .where(
            DirectoryItem.directory_id == directory_id,
            DirectoryItem.kind == "campaign",
            Campaign.deleted_at.is_(None),
        )
    )
    if visible_only:
        query = query.where(DirectoryItem.status == "active", Campaign.status == "active")
    if category_ids is not None:
        query = query.where(DirectoryItem.category_id.in_(category_ids))
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        category_names = select(Category.id).where(func.lower(Category.name).like(pattern, escape="\\"))
        query = query.where(
            or_(
                func.lower(Campaign.name).like(pattern, escape="\\"),
                func.lower(Campaign.title).like(pattern, escape="\\"),
                func.lower(Campaign.description).like(pattern, escape="\\"),
                DirectoryItem.category_id.in_(category_names),
            )
        )
    query = query.order_by(
        DirectoryItem.featured.desc(), DirectoryItem.position, Campaign.name, DirectoryItem.id
    )
    return [(row[0], row[1]) for row in session.execute(query).all()]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def items_holding(session: Session, kind: str, item_id: int) -> Sequence[tuple[DirectoryItem, Directory]]:
    """Every live directory that holds this campaign or loyalty card."""
    rows = session.execute(
        select(DirectoryItem, Directory)
        .join(Directory, Directory.id == DirectoryItem.directory_id)
        .where(DirectoryItem.kind == kind, DirectoryItem.item_id == item_id, Directory.deleted_at.is_(None))
        .order_by(Directory.id)
    ).all()
    return [(row[0], row[1]) for row in rows]


# ---- campaigns and loyalty cards (owned by other capabilities) -------------------------------


def campaign(session: Session, scope: ColumnElement[bool], campaign_id: int) -> Campaign | None:
    return session.scalar(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.deleted_at.is_(None), scope)
    )


def campaigns_by_id(session: Session, campaign_ids: list[int]) -> dict[int, Campaign]:
    if not campaign_ids:
        return {}
    rows = session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids))).all()
    return {c.id: c for c in rows}


def campaign_code_taken(session: Session, code: str) -> bool:
    return session.scalar(select(Campaign.id).where(Campaign.code == code)) is not None


def loyalty_card_model() -> Any | None:
    """The loyalty capability's `LoyaltyCard` model (table loyalty_cards: integer id, account_id,
    code, name), or None while it is not part of this build. The ONE place that knows it."""
    return getattr(models, "LoyaltyCard", None)


def loyalty_cards(session: Session, scope_of: Any, card_ids: list[int]) -> dict[int, Any] | None:
    """The cards among `card_ids` the caller may reach, by id; None when loyalty cards are not
    part of this build (the IDs cannot be checked then). `scope_of(column)` is the tenancy filter."""
    model = loyalty_card_model()
    if model is None:
        return None
    if not card_ids:
        return {}
    query = select(model).where(model.id.in_(card_ids), scope_of(model.account_id))
    if hasattr(model, "deleted_at"):
        query = query.where(model.deleted_at.is_(None))
    return {card.id: card for card in session.scalars(query).all()}


# ---- users -----------------------------------------------------------------------------------


def user(session: Session, directory_id: int, user_id: int, *, lock: bool = False) -> DirectoryUser | None:
    """`lock`: hold the row until commit (PostgreSQL), so concurrent payment reports apply one
    after the other and only a real change emits an event. SQLite transactions already run one
    at a time."""
    query = select(DirectoryUser).where(
        DirectoryUser.id == user_id, DirectoryUser.directory_id == directory_id
    )
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def lock_user_for_opening(session: Session, user_id: int) -> None:
    """Hold the directory user's row until commit (FOR NO KEY UPDATE on PostgreSQL; SQLite's
    write transactions already run one at a time), so one member's coupon openings queue: each
    reads the sessions the ones before it made. NO KEY UPDATE: rows referencing the user (none
    today) could still be inserted meanwhile."""
    session.execute(
        select(DirectoryUser.id).where(DirectoryUser.id == user_id).with_for_update(key_share=True)
    )


def user_by_email(session: Session, directory_id: int, email: str) -> DirectoryUser | None:
    return session.scalar(
        select(DirectoryUser).where(DirectoryUser.directory_id == directory_id, DirectoryUser.email == email)
    )


def record_login(session: Session, user_id: int, now: dt.datetime) -> None:
    session.execute(update(DirectoryUser).where(DirectoryUser.id == user_id).values(last_login_at=now))


def users_page(session: Session, directory_id: int, offset: int, limit: int) -> Sequence[DirectoryUser]:
    """Newest registrations first."""
    return session.scalars(
        select(DirectoryUser)
        .where(DirectoryUser.directory_id == directory_id)
        .order_by(DirectoryUser.created_at.desc(), DirectoryUser.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()


def count_users(session: Session, directory_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(DirectoryUser).where(DirectoryUser.directory_id == directory_id)
        )
        or 0
    )


# ---- categories ------------------------------------------------------------------------------


def categories(session: Session, scope: ColumnElement[bool]) -> Sequence[Category]:
    return session.scalars(
        select(Category).where(scope).order_by(Category.level, Category.position, Category.name, Category.id)
    ).all()


def category(session: Session, scope: ColumnElement[bool], category_id: int) -> Category | None:
    return session.scalar(select(Category).where(Category.id == category_id, scope))


def item_category_ids(session: Session, directory_id: int) -> set[int]:
    """The categories the directory's items are filed under."""
    query = select(DirectoryItem.category_id).where(
        DirectoryItem.directory_id == directory_id, DirectoryItem.category_id.is_not(None)
    )
    return {c for c in session.scalars(query.distinct()) if c is not None}


def categories_by_id(session: Session, category_ids: Iterable[int]) -> dict[int, Category]:
    wanted = list(set(category_ids))
    if not wanted:
        return {}
    return {c.id: c for c in session.scalars(select(Category).where(Category.id.in_(wanted))).all()}


def siblings(session: Session, account_id: int, parent_id: int | None) -> Sequence[Category]:
    """The account's categories under `parent_id` (None: its top level)."""
    under = Category.parent_id.is_(None) if parent_id is None else Category.parent_id == parent_id
    return session.scalars(select(Category).where(Category.account_id == account_id, under)).all()


def children(session: Session, parent_ids: list[int]) -> Sequence[Category]:
    if not parent_ids:
        return []
    return session.scalars(select(Category).where(Category.parent_id.in_(parent_ids))).all()


def delete_categories(session: Session, category_ids: list[int]) -> None:
    """Delete categories and clear every reference to them (items and campaigns), of any account:
    a campaign saved before categories were checked may hold another account's, and a reused ID
    (SQLite) would file it under a stranger's category."""
    now = utcnow()
    session.execute(
        update(DirectoryItem).where(DirectoryItem.category_id.in_(category_ids)).values(category_id=None)
    )
    session.execute(
        update(Campaign)
        .where(Campaign.category_id.in_(category_ids))
        .values(category_id=None, updated_at=now)
    )
    # Unlinked first, so no row ever points at a deleted parent, whatever order the database
    # deletes them in (and a cycle left in a damaged tree is deleted as any subtree).
    session.execute(
        update(Category)
        .where(Category.id.in_(category_ids))
        .values(parent_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(Category).where(Category.id.in_(category_ids)))


def lock_categories(session: Session, account_id: int) -> None:
    """Hold the account's row until commit, so changes of its category tree (create, move,
    delete, reorder) run one at a time, each reading the tree the one before it left: two moves
    at once could each pass the checks on what it read and together make a cycle or a fourth
    level (PostgreSQL, READ COMMITTED; SQLite's write transactions already run one at a time).
    NO KEY UPDATE: rows referencing the account can still be inserted meanwhile."""
    session.execute(select(Account.id).where(Account.id == account_id).with_for_update(key_share=True))


def category_now(session: Session, category_id: int) -> Category | None:
    """The category as committed now (its loaded copy refreshed), None when it is gone."""
    return session.scalar(
        select(Category).where(Category.id == category_id).execution_options(populate_existing=True)
    )


def set_levels(session: Session, layers: list[list[int]], top: int) -> None:
    """The categories of `layers` (a category, then those under it, level by level) at levels
    top, top + 1, …"""
    for depth, category_ids in enumerate(layers):
        session.execute(update(Category).where(Category.id.in_(category_ids)).values(level=top + depth))
