"""The registry's schema migrations (alembic), run by ``AccountDatabase.migrate``."""
