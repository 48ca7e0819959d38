"""events, their sections and seats; the seats of orders; the product selling an event's seats

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 06:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("venue", sa.String(length=200), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=False),
        sa.Column("image_url", sa.String(length=500), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("max_per_user", sa.Integer(), nullable=False),
        sa.Column("sale_starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sale_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_status_starts", "events", ["status", "starts_at"])
    op.create_table(
        "event_sections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("seat_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_event_sections_event_id_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_sections")),
        sa.UniqueConstraint("event_id", "name", name=op.f("uq_event_sections_event_id")),
    )
    op.create_table(
        "seats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("section_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=40), nullable=False),
        sa.Column("row", sa.String(length=10), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_seats_event_id_events")),
        sa.ForeignKeyConstraint(
            ["section_id"], ["event_sections.id"], name=op.f("fk_seats_section_id_event_sections")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seats")),
        sa.UniqueConstraint("event_id", "label", name=op.f("uq_seats_event_id")),
    )
    op.create_index("ix_seats_section_rank", "seats", ["section_id", "rank"])
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(op.f("uq_products_event_id"), ["event_id"])
        batch_op.create_foreign_key(
            op.f("fk_products_event_id_events"), "events", ["event_id"], ["id"]
        )
        batch_op.add_column(sa.Column("section_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(op.f("uq_products_section_id"), ["section_id"])
        batch_op.create_foreign_key(
            op.f("fk_products_section_id_event_sections"),
            "event_sections",
            ["section_id"],
            ["id"],
        )
    op.create_table(
        "order_seats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=40), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["orders.ticket_id"], name=op.f("fk_order_seats_ticket_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_order_seats_event_id_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_seats")),
    )
    op.create_index("ix_order_seats_ticket_id", "order_seats", ["ticket_id"])
    # One seat in at most one live order: the database refuses a second, whatever Redis says.
    op.create_index(
        "uq_order_seats_live_seat",
        "order_seats",
        ["event_id", "label"],
        unique=True,
        postgresql_where=sa.text("live"),
        sqlite_where=sa.text("live"),
    )


def downgrade():
    op.drop_index("uq_order_seats_live_seat", table_name="order_seats")
    op.drop_index("ix_order_seats_ticket_id", table_name="order_seats")
    op.drop_table("order_seats")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_products_section_id_event_sections"), type_="foreignkey"
        )
        batch_op.drop_constraint(op.f("uq_products_section_id"), type_="unique")
        batch_op.drop_column("section_id")
        batch_op.drop_constraint(op.f("fk_products_event_id_events"), type_="foreignkey")
        batch_op.drop_constraint(op.f("uq_products_event_id"), type_="unique")
        batch_op.drop_column("event_id")
    op.drop_index("ix_seats_section_rank", table_name="seats")
    op.drop_table("seats")
    op.drop_table("event_sections")
    op.drop_index("ix_events_status_starts", table_name="events")
    op.drop_table("events")
