"""sso_generation: a leaked API secret's SSO sign-ins end when the secret is rotated at once.

`accounts.sso_generation` is moved on by a rotation with grace 0 (accounts.service.rotate_secret);
a dashboard session opened through an SSO link carries the value it was opened under and is signed
out once they differ. Existing accounts start at 0. Adding the column is a catalogue change only on
both databases (a constant default).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("sso_generation", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as 0014 does.
    op.drop_column("accounts", "sso_generation")
