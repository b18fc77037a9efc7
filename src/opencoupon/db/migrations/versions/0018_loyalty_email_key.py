"""loyalty_holders.email_key: a holder's email in lower case by Python's rules, indexed per card.

A person joins a card once per email in any letter case. The check compared `lower(email)` in SQL,
and SQLite's lower() folds ASCII letters only: JOSÉ@example.com and josé@example.com joined one card
twice. `email_key` is lowered in Python (models.loyalty.email_key), the same on both databases, and
the check compares it through `ix_loyalty_holders_card_email_key`. Existing holders' keys are filled
in here, in Python too, a thousand rows at a time. Adding the column is a catalogue change only on
both databases (a constant default); on PostgreSQL the index is built CONCURRENTLY, as 0015's is
(joins go on).

On PostgreSQL the column is committed first; then each thousand keys is a transaction of its own
(joins and edits wait for a moment, not for the whole fill), and the index is built. A run
interrupted on the way (the build waits for every older transaction) leaves no version stamp: a run
again finds the column, fills the keys still empty and replaces an invalid index. Holders that a
process of the version before writes after this migration keep an empty key; holder_by_email
(loyalty.repository) matches those by their email, as that version did.

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
_EMPTY_KEYS_AFTER = sa.text(
    "SELECT id, email FROM loyalty_holders WHERE id > :after AND email_key = '' AND email <> '' "
    "ORDER BY id LIMIT :batch"
)
_SET_KEY = sa.text("UPDATE loyalty_holders SET email_key = :key WHERE id = :id AND email = :email")
# One statement per batch: in autocommit each statement is one transaction. A holder whose email
# changed since it was read keeps the key the application gave it.
_SET_KEYS_POSTGRES = sa.text(
    "UPDATE loyalty_holders SET email_key = keys.key "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:emails AS text[]), CAST(:keys AS text[])) "
    "AS keys (id, email, key) WHERE loyalty_holders.id = keys.id AND loyalty_holders.email = keys.email"
)


def _fill_keys() -> None:
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    after = 0
    while rows := connection.execute(_EMPTY_KEYS_AFTER, {"after": after, "batch": BATCH}).all():
        # models.loyalty.email_key, written out: a migration keeps the rule it was written with.
        if postgres:
            keys = {
                "ids": [row.id for row in rows],
                "emails": [row.email for row in rows],
                "keys": [row.email.lower() for row in rows],
            }
            connection.execute(_SET_KEYS_POSTGRES, keys)
        else:
            connection.execute(
                _SET_KEY, [{"id": row.id, "email": row.email, "key": row.email.lower()} for row in rows]
            )
        after = rows[-1].id


def upgrade() -> None:
    columns = sa.inspect(op.get_bind()).get_columns("loyalty_holders")
    if "email_key" not in {column["name"] for column in columns}:
        op.add_column(
            "loyalty_holders",
            # Text: lowering may lengthen an email ('İ'.lower() is two characters).
            sa.Column("email_key", sa.Text(), server_default="", nullable=False),
        )
    if op.get_bind().dialect.name != "postgresql":
        # SQLite: one transaction, as every migration there.
        _fill_keys()
        op.create_index(INDEX, "loyalty_holders", ["card_id", "email_key"], unique=False)
        return
    with op.get_context().autocommit_block():
        _fill_keys()
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
