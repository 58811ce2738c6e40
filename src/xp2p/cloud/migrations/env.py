"""alembic's entry point for the registry: always on the connection ``AccountDatabase.migrate``
hands over (its async engine, run synchronously inside ``run_sync``), never from a URL in a
config file, so the one place that knows the database URL is the cloud's ``--db``."""

from __future__ import annotations

from alembic import context

from xp2p.cloud.account_db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the registry's migrations through xp2p.cloud.account_db")
# render_as_batch: SQLite alters a table by copying it; alembic's batch mode does that.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
