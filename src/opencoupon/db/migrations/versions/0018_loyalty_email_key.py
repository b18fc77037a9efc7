"""loyalty_holders.email_key: a holder's email in lower case by Python's rules, indexed per card.

A person joins a card once per email in any letter case. The check compared `lower(email)` in SQL,
and SQLite's lower() folds ASCII letters only: JOSÉ@example.com and josé@example.com joined one card
twice. `email_key` is lowered in Python (models.loyalty.email_key), the same on both databases, and
the check compares it through `ix_loyalty_holders_card_email_key`. Existing holders' keys are filled
in here, in Python too, a thousand rows at a time. Adding the column is a catalogue change only on
both databases (a constant default); on PostgreSQL the index is built CONCURRENTLY, as 0015's is
(joins go on).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

INDEX = "ix_loyalty_holders_card_email_key"
BATCH = 1000
_HOLDERS_AFTER = sa.text(
    "SELECT id, email FROM loyalty_holders WHERE id > :after AND email <> '' ORDER BY id LIMIT :batch"
)
_SET_KEY = sa.text("UPDATE loyalty_holders SET email_key = :key WHERE id = :id")


def _fill_keys() -> None:
    connection = op.get_bind()
    after = 0
    while rows := connection.execute(_HOLDERS_AFTER, {"after": after, "batch": BATCH}).all():
        # models.loyalty.email_key, written out: a migration keeps the rule it was written with.
        connection.execute(_SET_KEY, [{"id": row.id, "key": row.email.lower()} for row in rows])
        after = rows[-1].id


def upgrade() -> None:
    op.add_column(
        "loyalty_holders", sa.Column("email_key", sa.String(length=254), server_default="", nullable=False)
    )
    _fill_keys()
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(INDEX, "loyalty_holders", ["card_id", "email_key"], unique=False)
        return
    with op.get_context().autocommit_block():
        # An invalid index left by an interrupted build goes first.
        op.drop_index(INDEX, table_name="loyalty_holders", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            INDEX, "loyalty_holders", ["card_id", "email_key"], unique=False, postgresql_concurrently=True
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="loyalty_holders")
    else:
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="loyalty_holders", postgresql_concurrently=True)
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as 0014 does.
    op.drop_column("loyalty_holders", "email_key")
