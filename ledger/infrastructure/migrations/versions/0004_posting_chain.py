"""Tamper evidence: every posting carries a hash chained to the account's previous posting; the account row keeps
its chain head. Postings written before this revision are chained here, in account-version order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA

from ledger.domain.posting_chain import genesis_hash, next_chain_hash, posting_link_bytes

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_EXISTING_POSTINGS = sa.text(
    "SELECT p.id, p.tenant_id, p.ledger_id, p.account_id, p.account_version, p.side, p.amount, p.balance_after,"
    " t.id AS transfer_id, t.kind, t.description, t.metadata, t.effective_date, t.recorded_at, t.actor,"
    " t.reverses_transfer_id"
    " FROM postings p JOIN transfers t ON t.id = p.transfer_id"
    " ORDER BY p.account_id, p.account_version"
)


def upgrade() -> None:
    op.add_column("postings", sa.Column("chain_hash", BYTEA, nullable=True))
    op.add_column("accounts", sa.Column("chain_head", BYTEA, nullable=True))
    _chain_existing_postings()
    op.alter_column("postings", "chain_hash", nullable=False)
    op.create_check_constraint("ck_postings_chain_hash_length", "postings", "octet_length(chain_hash) = 32")
    op.create_check_constraint(
        "ck_accounts_chain_head_length", "accounts", "chain_head IS NULL OR octet_length(chain_head) = 32"
    )


def _chain_existing_postings() -> None:
    connection = op.get_bind()
    account_id = None
    previous = b""
    updates: list[dict[str, object]] = []
    heads: dict[object, bytes] = {}
    for row in connection.execute(_EXISTING_POSTINGS).mappings():
        if row["account_id"] != account_id:
            account_id = row["account_id"]
            previous = genesis_hash(row["account_id"])
        previous = next_chain_hash(
            previous,
            posting_link_bytes(
                tenant_id=row["tenant_id"],
                ledger_id=row["ledger_id"],
                account_id=row["account_id"],
                account_version=row["account_version"],
                side=row["side"],
                amount=row["amount"],
                balance_after=row["balance_after"],
                transfer_id=row["transfer_id"],
                transfer_kind=row["kind"],
                description=row["description"],
                metadata=row["metadata"],
                effective_date=row["effective_date"],
                recorded_at=row["recorded_at"],
                actor=row["actor"],
                reverses_transfer_id=row["reverses_transfer_id"],
            ),
        )
        updates.append({"posting_id": row["id"], "chain_hash": previous})
        heads[account_id] = previous
    if updates:
        connection.execute(sa.text("UPDATE postings SET chain_hash = :chain_hash WHERE id = :posting_id"), updates)
        connection.execute(
            sa.text("UPDATE accounts SET chain_head = :chain_head WHERE id = :account_id"),
            [{"account_id": key, "chain_head": value} for key, value in heads.items()],
        )


def downgrade() -> None:
    op.drop_column("accounts", "chain_head")
    op.drop_column("postings", "chain_hash")
