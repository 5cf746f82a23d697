"""Alembic environment: runs migrations on the connection `divert.schema.migrate`
hands over (no alembic.ini, no URL of its own)."""

from alembic import context

from divert.schema.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
