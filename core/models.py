"""SQL tables: the source of truth for users, products, orders and payments."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20), default="buyer")
    email: Mapped[str | None] = mapped_column(String(254))  # where the buyer's mail goes
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    initial_stock: Mapped[int] = mapped_column(Integer)
    max_per_user: Mapped[int] = mapped_column(Integer)
    sale_starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sale_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # Raised by every change of the terms Redis enforces (window, limit, price, stock), so that
    # Redis never takes older terms over newer ones, whoever applies them.
    terms_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The event whose seats this product sells, or the standing section whose places it sells
    # (both created when the event is published); neither for a plain product.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"), unique=True)
    section_id: Mapped[int | None] = mapped_column(ForeignKey("event_sections.id"), unique=True)
    # A waiting room in front of the sale, admitting this many buyers a second.
    waiting_room: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    admit_per_second: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A hot product's stock split across this many buckets in Redis, each its own hash tag (a
    # Redis Cluster spreads them over its primaries); set at creation, never changed.
    buckets: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_product_status", "product_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    failure_reason: Mapped[str | None] = mapped_column(String(200))
    payment_method: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    # The waiting room pass the order bought with (product:buyer:epoch:place): a rebuilt stock
    # keeps it used.
    queue_pass: Mapped[str | None] = mapped_column(String(64))
    bucket: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )  # see Product.buckets
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevokedToken(Base):
    """A logged-out token, kept until it would have expired anyway (Redis holds a copy)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class WebhookEvent(Base):
    """Provider events handled already: a replayed or duplicated event is acknowledged only."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Payment(Base):
    """One payment intent per order; never card data, only the provider's references."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("provider", "intent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("orders.ticket_id"), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    intent_id: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    amount_refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(40))
    client_secret: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """A show with a seat map: a draft until published, then listed (cancelled ones too)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_status_starts", "status", "starts_at"),
        Index("ix_events_status_category_starts", "status", text("lower(category)"), "starts_at"),
        # Search's full-text indexes are the database's own (migration 0008): PostgreSQL's
        # generated search_vector with GIN and pg_trgm, SQLite's FTS5 table event_search.
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(50), default="")
    venue: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(200), default="")
    image_url: Mapped[str | None] = mapped_column(String(500))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    max_per_user: Mapped[int] = mapped_column(Integer, default=0)
    sale_starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sale_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The cheapest and dearest section's price (from its seat map), for search's price filter.
    price_min_minor: Mapped[int | None] = mapped_column(BigInteger)
    price_max_minor: Mapped[int | None] = mapped_column(BigInteger)
    # Whether buyers may give their entry tickets to others.
    transfers_allowed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class EventSection(Base):
    """A part of an event's seat map with one price: rows of seats, or standing `capacity`."""

    __tablename__ = "event_sections"
    __table_args__ = (UniqueConstraint("event_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    name: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer)
    price_minor: Mapped[int] = mapped_column(BigInteger)
    capacity: Mapped[int | None] = mapped_column(Integer)
    seat_count: Mapped[int] = mapped_column(Integer)


class Seat(Base):
    """A named seat (`label`, e.g. A-12-7); `rank` orders best available, lower first."""

    __tablename__ = "seats"
    __table_args__ = (
        UniqueConstraint("event_id", "label"),
        Index("ix_seats_section_rank", "section_id", "rank"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    section_id: Mapped[int] = mapped_column(ForeignKey("event_sections.id"))
    label: Mapped[str] = mapped_column(String(40))
    row: Mapped[str] = mapped_column(String(10))
    number: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(BigInteger)


class OrderSeat(Base):
    """A seat an order holds or bought. `live` while the order is open or confirmed: the
    database itself refuses one seat in two live orders, whatever Redis says."""

    __tablename__ = "order_seats"
    __table_args__ = (
        Index(
            "uq_order_seats_live_seat",
            "event_id",
            "label",
            unique=True,
            postgresql_where=text("live"),
            sqlite_where=text("live"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("orders.ticket_id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    label: Mapped[str] = mapped_column(String(40))
    live: Mapped[bool] = mapped_column(Boolean, default=True)


class EntryTicket(Base):
    """One admission per unit (per seat) of a confirmed order. Its `secret` makes the rotating
    codes the gate checks; a transfer gives it a new holder and a new secret."""

    __tablename__ = "entry_tickets"
    __table_args__ = (
        UniqueConstraint("order_ticket_id", "unit"),
        Index("ix_entry_tickets_user_issued", "user_id", "issued_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_ticket_id: Mapped[str] = mapped_column(ForeignKey("orders.ticket_id"))
    unit: Mapped[int] = mapped_column(Integer)  # 0.. within the order: issuing twice is a no-op
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    seat: Mapped[str | None] = mapped_column(String(40))
    secret: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))  # valid, used, void
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_gate_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class GateScan(Base):
    """Every scan at a gate, whatever its answer."""

    __tablename__ = "gate_scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_ticket_id: Mapped[str | None] = mapped_column(ForeignKey("entry_tickets.id"), index=True)
    gate_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    event_id: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(20))
    scanned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxMessage(Base):
    """A mail to send, written in the transaction of the change it tells of; the sender marks
    it sent. `key` makes writing it twice a no-op; the Message-ID comes from `id`."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    to_address: Mapped[str] = mapped_column(String(254))
    context: Mapped[str] = mapped_column(Text)  # JSON: what the template says
    # pending, sent; failed (cannot be composed), dropped (a reminder with no one to remind)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
