"""Append-only history: UPDATE, DELETE and TRUNCATE of transfers, postings and idempotency records are refused by a
statement-level trigger, whoever runs them (SQLSTATE LA001). The second guard behind the service role's privileges
(``ledger migrate`` grants it no UPDATE, DELETE or TRUNCATE there); only the tables' owner can disable it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from alembic import op

from ledger.infrastructure.database_privileges import (
    HISTORY_GUARD_FUNCTION,
    history_guard_function_statement,
    history_guard_trigger_name,
    history_guard_trigger_statement,
)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The history tables as of this revision (a later history table gets its trigger in its own migration).
_GUARDED = ("transfers", "postings", "idempotency_records")


def upgrade() -> None:
    op.execute(history_guard_function_statement())
    for table in _GUARDED:
        op.execute(history_guard_trigger_statement(table))


def downgrade() -> None:
    for table in _GUARDED:
        op.execute(f"DROP TRIGGER {history_guard_trigger_name(table)} ON {table}")
    op.execute(f"DROP FUNCTION {HISTORY_GUARD_FUNCTION}()")
