"""Apps, devices and the registry's revision counter.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),  # sealed (xp2p.cloud.secret_box)
        sa.Column("products", sa.JSON, nullable=False),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("cors_origins", sa.JSON, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("device_name", sa.String(64), primary_key=True),
        sa.Column("secret", sa.Text, nullable=True),  # sealed; TOML-seeded devices only
        sa.Column("public_key", sa.LargeBinary(32), nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    revision_table = op.create_table(
        "registry_revision",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(revision_table, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("registry_revision")
    op.drop_table("devices")
    op.drop_table("apps")
