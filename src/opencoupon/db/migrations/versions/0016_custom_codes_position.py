"""custom_codes_position: an imported code list's own cursor, apart from the codes handed out.

`campaigns.custom_codes_issued` was both the number of custom codes handed out (generated or
imported) and the position in the imported list, so a list given after generated codes, or after
another list, skipped its first codes (all of them when it was shorter). `custom_codes_position`
is the list's cursor. Existing lists are placed after their leading codes that sessions already
hold, as a list given now is (coupons.service): a list used as it was given continues where it
was. Adding the column is a catalogue change only on both databases (a constant default).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Positions run 1..n: the cursor is the first position whose code no session of the campaign holds,
# less one, or the whole list when every code is held.
_PLACE_LISTS = sa.text(
    "UPDATE campaigns SET custom_codes_position = COALESCE("
    "(SELECT MIN(cc.position) - 1 FROM campaign_custom_codes cc WHERE cc.campaign_id = campaigns.id "
    "AND NOT EXISTS (SELECT 1 FROM coupon_sessions s WHERE s.campaign_id = cc.campaign_id "
    "AND s.custom_validation_code = cc.code)), "
    "(SELECT COUNT(*) FROM campaign_custom_codes cc WHERE cc.campaign_id = campaigns.id)) "
    "WHERE EXISTS (SELECT 1 FROM campaign_custom_codes cc WHERE cc.campaign_id = campaigns.id)"
)


def upgrade() -> None:
    op.add_column(
        "campaigns", sa.Column("custom_codes_position", sa.Integer(), server_default="0", nullable=False)
    )
    op.execute(_PLACE_LISTS)


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as 0014 does.
    op.drop_column("campaigns", "custom_codes_position")
