"""What the routes answer: each JSON body is the `model_dump()` of one of these (the ticket's
shapes live with the ticket, in core/tickets/view.py), and the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, Field

from core.events.catalog import EventStatus
from core.money import AmountText
from core.tickets.view import Answer, Receipt, RecordedOrder, omitted_when_none
from core.times import Moment

Role = Literal["buyer", "admin", "gate"]
Reachable = Literal["ok", "unreachable"]


def answer(model: BaseModel, status: int = 200) -> Response:
    response = jsonify(model.model_dump(mode="json"))
    response.status_code = status
    return response


class Error(Answer):
    error: str = Field(min_length=1)
    message: str = Field(min_length=1)
    remaining: int | None = omitted_when_none("units left (sold_out)")
    seats: list[str] | None = omitted_when_none("the seats refused (seats_unavailable)")


class User(Answer):
    id: int
    username: str


class Me(User):
    role: Role
    email: str | None


class AccessToken(Answer):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class Tokens(AccessToken):
    refresh_token: str


class Session(Me):
    expires_in: int


class Revoked(Answer):
    revoked: Literal[True]


class SignedOut(Answer):
    signed_out: Literal[True]


class Product(Answer):
    id: int
    name: str
    price: AmountText
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    initial_stock: int
    available: int | None
    max_per_user: int
    sale_starts_at: Moment
    sale_ends_at: Moment
    waiting_room: bool
    admit_per_second: int
    buckets: int = Field(description="the stock's buckets in Redis (see ProductCreate)")


class ProductList(Answer):
    products: list[Product]


class PurchaseAccepted(Receipt):
    status_url: str


class OrderPage(Answer):
    orders: list[RecordedOrder]
    page: int
    per_page: int
    total: int


class Cancelled(Answer):
    ticket_id: str
    status: Literal["cancelled", "refunded"]


class Inventory(Answer):
    product_id: int
    initial_stock: int
    available: int
    held: int
    sold: int
    sold_in_db: int
    consistent: bool
    settle_backlog: int


class LastReconciliation(Answer):
    result: str | None
    at: Moment
    sold_in_db: int | None
    expected_sold: int | None
    before: Any


class RoomRow(Answer):
    """A sale's waiting room on the operations page."""

    rate: int = Field(description="admissions a second")
    waiting: int
    admitted: int
    admissions: list[list[int]] = Field(description="[moment_ms, place], oldest first")


class ProductRow(Answer):
    """A product on the operations page: Redis' figures against SQL's."""

    id: int
    name: str
    price: AmountText
    currency: str
    initial_stock: int
    max_per_user: int
    sale_starts_at: Moment
    sale_ends_at: Moment
    in_redis: bool
    redis_error: bool
    initial: int | None
    available: int | None
    held: int | None
    sold: int | None
    sold_in_db: int
    sold_pending_in_db: int
    balanced: bool
    initial_matches: bool
    settle_backlog: int
    reconcile: LastReconciliation | None
    sales: list[list[int]] = Field(description="[time_ms, sold, held], oldest first")
    agree: bool
    room: RoomRow | None


class QueueFigures(Answer):
    """The settlement queue; only its name and status when Redis does not answer."""

    name: str
    status: Reachable
    queued: int | None = omitted_when_none()
    started: int | None = omitted_when_none()
    scheduled: int | None = omitted_when_none()
    deferred: int | None = omitted_when_none()
    failed: int | None = omitted_when_none()
    workers: int | None = omitted_when_none()


class Overview(Answer):
    generated_at: Moment
    redis: Reachable
    products: list[ProductRow]
    queue: QueueFigures
    last_reconcile_at: Moment


class Queued(Answer):
    job_id: str
    status: Literal["queued"]


class WebhookReceived(Answer):
    received: Literal[True]
    duplicate: bool | None = omitted_when_none("a delivery seen before")
    result: str | None = omitted_when_none("applied, ignored or a stale event")


class QueueCheck(Answer):
    status: Reachable
    depth: int | None = omitted_when_none()


class HealthChecks(Answer):
    database: Reachable
    redis: Reachable
    inventory: Reachable = Field(description="INVENTORY_REDIS_URL's Redis (or cluster)")
    queue: QueueCheck


