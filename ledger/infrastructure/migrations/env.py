"""Alembic environment. The connection is handed in through ``config.attributes``; no URL lives in config."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `ledger migrate`, which supplies the connection")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
