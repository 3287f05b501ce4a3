"""Two-phase transfers and clearance holds: each reservation and each hold is a row, each ending a new outcome row
(history is never updated). Accounts count uncleared deposits; a returned deposit is a transfer kind of its own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from ledger.infrastructure.database_privileges import history_guard_trigger_name, history_guard_trigger_statement

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# New history tables of this revision: append-only, guarded like those of 0005.
_GUARDED = ("pending_transfers", "pending_outcomes", "clearance_holds", "clearance_outcomes")
_KINDS_BEFORE = "'transfer','deposit','disbursement','client_transfer','fee','firm_deposit','bank_charge','reversal'"


def upgrade() -> None:
    op.add_column("accounts", sa.Column("uncleared_credits", sa.BigInteger, nullable=False, server_default="0"))
    op.create_check_constraint("ck_accounts_uncleared_not_negative", "accounts", "uncleared_credits >= 0")
    op.drop_constraint("ck_transfers_kind_known", "transfers", type_="check")
    op.create_check_constraint("ck_transfers_kind_known", "transfers", f"kind IN ({_KINDS_BEFORE},'returned_deposit')")

    op.create_table(
        "pending_transfers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("debit_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("credit_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_pending_transfers_amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="ck_pending_transfers_two_accounts"),
    )
    op.create_index(
        "ix_pending_transfers_tenant_id_ledger_id_expires_at",
        "pending_transfers",
        ["tenant_id", "ledger_id", "expires_at"],
    )
    op.create_table(
        "pending_outcomes",
        sa.Column("pending_transfer_id", UUID(as_uuid=True), sa.ForeignKey("pending_transfers.id"), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount_posted", sa.BigInteger, nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('posted','voided','expired')", name="ck_pending_outcomes_kind_known"),
        sa.CheckConstraint(
            "(kind = 'posted') = (transfer_id IS NOT NULL AND amount_posted > 0)",
            name="ck_pending_outcomes_posted_has_transfer",
        ),
    )
    op.create_table(
        "clearance_holds",
        sa.Column("deposit_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("client_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_clearance_holds_amount_positive"),
    )
    op.create_index("ix_clearance_holds_tenant_id_ledger_id", "clearance_holds", ["tenant_id", "ledger_id"])
    op.create_table(
        "clearance_outcomes",
        sa.Column(
            "deposit_transfer_id",
            UUID(as_uuid=True),
            sa.ForeignKey("clearance_holds.deposit_transfer_id"),
            primary_key=True,
        ),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=True),
        sa.CheckConstraint("kind IN ('cleared','returned','reversed')", name="ck_clearance_outcomes_kind_known"),
    )
    for table in _GUARDED:
        op.execute(history_guard_trigger_statement(table))


def downgrade() -> None:
    for table in _GUARDED:
        op.execute(f"DROP TRIGGER {history_guard_trigger_name(table)} ON {table}")
    op.drop_table("clearance_outcomes")
    op.drop_table("clearance_holds")
    op.drop_table("pending_outcomes")
    op.drop_table("pending_transfers")
    op.drop_constraint("ck_transfers_kind_known", "transfers", type_="check")
    op.create_check_constraint("ck_transfers_kind_known", "transfers", f"kind IN ({_KINDS_BEFORE})")
    op.drop_constraint("ck_accounts_uncleared_not_negative", "accounts", type_="check")
    op.drop_column("accounts", "uncleared_credits")
