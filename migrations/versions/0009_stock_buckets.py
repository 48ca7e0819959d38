"""a hot product's stock split across buckets, each order recording the bucket it was sold from

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 16:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("buckets", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bucket", sa.Integer(), nullable=False, server_default="0"))


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("bucket")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("buckets")
