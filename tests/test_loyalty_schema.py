"""The loyalty tables as migrated agree with the models, and the database itself refuses a
negative balance (not only the Python code)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from conftest import TestAccount as Acc
from loyalty_fixtures import create_card, create_holder
from opencoupon.db.base import Base
from opencoupon.runtime import Runtime

LOYALTY_TABLES = {
    "loyalty_cards",
    "loyalty_holders",
    "loyalty_rewards",
    "loyalty_reward_grants",
    "loyalty_ledger",
}


def _tables_of(diff: Any) -> set[str]:
    found: set[str] = set()
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        if isinstance(item, tuple):
            for part in item:
                name = getattr(part, "name", None)
                table = getattr(part, "table", None)
                if isinstance(part, str):
                    found.add(part)
                elif table is not None:
                    found.add(str(table.name))
                elif name:
                    found.add(str(name))
        elif isinstance(item, list):
            found |= _tables_of(item)
    return found


def test_migrated_loyalty_tables_match_the_models(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    ours = [d for d in diffs if _tables_of(d) & LOYALTY_TABLES]
    assert ours == []


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("UPDATE loyalty_holders SET points = -1 WHERE id = :id", "holder"),
        ("UPDATE loyalty_holders SET stamps = stamps - 1000 WHERE id = :id", "holder"),
        (
            "INSERT INTO loyalty_ledger (account_id, card_id, holder_id, unit, delta, balance_after, kind,"
            " source, created_at) SELECT account_id, card_id, id, 'points', -1, -1, 'spend', 'api',"
            " created_at"
            " FROM loyalty_holders WHERE id = :id",
            "ledger",
        ),
    ],
)
def test_the_database_refuses_a_negative_balance(
    account: Acc, runtime: Runtime, statement: str, table: str
) -> None:
    card = create_card(account, type="points")
    holder = create_holder(account, card["id"])
    with pytest.raises(IntegrityError), runtime.db.transaction() as session:
        session.execute(text(statement), {"id": int(holder["ID"])})
