"""a waiting room in front of a product's sale

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 06:40:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("waiting_room", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("admit_per_second", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade():
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("admit_per_second")
        batch_op.drop_column("waiting_room")
