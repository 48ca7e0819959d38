"""Orders in SQL and their state machine. State changes are single atomic UPDATE ... WHERE
statements, so concurrent settlers never overwrite each other."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction, upsert
from core.entry.tickets import issue_tickets, void_tickets
from core.inventory import Hold
from core.keys import bucket_of_ticket, bucket_order
from core.mail.outbox import queue_order_mail
from core.models import Order, OrderSeat, Payment, WebhookEvent, utcnow
from core.payments import PaymentIntent
from core.tickets import OPEN_STATUSES, OrderStatus
from core.times import from_ms

S = OrderStatus
# Which states an order may move into, from which states.
ALLOWED_FROM: dict[OrderStatus, tuple[str, ...]] = {
    S.PROCESSING: (S.RESERVED,),
    S.REQUIRES_ACTION: (S.PROCESSING,),
    S.CONFIRMED: OPEN_STATUSES,
    S.FAILED: OPEN_STATUSES,
    S.EXPIRED: OPEN_STATUSES,
    S.CANCELLED: (*OPEN_STATUSES, S.CONFIRMED),
    S.REFUNDED: (*OPEN_STATUSES, S.CONFIRMED, S.EXPIRED, S.CANCELLED),
}


# The states in which an order keeps its seats: any other gives them back.
HOLDS_SEATS: tuple[str, ...] = (*OPEN_STATUSES, S.CONFIRMED)


def record_orders(
    session: Session,
    holds: list[tuple[Hold, OrderStatus]],
    product_id: int,
    currency: str,
    event_id: int | None = None,
) -> set[str]:
    """Inserts the orders of holds once each, in one statement; a second call for the same
    ticket changes nothing. A seated product's orders (`event_id`) get their seats as rows;
    answers the tickets the database refused a seat to (another live order has it)."""
    if not holds:
        return set()
    now = utcnow()
    rows = [
        {
            "ticket_id": hold.ticket_id,
            "user_id": hold.user_id,
            "product_id": product_id,
            "quantity": hold.quantity,
            "amount_minor": hold.amount_minor,
            "currency": currency,
            "status": status.value,
            "failure_reason": hold.reason if status.is_terminal else None,
            "payment_method": hold.payment_method,
            "idempotency_key": hold.idempotency_key,
            "queue_pass": hold.queue_pass,
            "bucket": bucket_of_ticket(hold.ticket_id),
            "expires_at": from_ms(hold.deadline_ms),
            "created_at": from_ms(hold.created_ms),
            "updated_at": now,
        }
        for hold, status in holds
    ]
    # Parameters apart from the statement: compiled once, sent in batches (insertmanyvalues).
    statement = upsert(session, Order).on_conflict_do_nothing(index_elements=["ticket_id"])
    inserted = (
        session.connection()
        .execute(statement.returning(statement.table.c.ticket_id, statement.table.c.status), rows)
        .all()
    )
    refused = (
        set()
        if event_id is None
        else _record_seats(session, [(h, s) for h, s in holds if h.seats], event_id)
    )
    # An order recorded final at once has its entry tickets and its mail in the same transaction.
    issue_tickets(
        session, [t for t, status in inserted if status == S.CONFIRMED and t not in refused]
    )
    for final in {status for _, status in inserted}:
        queue_order_mail(
            session, [t for t, status in inserted if status == final and t not in refused], S(final)
        )
    return refused


def _record_seats(
    session: Session, holds: list[tuple[Hold, OrderStatus]], event_id: int
) -> set[str]:
    """The orders' seats, once each; a seat another live order has is not recorded, and its
    ticket is answered."""
    if not holds:
        return set()
    rows = [
        {"ticket_id": hold.ticket_id, "event_id": event_id, "label": label, "live": live}
        for hold, status in holds
        for live in [status.value in HOLDS_SEATS]
        for label in hold.seats
    ]
    tickets = [hold.ticket_id for hold, _ in holds]
    present = set(
        session.execute(
            select(OrderSeat.ticket_id, OrderSeat.label).where(OrderSeat.ticket_id.in_(tickets))
        ).all()
    )
    fresh = [row for row in rows if (row["ticket_id"], row["label"]) not in present]
    statement = upsert(session, OrderSeat).on_conflict_do_nothing(
        index_elements=["event_id", "label"], index_where=OrderSeat.live
    )
    recorded = (
        {
            (row.ticket_id, row.label)
            for row in session.execute(
                statement.returning(OrderSeat.ticket_id, OrderSeat.label), fresh
            )
        }
        if fresh
        else set()
    )
    return {
        row["ticket_id"]
        for row in fresh
        if row["live"] and (row["ticket_id"], row["label"]) not in recorded
    }


def transition(
    session: Session, ticket_ids: list[str], to: OrderStatus, reason: str | None = None
) -> int:
    """Moves the orders whose current state allows it to `to`, in one statement; answers how
    many moved."""
    if not ticket_ids:
        return 0
    values: dict[str, object] = {"status": to.value, "updated_at": utcnow()}
    if reason is not None:
        values["failure_reason"] = reason
    moved = list(session.scalars(
        update(Order)
        .where(Order.ticket_id.in_(ticket_ids), Order.status.in_(ALLOWED_FROM[to]))
        .values(**values)
        .returning(Order.ticket_id)
    ))  # fmt: skip
    if to not in HOLDS_SEATS and moved:
        _release_seats(session, ticket_ids)
    # The entry tickets and the buyer's mail change with the order, in its transaction.
    if to is S.CONFIRMED:
        issue_tickets(session, moved)
    elif to in (S.REFUNDED, S.CANCELLED):
        void_tickets(session, moved)
    queue_order_mail(session, moved, to)
    return len(moved)


def order_seats(session: Session, ticket_ids: list[str]) -> dict[str, list[str]]:
    """The seats each order has (or had), by ticket."""
    found: dict[str, list[str]] = {}
    if ticket_ids:
        rows = session.execute(
            select(OrderSeat.ticket_id, OrderSeat.label)
            .where(OrderSeat.ticket_id.in_(ticket_ids))
            .order_by(OrderSeat.id)
        )
        for ticket, label in rows:
            found.setdefault(ticket, []).append(label)
    return found


def live_seat_orders(session: Session, event_id: int) -> dict[str, tuple[str, str]]:
    """Seat label -> (ticket, status) of the event's live orders."""
    rows = session.execute(
        select(OrderSeat.label, OrderSeat.ticket_id, Order.status)
        .join(Order, Order.ticket_id == OrderSeat.ticket_id)
        .where(OrderSeat.event_id == event_id, OrderSeat.live)
    )
    return {label: (ticket, status) for label, ticket, status in rows}


