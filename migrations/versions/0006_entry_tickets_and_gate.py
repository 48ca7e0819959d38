"""entry tickets issued for confirmed orders, the gate's scans, events that forbid transfers

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:10:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("transfers_allowed", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_table(
        "entry_tickets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_ticket_id", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("seat", sa.String(length=40), nullable=True),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_gate_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_ticket_id"], ["orders.ticket_id"],
            name=op.f("fk_entry_tickets_order_ticket_id_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_entry_tickets_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["used_gate_id"], ["users.id"], name=op.f("fk_entry_tickets_used_gate_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_entry_tickets_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_entry_tickets_event_id_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entry_tickets")),
        sa.UniqueConstraint(
            "order_ticket_id", "unit", name=op.f("uq_entry_tickets_order_ticket_id")
        ),
    )  # fmt: skip
    op.create_index(
        "ix_entry_tickets_user_issued", "entry_tickets", ["user_id", "issued_at"], unique=False
    )
    op.create_table(
        "gate_scans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_ticket_id", sa.String(length=32), nullable=True),
        sa.Column("gate_user_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_ticket_id"], ["entry_tickets.id"],
            name=op.f("fk_gate_scans_entry_ticket_id_entry_tickets"),
        ),
        sa.ForeignKeyConstraint(
            ["gate_user_id"], ["users.id"], name=op.f("fk_gate_scans_gate_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_scans")),
    )  # fmt: skip
    op.create_index(
        op.f("ix_gate_scans_entry_ticket_id"), "gate_scans", ["entry_ticket_id"], unique=False
    )


def downgrade():
    op.drop_index(op.f("ix_gate_scans_entry_ticket_id"), table_name="gate_scans")
    op.drop_table("gate_scans")
    op.drop_index("ix_entry_tickets_user_issued", table_name="entry_tickets")
    op.drop_table("entry_tickets")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("transfers_allowed")
