"""schedules: cron, interval and RRULE schedules per deployment, one run per schedule and time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("interval_seconds", sa.BigInteger(), nullable=True),
        sa.Column("rrule", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("anchor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parameters", JSONType, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("catchup", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("materialized_through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_fill_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_schedules_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_deployment_id", "schedules", ["deployment_id"])
    op.create_table(
        "scheduler_checkpoints",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("missed_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_checkpoints")),
    )
    op.create_index("ix_schedules_next_fill_at", "schedules", ["next_fill_at"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("schedule_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_runs_schedule_id_schedules",
            "schedules",
            ["schedule_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_unique_constraint("uq_runs_schedule_time", ["schedule_id", "scheduled_time"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_schedule_time", type_="unique")
        batch.drop_constraint("fk_runs_schedule_id_schedules", type_="foreignkey")
        batch.drop_column("schedule_id")
    op.drop_table("scheduler_checkpoints")
    op.drop_index("ix_schedules_next_fill_at", table_name="schedules")
    op.drop_index("ix_schedules_deployment_id", table_name="schedules")
    op.drop_table("schedules")
