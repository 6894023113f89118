"""dispatch at scale: shared rate-limit state, service leases, submit tries per attempt

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rate_limit_state",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("state", JSONType, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_state")),
    )
    op.create_table(
        "service_leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_leases")),
    )
    with op.batch_alter_table("run_attempts") as batch:
        batch.add_column(sa.Column("tries", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_run_attempts_cleaned_up_at", ["cleaned_up_at"])
        batch.create_index("ix_run_attempts_lease_expires_at", ["lease_expires_at"])
    # The next retry time, read by every idle dispatcher pass.
    op.create_index("ix_runs_not_before", "runs", ["not_before"])


def downgrade() -> None:
    op.drop_index("ix_runs_not_before", table_name="runs")
    with op.batch_alter_table("run_attempts") as batch:
        batch.drop_index("ix_run_attempts_lease_expires_at")
        batch.drop_index("ix_run_attempts_cleaned_up_at")
        batch.drop_column("tries")
    op.drop_table("service_leases")
    op.drop_table("rate_limit_state")
