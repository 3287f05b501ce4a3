"""API keys: only an HMAC of each secret is stored; revocation is the one change a key sees.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.Text, nullable=True),
        sa.CheckConstraint("role IN ('read','write','admin')", name="ck_api_keys_role_known"),
        sa.CheckConstraint("id ~ '^[a-z0-9]{16}$'", name="ck_api_keys_id_format"),
        sa.CheckConstraint("length(secret_hash) = 64", name="ck_api_keys_secret_hash_length"),
        sa.CheckConstraint("(revoked_at IS NULL) = (revoked_by IS NULL)", name="ck_api_keys_revocation_complete"),
    )
    op.create_index("ix_api_keys_tenant_id_created_at", "api_keys", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_table("api_keys")
