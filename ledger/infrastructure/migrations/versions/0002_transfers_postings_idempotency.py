"""Transfers, postings, idempotency records; ledger kinds, account status and overdraft flag.

The database enforces what it can: positive integer amounts, one posting per account version, a transfer reversed at
most once, keys unique per tenant, and (statement-level trigger) every transfer's postings summing to zero.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledgers", sa.Column("kind", sa.Text, nullable=False, server_default="trust"))
    op.create_check_constraint("ck_ledgers_kind_known", "ledgers", "kind IN ('trust','general')")
    op.add_column("accounts", sa.Column("status", sa.Text, nullable=False, server_default="open"))
    op.add_column("accounts", sa.Column("prevent_overdraft", sa.Boolean, nullable=False, server_default=sa.true()))
    op.create_check_constraint("ck_accounts_status_known", "accounts", "status IN ('open','closed')")
    op.create_check_constraint("ck_accounts_version_not_negative", "accounts", "version >= 0")

    op.create_table(
        "transfers",
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
        sa.CheckConstraint(
            "kind IN ('transfer','deposit','disbursement','client_transfer','fee','firm_deposit','bank_charge',"
            "'reversal')",
            name="ck_transfers_kind_known",
        ),
        sa.CheckConstraint("length(description) <= 500", name="ck_transfers_description_length"),
        sa.CheckConstraint("jsonb_typeof(metadata) = 'object'", name="ck_transfers_metadata_object"),
        sa.CheckConstraint("length(actor) BETWEEN 1 AND 200", name="ck_transfers_actor_length"),
    )
    op.create_index(
        "ix_transfers_tenant_id_ledger_id_recorded_at", "transfers", ["tenant_id", "ledger_id", "recorded_at"]
    )

    op.create_table(
        "postings",
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
        sa.CheckConstraint("side IN ('debit','credit')", name="ck_postings_side_known"),
        sa.CheckConstraint("amount > 0", name="ck_postings_amount_positive"),
        sa.UniqueConstraint("account_id", "account_version", name="uq_postings_account_id_account_version"),
    )
    op.create_index("ix_postings_transfer_id", "postings", ["transfer_id"])
    op.create_index("ix_postings_account_id_effective_date", "postings", ["account_id", "effective_date"])

    # Every transfer's postings sum to zero. Postings of one transfer are inserted by one statement, so a
    # statement-level check over the inserted rows sees whole transfers; a posting smuggled in alone fails it.
    op.execute(
        """
        CREATE FUNCTION ledger_check_postings_balance() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE unbalanced uuid;
        BEGIN
            SELECT transfer_id INTO unbalanced FROM new_postings
            GROUP BY transfer_id
            HAVING sum(CASE side WHEN 'debit' THEN amount ELSE -amount END) <> 0 OR count(*) < 2
            LIMIT 1;
            IF unbalanced IS NOT NULL THEN
                RAISE EXCEPTION 'postings of transfer % do not sum to zero', unbalanced
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER postings_balance_per_statement AFTER INSERT ON postings
        REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT
        EXECUTE FUNCTION ledger_check_postings_balance()
        """
    )

    op.create_table(
        "idempotency_records",
        sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(key) BETWEEN 1 AND 255", name="ck_idempotency_records_key_length"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    op.execute("DROP TRIGGER postings_balance_per_statement ON postings")
    op.execute("DROP FUNCTION ledger_check_postings_balance()")
    op.drop_table("postings")
    op.drop_table("transfers")
    op.drop_constraint("ck_accounts_version_not_negative", "accounts")
    op.drop_constraint("ck_accounts_status_known", "accounts")
    op.drop_column("accounts", "prevent_overdraft")
    op.drop_column("accounts", "status")
    op.drop_constraint("ck_ledgers_kind_known", "ledgers")
    op.drop_column("ledgers", "kind")