def live_seats(session: Session, event_id: int) -> dict[str, str]:
    """Seat label -> ticket of the event's live orders."""
    rows = session.execute(
        select(OrderSeat.label, OrderSeat.ticket_id).where(
            OrderSeat.event_id == event_id, OrderSeat.live
        )
    )
    return {label: ticket for label, ticket in rows}


def _release_seats(session: Session, ticket_ids: list[str]) -> None:
    """The seats of those orders that are no longer open or confirmed."""
    released = select(Order.ticket_id).where(
        Order.ticket_id.in_(ticket_ids), Order.status.not_in(HOLDS_SEATS)
    )
    session.execute(
        update(OrderSeat)
        .where(OrderSeat.live, OrderSeat.ticket_id.in_(released))
        .values(live=False)
    )


def get_order(session: Session, ticket_id: str) -> Order | None:
    return session.scalar(select(Order).where(Order.ticket_id == ticket_id))


def get_payment(session: Session, ticket_id: str) -> Payment | None:
    return session.scalar(select(Payment).where(Payment.ticket_id == ticket_id))


def record_payments(session: Session, payments: list[tuple[str, str, PaymentIntent]]) -> None:
    """Keeps each (ticket, provider, intent)'s intent id (never card data), in one statement;
    later calls update its status."""
    if not payments:
        return
    now = utcnow()
    rows = [
        {
            "ticket_id": ticket_id,
            "provider": provider,
            "intent_id": intent.id,
            "amount_minor": intent.amount_minor,
            "amount_refunded_minor": intent.amount_refunded_minor,
            "currency": intent.currency,
            "status": intent.status,
            "client_secret": intent.client_secret,
            "created_at": now,
            "updated_at": now,
        }
        for ticket_id, provider, intent in payments
    ]
    statement = upsert(session, Payment)
    session.connection().execute(
        statement.on_conflict_do_update(
            index_elements=["ticket_id"],
            set_={
                "status": statement.excluded.status,
                "client_secret": statement.excluded.client_secret,
                "amount_refunded_minor": statement.excluded.amount_refunded_minor,
                "updated_at": now,
            },
            # A ticket's payment is its first intent: another one never overwrites it.
            where=statement.table.c.intent_id == statement.excluded.intent_id,
        ).returning(statement.table.c.id),
        rows,
    )


def store_payments(
    sessions: sessionmaker[Session], rows: list[tuple[str, str, PaymentIntent]]
) -> None:
    """record_payments in a transaction of its own."""
    if rows:
        with transaction(sessions) as session:
            record_payments(session, rows)


