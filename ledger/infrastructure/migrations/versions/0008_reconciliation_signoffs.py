"""Signed-off three-way reconciliations: insert-only; the newest sign-off of a ledger locks every entry effective
on or before its date.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from ledger.infrastructure.database_privileges import history_guard_trigger_name, history_guard_trigger_statement

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_signoffs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("report", JSONB, nullable=False),
        sa.Column("signed_off_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_off_by", sa.Text, nullable=False),
        sa.UniqueConstraint("ledger_id", "as_of", name="uq_reconciliation_signoffs_ledger_id_as_of"),
        sa.CheckConstraint("jsonb_typeof(report) = 'object'", name="ck_reconciliation_signoffs_report_object"),
    )
    op.execute(history_guard_trigger_statement("reconciliation_signoffs"))


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {history_guard_trigger_name('reconciliation_signoffs')} ON reconciliation_signoffs")
    op.drop_table("reconciliation_signoffs")
