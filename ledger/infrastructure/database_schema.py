"""Table definitions (SQLAlchemy Core). Domain objects are mapped to and from rows in the repositories."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def build_metadata() -> sa.MetaData:
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    sa.Table(
        "ledgers",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("currency_exponent", sa.SmallInteger, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False, server_default="trust"),
        sa.CheckConstraint("currency_exponent BETWEEN 0 AND 4", name="currency_exponent_range"),
        sa.CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name="currency_code_format"),
        sa.Index("ix_ledgers_tenant_id_id", "tenant_id", "id"),
    )
    sa.Table(
        "accounts",
        metadata,
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
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("prevent_overdraft", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("chain_head", BYTEA, nullable=True),
        sa.Column("uncleared_credits", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("ledger_id", "code", name="uq_accounts_ledger_id_code"),
        sa.CheckConstraint(
            "kind IN ('bank','client','firm_funds','asset','liability','equity','income','expense')",
            name="kind_known",
        ),
        sa.CheckConstraint("normal_side IN ('debit','credit')", name="normal_side_known"),
        sa.CheckConstraint(
            "posted_debits >= 0 AND posted_credits >= 0 AND pending_debits >= 0 AND pending_credits >= 0",
            name="counters_not_negative",
        ),
        sa.Index("ix_accounts_tenant_id_ledger_id_id", "tenant_id", "ledger_id", "id"),
    )
    sa.Table(
        "transfers",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), sa.ForeignKey("ledgers.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reverses_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=True),
        sa.UniqueConstraint("reverses_transfer_id", name="uq_transfers_reverses_transfer_id"),
    )
    sa.Table(
        "postings",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("account_version", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chain_hash", BYTEA, nullable=False),
    )
    sa.Table(
        "idempotency_records",
        metadata,
        sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "api_keys",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.Text, nullable=True),
    )
    sa.Table(
        "pending_transfers",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("debit_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("credit_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    sa.Table(
        "pending_outcomes",
        metadata,
        sa.Column("pending_transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount_posted", sa.BigInteger, nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
    )
    sa.Table(
        "clearance_holds",
        metadata,
        sa.Column("deposit_transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("client_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "clearance_outcomes",
        metadata,
        sa.Column("deposit_transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), nullable=True),
    )
    sa.Table(
        "reconciliation_signoffs",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("report", JSONB, nullable=False),
        sa.Column("signed_off_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_off_by", sa.Text, nullable=False),
    )
    add_bank_statement_tables(metadata)
    return metadata


def add_bank_statement_tables(metadata: sa.MetaData) -> None:
    """Bank statements, their lines and the line-to-entry matches (migration 0007): insert-only history."""
    sa.Table(
        "bank_statements",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("bank_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("previous_statement_id", UUID(as_uuid=True), nullable=True),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("opening_balance", sa.BigInteger, nullable=False),
        sa.Column("closing_balance", sa.BigInteger, nullable=False),
        sa.Column("line_count", sa.Integer, nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
    )
    sa.Table(
        "bank_statement_lines",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("statement_id", UUID(as_uuid=True), nullable=False),
        sa.Column("bank_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("line_number", sa.Integer, nullable=False),
        sa.Column("line_date", sa.Date, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
    )
    sa.Table(
        "statement_matches",
        metadata,
        sa.Column("bank_account_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("line_id", UUID(as_uuid=True), nullable=False),
        sa.Column("statement_id", UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ledger_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
    )
