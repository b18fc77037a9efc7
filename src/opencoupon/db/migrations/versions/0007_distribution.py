"""distribution: email and SMS settings per account, and one row per message sent.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls_mode", sa.String(length=10), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("sender_name", sa.String(length=200), nullable=False),
        sa.Column("sender_email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_email_integrations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_integrations")),
        sa.UniqueConstraint("account_id", name=op.f("uq_email_integrations_account_id")),
    )
    op.create_table(
        "sms_integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("account_sid", sa.String(length=100), nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sms_integrations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_integrations")),
        sa.UniqueConstraint("account_id", name=op.f("uq_sms_integrations_account_id")),
    )
    op.create_table(
        "distribution_sends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("directory_id", sa.Integer(), nullable=True),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("recipient_key", sa.String(length=254), nullable=False),
        sa.Column("recipient_name", sa.String(length=200), nullable=False),
        sa.Column("firstname", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(length=254), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=300), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("provider_response", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_distribution_sends_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_distribution_sends_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["coupon_sessions.id"],
            name=op.f("fk_distribution_sends_session_id_coupon_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distribution_sends")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_distribution_sends_dedup_key")),
    )
    op.create_index(
        "ix_distribution_sends_account_created",
        "distribution_sends",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_distribution_sends_campaign_recipient",
        "distribution_sends",
        ["campaign_id", "channel", "recipient_key"],
        unique=False,
    )
    op.create_index(
        op.f("ix_distribution_sends_session_id"), "distribution_sends", ["session_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_distribution_sends_session_id"), table_name="distribution_sends")
    op.drop_index("ix_distribution_sends_campaign_recipient", table_name="distribution_sends")
    op.drop_index("ix_distribution_sends_account_created", table_name="distribution_sends")
    op.drop_table("distribution_sends")
    op.drop_table("sms_integrations")
    op.drop_table("email_integrations")
