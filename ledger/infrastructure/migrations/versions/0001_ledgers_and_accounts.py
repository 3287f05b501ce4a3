"""Ledgers and accounts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledgers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("currency_exponent", sa.SmallInteger, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("currency_exponent BETWEEN 0 AND 4", name="ck_ledgers_currency_exponent_range"),
        sa.CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name="ck_ledgers_currency_code_format"),
    )
    op.create_index("ix_ledgers_tenant_id_id", "ledgers", ["tenant_id", "id"])
    op.create_table(
        "accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("normal_side", sa.Text, nullable=False),
        sa.Column("posted_debits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("posted_credits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pending_debits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pending_credits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("ledger_id", "code", name="uq_accounts_ledger_id_code"),
        sa.CheckConstraint(
            "kind IN ('bank','client','firm_funds','asset','liability','equity','income','expense')",
            name="ck_accounts_kind_known",
        ),
        sa.CheckConstraint("normal_side IN ('debit','credit')", name="ck_accounts_normal_side_known"),
        sa.CheckConstraint(
            "posted_debits >= 0 AND posted_credits >= 0 AND pending_debits >= 0 AND pending_credits >= 0",
            name="ck_accounts_counters_not_negative",
        ),
    )
    op.create_index("ix_accounts_tenant_id_ledger_id_id", "accounts", ["tenant_id", "ledger_id", "id"])


def downgrade() -> None:
    op.drop_table("accounts")
    op.drop_table("ledgers")
