"""code sources: a deployment's git source, and the commit each run checked out

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("source", JSONType, nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("source_commit", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("source_commit")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("source")