class Health(Answer):
    status: Literal["ok", "unavailable"]
    failed: list[str] | None = omitted_when_none("what did not answer")
    checks: HealthChecks


class SectionAnswer(Answer):
    name: str
    price: AmountText
    kind: Literal["seated", "standing"]
    seats: int = Field(description="named seats, or standing places")


class EventAnswer(Answer):
    id: int
    title: str
    description: str
    category: str
    venue: str
    location: str
    image_url: str | None
    starts_at: Moment
    ends_at: Moment
    status: EventStatus
    currency: str
    max_per_user: int
    transfers_allowed: bool
    sale_starts_at: Moment
    sale_ends_at: Moment
    sections: list[SectionAnswer]


class EventList(Answer):
    events: list[EventAnswer]


class SearchHighlight(Answer):
    title: str = Field(description="the title, HTML-escaped, the matching words in <mark>")
    snippet: str = Field(
        description="up to 160 characters of the description around its first match, "
        "HTML-escaped, the matching words in <mark>"
    )


class SearchHit(Answer):
    id: int
    title: str
    venue: str
    location: str
    category: str
    status: EventStatus
    starts_at: Moment
    ends_at: Moment
    currency: str
    price_min: AmountText | None = Field(description="the cheapest section's price")
    price_max: AmountText | None = Field(description="the dearest section's price")
    available: int | None = Field(
        description="seats and places free now (null: not on sale, or unknown for now)"
    )
    highlight: SearchHighlight


class SearchPage(Answer):
    hits: list[SearchHit]
    page: int
    per_page: int
    has_more: bool
    sort: Literal["relevance", "date", "price"]
    fuzzy: bool = Field(
        description="no event holds every word: these titles are spelled like the query"
    )


class TitleSuggestion(Answer):
    title: str
    starts_at: Moment = Field(description="the soonest event of that title")


class Suggestions(Answer):
    suggestions: list[TitleSuggestion]


class SeatMapStored(Answer):
    event_id: int
    sections: int
    seats: int
    standing: int


class RowStates(Answer):
    name: str
    seats: int | list[int] = Field(description="a count (seats 1 to n) or the seat numbers")
    states: str = Field(description="a letter a seat, in order: f free, h held, s sold")


class SectionStates(Answer):
    name: str
    price: AmountText
    rows: list[RowStates]


class StandingPlaces(Answer):
    name: str
    available: int | None = Field(description="places left (null while Redis cannot say)")


class SeatMapStates(Answer):
    event_id: int
    version: int = Field(description="moves with every change: the ETag is made of it")
    sections: list[SectionStates]
    standing: list[StandingPlaces] = Field(default_factory=list)


class QueuePlace(Answer):
    """A buyer in a sale's waiting room. `queue_pass` once admitted (or at once without a room):
    send it as X-Queue-Pass with the purchase."""

    status: Literal["waiting", "queued", "admitted", "sold_out"]
    queue_id: str
    position: int | None = Field(description="null while waiting for the opening's draw")
    ahead: int | None
    estimated_wait_s: int | None
    poll_after_ms: int
    queue_pass: str | None = omitted_when_none("admitted: the pass to buy with")


class EntryTicketView(Answer):
    """A ticket to get in: one per unit (per seat) of a confirmed order."""

    id: str
    order_ticket_id: str = Field(description="the order (its ticket id) this ticket came with")
    product_id: int
    product_name: str
    event_id: int | None
    seat: str | None
    status: Literal["valid", "used", "void"]
    issued_at: Moment
    used_at: Moment | None
    code: str | None = Field(
        description="shown as the QR: good for its 15-second step and one either side"
    )
    code_seconds_left: int | None = Field(description="until the next code")


class EntryTicketPage(Answer):
    tickets: list[EntryTicketView]
    page: int
    per_page: int


class Transferred(Answer):
    id: str
    to: str


class ScanAnswer(Answer):
    result: Literal[
        "admitted", "invalid_code", "expired_code", "void", "already_used", "wrong_event"
    ]
    ticket_id: str | None
    seat: str | None
    used_at: Moment | None = Field(description="admitted, already_used: when it was admitted")
    used_gate_id: int | None = Field(description="already_used: the gate that admitted it")
