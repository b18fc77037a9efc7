"""sessions_generation: a block ends a subaccount's dashboard sessions for good.

`accounts.sessions_generation` moves on whenever a subaccount update finds it unusable on the
dashboard (blocked, expired, without dashboard access) before or after the change; every dashboard
session carries the value it was signed in under and is signed out once they differ. Before, a
session was ended only if its cookie came back during the block, so a stolen cookie kept quiet
worked again after the unblock. Existing accounts start at 0 (cookies without the value count as
0). Adding the column is a catalogue change only on both databases (a constant default).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts", sa.Column("sessions_generation", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as 0014 does.
    op.drop_column("accounts", "sessions_generation")
