"""campaign_custom_codes: imported custom validation codes leave the campaign's settings JSON.

Every validation and consumer page loads the campaign row; an imported list of 70,000 codes made
that row a megabyte of JSON to parse each time. The codes move to their own table, the settings
keep only their number (`custom_codes_count`).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from opencoupon.db.base import JSONType

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_campaigns = sa.table("campaigns", sa.column("id", sa.Integer()), sa.column("settings", JSONType))
_codes = sa.table(
    "campaign_custom_codes",
    sa.column("campaign_id", sa.Integer()),
    sa.column("position", sa.Integer()),
    sa.column("code", sa.String()),
)


def _settings_of_all(conn: sa.Connection) -> list[tuple[int, dict[str, Any]]]:
    return [
        (int(row[0]), dict(row[1] or {}))
        for row in conn.execute(sa.select(_campaigns.c.id, _campaigns.c.settings))
    ]


def _save_settings(conn: sa.Connection, campaign_id: int, settings: dict[str, Any]) -> None:
    conn.execute(sa.update(_campaigns).where(_campaigns.c.id == campaign_id).values(settings=settings))


def upgrade() -> None:
    op.create_table(
        "campaign_custom_codes",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "position"),
    )
    conn = op.get_bind()
    for campaign_id, settings in _settings_of_all(conn):
        if "custom_codes" not in settings:
            continue
        codes = [str(code) for code in settings.pop("custom_codes") or []]
        if codes:
            conn.execute(
                sa.insert(_codes),
                [{"campaign_id": campaign_id, "position": i, "code": c} for i, c in enumerate(codes, 1)],
            )
        settings["custom_codes_count"] = len(codes)
        _save_settings(conn, campaign_id, settings)


def downgrade() -> None:
    conn = op.get_bind()
    for campaign_id, settings in _settings_of_all(conn):
        if "custom_codes_count" not in settings:
            continue
        del settings["custom_codes_count"]
        settings["custom_codes"] = list(
            conn.scalars(
                sa.select(_codes.c.code)
                .where(_codes.c.campaign_id == campaign_id)
                .order_by(_codes.c.position)
            )
        )
        _save_settings(conn, campaign_id, settings)
    op.drop_table("campaign_custom_codes")
