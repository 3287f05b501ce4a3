"""Bank statements of trust bank accounts, their lines, and the matches between lines and ledger entries.

Each statement names the one it continues (unique: statements of a bank account form one chain, with one first
statement per account). A ledger entry is matched at most once per bank account (primary key). All three tables are
history: the append-only guard of migration 0005 refuses UPDATE, DELETE and TRUNCATE.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from ledger.infrastructure.database_privileges import history_guard_trigger_name, history_guard_trigger_statement

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HISTORY_TABLES = ("bank_statements", "bank_statement_lines", "statement_matches")


def upgrade() -> None:
    op.create_table(
        "bank_statements",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("bank_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("previous_statement_id", UUID(as_uuid=True), sa.ForeignKey("bank_statements.id"), nullable=True),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("opening_balance", sa.BigInteger, nullable=False),
        sa.Column("closing_balance", sa.BigInteger, nullable=False),
        sa.Column("line_count", sa.Integer, nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.UniqueConstraint("previous_statement_id", name="uq_bank_statements_previous_statement_id"),
        sa.CheckConstraint("period_start <= period_end", name="ck_bank_statements_period_ordered"),
        sa.CheckConstraint("line_count >= 0", name="ck_bank_statements_line_count_not_negative"),
        sa.CheckConstraint("length(actor) BETWEEN 1 AND 200", name="ck_bank_statements_actor_length"),
    )
    op.create_index(
        "uq_bank_statements_first_per_bank_account",
        "bank_statements",
        ["bank_account_id"],
        unique=True,
        postgresql_where=sa.text("previous_statement_id IS NULL"),
    )
    op.create_index(
        "ix_bank_statements_tenant_id_ledger_id_period_start",
        "bank_statements",
        ["tenant_id", "ledger_id", "period_start", "id"],
    )
    op.create_index(
        "ix_bank_statements_bank_account_id_period_end", "bank_statements", ["bank_account_id", "period_end"]
    )

    op.create_table(
        "bank_statement_lines",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("statement_id", UUID(as_uuid=True), sa.ForeignKey("bank_statements.id"), nullable=False),
        sa.Column("bank_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("line_number", sa.Integer, nullable=False),
        sa.Column("line_date", sa.Date, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.UniqueConstraint("statement_id", "line_number", name="uq_bank_statement_lines_statement_id"),
        sa.CheckConstraint("line_number > 0", name="ck_bank_statement_lines_line_number_positive"),
        sa.CheckConstraint("amount <> 0", name="ck_bank_statement_lines_amount_not_zero"),
        sa.CheckConstraint("length(reference) <= 100", name="ck_bank_statement_lines_reference_length"),
        sa.CheckConstraint("length(description) <= 500", name="ck_bank_statement_lines_description_length"),
    )
    op.create_index(
        "ix_bank_statement_lines_bank_account_id_line_date", "bank_statement_lines", ["bank_account_id", "line_date"]
    )

    op.create_table(
        "statement_matches",
        sa.Column("bank_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), primary_key=True),
        sa.Column("line_id", UUID(as_uuid=True), sa.ForeignKey("bank_statement_lines.id"), nullable=False),
        sa.Column("statement_id", UUID(as_uuid=True), sa.ForeignKey("bank_statements.id"), nullable=False),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.CheckConstraint(
            "kind IN ('amount_and_date','reference','deposit_slip')", name="ck_statement_matches_kind_known"
        ),
    )
    op.create_index("ix_statement_matches_line_id", "statement_matches", ["line_id"])
    op.create_index("ix_statement_matches_statement_id", "statement_matches", ["statement_id"])

    for table in _HISTORY_TABLES:
        op.execute(history_guard_trigger_statement(table))


def downgrade() -> None:
    for table in reversed(_HISTORY_TABLES):
        op.execute(f"DROP TRIGGER {history_guard_trigger_name(table)} ON {table}")
    op.drop_table("statement_matches")
    op.drop_table("bank_statement_lines")
    op.drop_table("bank_statements")
