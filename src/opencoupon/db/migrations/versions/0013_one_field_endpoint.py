"""One `account_field` webhook endpoint per account (a partial unique index).

The endpoint mirroring a subaccount's `webhook_endpoint` field was made by a read-then-insert:
on PostgreSQL two fan-outs of the same account at the same moment both found none and both
inserted, and every later event went out twice, signed with two secrets. The fan-out now inserts
with ON CONFLICT DO NOTHING against this index and reads the row back.

Duplicates made before are merged into the oldest endpoint of each account first: a duplicate's
messages move to it (their delivery log with them), except messages of events the oldest already
has (those, and their log, are dropped: the same event to the same URL), then the duplicate goes.

On PostgreSQL the index is built CONCURRENTLY, as 0010's and 0012's are; duplicates made while it
is being built (the API may serve meanwhile) are merged and the build is tried again.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEX = "uq_webhook_endpoints_account_field"
WHERE = sa.text("source = 'account_field'")

_MERGE = [
    "DELETE FROM webhook_attempts WHERE message_id IN (SELECT id FROM webhook_messages "
    "WHERE endpoint_id = :dup AND event_id IN "
    "(SELECT event_id FROM webhook_messages WHERE endpoint_id = :keep))",
    "DELETE FROM webhook_messages WHERE endpoint_id = :dup AND event_id IN "
    "(SELECT event_id FROM webhook_messages WHERE endpoint_id = :keep)",
    "UPDATE webhook_messages SET endpoint_id = :keep WHERE endpoint_id = :dup",
    "UPDATE webhook_attempts SET endpoint_id = :keep WHERE endpoint_id = :dup",
    "DELETE FROM webhook_endpoints WHERE id = :dup",
]


def merge_duplicates(connection: sa.Connection) -> int:
    """Merge every account's extra account_field endpoints into its oldest one; how many went."""
    rows = connection.execute(
        sa.text(
            "SELECT account_id, id FROM webhook_endpoints WHERE source = 'account_field' "
            "ORDER BY account_id, id"
        )
    ).all()
    keep: dict[int, int] = {}
    merged = 0
    for account_id, endpoint_id in rows:
        if account_id not in keep:
            keep[account_id] = endpoint_id
            continue
        for statement in _MERGE:
            connection.execute(sa.text(statement), {"dup": endpoint_id, "keep": keep[account_id]})
        merged += 1
    return merged


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        # SQLite: the migration holds the write lock; no fan-out can insert meanwhile.
        merge_duplicates(bind)
        op.create_index(INDEX, "webhook_endpoints", ["account_id"], unique=True, sqlite_where=WHERE)
        return
    merge_duplicates(bind)
    with op.get_context().autocommit_block():
        for attempt in range(5):
            if attempt:
                # Statement by statement (autocommit): each is safe alone, and a merge cut short
                # is finished by the next run.
                merge_duplicates(bind)
            op.drop_index(INDEX, table_name="webhook_endpoints", postgresql_concurrently=True, if_exists=True)
            try:
                op.create_index(
                    INDEX,
                    "webhook_endpoints",
                    ["account_id"],
                    unique=True,
                    postgresql_where=WHERE,
                    postgresql_concurrently=True,
                )
                return
            except sa.exc.IntegrityError:
                # A duplicate made during the build: the index is left invalid. Merge, build again.
                if attempt == 4:
                    raise


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="webhook_endpoints")
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="webhook_endpoints", postgresql_concurrently=True)
