"""push_retries: push deliveries a push service answered 429/5xx or not in time, tried again.

`push_fanouts.last_subscription_id` bounds a fan-out to the subscriptions that existed when it was
queued (NULL for fan-outs queued before: no bound, as before). `push_retries` holds a fan-out's
subscriptions to try again and when. `ix_push_subscriptions_endpoint` finds every target of one
browser subscription (opting out, a renewed subscription); on PostgreSQL it is built
CONCURRENTLY, as 0012's index is (subscribing goes on). No table is rewritten.

The column and the table are committed before that build (an autocommit block); a run interrupted
during it leaves them without the version stamp, so a run again adds only what is missing.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ENDPOINT_INDEX = "ix_push_subscriptions_endpoint"


def upgrade() -> None:
    schema = sa.inspect(op.get_bind())
    if "last_subscription_id" not in {column["name"] for column in schema.get_columns("push_fanouts")}:
        op.add_column("push_fanouts", sa.Column("last_subscription_id", sa.Integer(), nullable=True))
    if not schema.has_table("push_retries"):
        _create_retries()
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(ENDPOINT_INDEX, "push_subscriptions", ["endpoint_digest"], unique=False)
        return
    with op.get_context().autocommit_block():
        # An invalid index left by an interrupted build goes first.
        op.drop_index(
            ENDPOINT_INDEX, table_name="push_subscriptions", postgresql_concurrently=True, if_exists=True
        )
        op.create_index(
            ENDPOINT_INDEX,
            "push_subscriptions",
            ["endpoint_digest"],
            unique=False,
            postgresql_concurrently=True,
        )


def _create_retries() -> None:
    """The table and its index, committed together."""
    op.create_table(
        "push_retries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fanout_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fanout_id"],
            ["push_fanouts.id"],
            name=op.f("fk_push_retries_fanout_id_push_fanouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_retries")),
        sa.UniqueConstraint(
            "fanout_id", "subscription_id", name=op.f("uq_push_retries_fanout_id_subscription_id")
        ),
    )
    op.create_index("ix_push_retries_due", "push_retries", ["fanout_id", "run_at"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(ENDPOINT_INDEX, table_name="push_subscriptions")
    else:
        with op.get_context().autocommit_block():
            op.drop_index(ENDPOINT_INDEX, table_name="push_subscriptions", postgresql_concurrently=True)
    op.drop_index("ix_push_retries_due", table_name="push_retries")
    op.drop_table("push_retries")
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as 0014 does.
    op.drop_column("push_fanouts", "last_subscription_id")