def get_payments(session: Session, ticket_ids: list[str]) -> dict[str, Payment]:
    if not ticket_ids:
        return {}
    rows = session.scalars(select(Payment).where(Payment.ticket_id.in_(ticket_ids)))
    return {p.ticket_id: p for p in rows}


def list_orders(session: Session, user_id: int, limit: int, offset: int) -> tuple[list[Order], int]:
    rows = session.scalars(
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(select(func.count()).where(Order.user_id == user_id)) or 0
    return list(rows), total


def confirmed_quantity(session: Session, product_id: int, bucket: int = 0) -> int:
    """Units confirmed (of one bucket of a split product: each bucket is a stock of its own)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Order.quantity), 0)).where(
            Order.product_id == product_id,
            Order.status == S.CONFIRMED.value,
            Order.bucket == bucket,
        )
    )
    return int(total or 0)


def statuses_of(session: Session, ticket_ids: list[str]) -> dict[str, str]:
    """The status SQL has for each of these tickets that it knows."""
    if not ticket_ids:
        return {}
    rows = session.execute(
        select(Order.ticket_id, Order.status).where(Order.ticket_id.in_(ticket_ids))
    )
    return {ticket: status for ticket, status in rows}


def idempotency_keys(
    session: Session, product_id: int, bucket: int = 0, buckets: int = 1
) -> dict[str, str]:
    """'user:key' -> ticket for the bucket's orders placed with an Idempotency-Key; for a split
    product also '>' (moved on) for the keys of orders that the buyer's purchase found in a
    later bucket of its order, as reserve.lua marks them."""
    rows = session.execute(
        select(Order.user_id, Order.idempotency_key, Order.ticket_id, Order.bucket).where(
            Order.product_id == product_id, Order.idempotency_key.is_not(None)
        )
    )
    keys: dict[str, str] = {}
    for user, key, ticket, sold_from in rows:
        if sold_from == bucket:
            keys[f"{user}:{key}"] = ticket
        elif buckets > 1:
            order = bucket_order(int(user), buckets)
            if order.index(bucket) < order.index(sold_from):
                keys[f"{user}:{key}"] = ">"
    return keys


def open_orders(session: Session, product_id: int, bucket: int = 0) -> list[Order]:
    return list(
        session.scalars(
            select(Order).where(
                Order.product_id == product_id,
                Order.status.in_(OPEN_STATUSES),
                Order.bucket == bucket,
            )
        )
    )


def counted_orders(
    session: Session, product_id: int, bucket: int = 0, buckets: int = 1
) -> dict[str, tuple[int, int, str]]:
    """Orders the per-user limit counts (open or confirmed): ticket -> (user, quantity,
    status). A split product's bucket counts its own buyers' orders (see
    core.keys.bucket_order), from whichever bucket they were sold."""
    rows = session.execute(
        select(Order.ticket_id, Order.user_id, Order.quantity, Order.status).where(
            _counted_in(product_id, bucket, buckets)
        )
    )
    return {ticket: (int(user), int(qty), status) for ticket, user, qty, status in rows}


def used_passes(session: Session, product_id: int, bucket: int = 0, buckets: int = 1) -> set[str]:
    """The waiting room passes the bucket's orders bought with, however they ended: a pass buys
    once, as Redis keeps it used once its purchase held units (see reserve.lua)."""
    return set(
        session.scalars(
            select(Order.queue_pass).where(
                _of_bucket(product_id, bucket, buckets), Order.queue_pass.is_not(None)
            )
        )
    )


def _of_bucket(product_id: int, bucket: int, buckets: int) -> ColumnElement[bool]:
    """A bucket's orders: a split product's bucket, its own buyers' (see core.keys.bucket_order),
    from whichever bucket they were sold."""
    mine = Order.bucket == bucket if buckets == 1 else Order.user_id % buckets == bucket
    return and_(Order.product_id == product_id, mine)


def _counted_in(product_id: int, bucket: int, buckets: int) -> ColumnElement[bool]:
    """The orders a bucket counts (open or confirmed)."""
    return and_(
        _of_bucket(product_id, bucket, buckets),
        Order.status.in_((*OPEN_STATUSES, S.CONFIRMED.value)),
    )


def get_payment_by_intent(session: Session, provider: str, intent_id: str) -> Payment | None:
    return session.scalar(
        select(Payment).where(Payment.provider == provider, Payment.intent_id == intent_id)
    )


def event_seen(session: Session, event_id: str) -> bool:
    return session.get(WebhookEvent, event_id) is not None


def record_event(session: Session, provider: str, event_id: str, event_type: str) -> None:
    """Remembers a handled provider event (a second record of the same id changes nothing)."""
    session.execute(
        upsert(session, WebhookEvent)
        .values(id=event_id, provider=provider, type=event_type, received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
