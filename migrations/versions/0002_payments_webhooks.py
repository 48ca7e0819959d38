"""client secret on payments; provider webhook events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:10:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_secret", sa.String(length=255), nullable=True))
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )


def downgrade():
    op.drop_table("webhook_events")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("client_secret")
