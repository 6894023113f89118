"""workers: pull workers and their heartbeats, push pools' fallback to workers, and which
attempts a worker made

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("fallback", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("fallback_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fallback_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("run_attempts") as batch:
        batch.add_column(
            sa.Column("by_worker", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "workers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "pool_id", sa.Uuid(), sa.ForeignKey("pools.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("limit", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("pool_id", "name", name="uq_workers_pool_name"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("run_attempts") as batch:
        batch.drop_column("by_worker")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("fallback_reason")
        batch.drop_column("fallback_since")
        batch.drop_column("fallback")
