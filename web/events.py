"""Events with seat maps: admins create, edit, publish and cancel them and upload their seat
maps; everyone reads the published ones."""

from __future__ import annotations

from flask import Blueprint, Response, request
from flask_jwt_extended import jwt_required, verify_jwt_in_request
from redis.exceptions import RedisError

from core.events.cache import EventProducts
from core.events.catalog import (
    EventRefused,
    EventStatus,
    EventView,
    cancel_event,
    check_seat_map_may_change,
    create_event,
    get_event,
    list_events,
    publish_event,
    update_event,
)
from core.events.sale import event_products, put_on_sale
from core.events.seatmap import (
    SeatMapRefused,
    SeatMapSpec,
    replace_seat_map,
)
from core.inventory import BestAvailable
from core.models import Event
from web.answers import (
    EventAnswer,
    EventList,
    SeatMapStates,
    SeatMapStored,
    StandingPlaces,
    answer,
)
from web.apidoc import ADMIN_ERRORS, BODY_ERRORS, documented
from web.common import (
    admin_required,
    catalogue_changed,
    check_id,
    end_read,
    is_admin,
    parse_body,
    parse_headers,
    runtime,
)
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.mappers import event_answer, seat_map_states
from web.purchase import documented_purchase, reserve_and_answer
from web.schemas import EventCreate, EventUpdate, PurchaseHeaders, SeatPurchase

bp = Blueprint("events", __name__)
SEAT_MAP_MAX_BYTES = 8 * 1024 * 1024  # 100,000 seats with a rank each fit with room to spare


@bp.get("/events")
@documented("events", {200: EventList})
def index() -> Response:
    """Published and cancelled events, soonest first (drafts too for an admin)."""
    views = list_events(db.session, include_drafts=_viewer_is_admin())
    end_read()
    return answer(EventList(events=[event_answer(view) for view in views]))


@bp.get("/events/<int:event_id>")
@documented("events", {200: EventAnswer}, (404,))
def show(event_id: int) -> Response:
    """One event with its sections (a draft for an admin only)."""
    view = get_event(db.session, check_id(event_id, "event"), include_drafts=_viewer_is_admin())
    end_read()
    if view is None:
        raise ApiError(404, "not_found", "no such event")
    return answer(event_answer(view))


@bp.post("/events")
@admin_required
@documented(
    "admin", {201: EventAnswer}, (*BODY_ERRORS, *ADMIN_ERRORS), body=EventCreate, bearer=True
)
def create() -> Response:
    """Create an event, as a draft: upload its seat map, then publish it."""
    body = parse_body(EventCreate)
    fields = body.model_dump()
    fields["currency"] = body.currency or runtime().settings.default_currency
    event = create_event(db.session, **fields)
    db.session.commit()
    catalogue_changed()  # (admins search drafts too)
    return answer(event_answer(EventView(event, [])), 201)


@bp.patch("/events/<int:event_id>")
@admin_required
@documented(
    "admin",
    {200: EventAnswer},
    (*BODY_ERRORS, *ADMIN_ERRORS, 404, 409),
    body=EventUpdate,
    bearer=True,
)
def update(event_id: int) -> Response:
    """Change an event's details, times or sale window."""
    body = parse_body(EventUpdate)
    event = _event(event_id)
    _refusals(update_event, event, body.model_dump(exclude_unset=True))
    _sell(event, anew=False)  # the sale window and the limit follow
    return _answer_for(event_id)


@bp.post("/events/<int:event_id>/publish")
@admin_required
@documented("admin", {200: EventAnswer}, (*ADMIN_ERRORS, 404, 409), bearer=True)
def publish(event_id: int) -> Response:
    """Publish an event: everyone sees it (it needs its seat map)."""
    event = _event(event_id)
    _refusals(publish_event, db.session, event)
    _sell(event, anew=False)
    return _answer_for(event_id)


@bp.post("/events/<int:event_id>/cancel")
@admin_required
@documented("admin", {200: EventAnswer}, (*ADMIN_ERRORS, 404, 409), bearer=True)
def cancel(event_id: int) -> Response:
    """Cancel an event: it stays listed, as cancelled."""
    event = _event(event_id)
    _refusals(cancel_event, event)
    _sell(event, anew=False)  # its sale ends now
    return _answer_for(event_id)


@bp.put("/events/<int:event_id>/seatmap")
@admin_required
@documented(
    "admin",
    {200: SeatMapStored},
    (*BODY_ERRORS, *ADMIN_ERRORS, 404, 409),
    body=SeatMapSpec,
    bearer=True,
)
def put_seat_map(event_id: int) -> Response:
    """Replace the event's seat map (sections of rows of seats, or standing capacity).

    Up to 100,000 seats; refused with 409 once the sale has started (sale_started) or the
    event has an order, even one that ended (event_has_orders)."""
    request.max_content_length = SEAT_MAP_MAX_BYTES
    spec = parse_body(SeatMapSpec)
    event = _event(event_id)
    _refusals(check_seat_map_may_change, db.session, event, runtime().inventory)
    try:
        stored = replace_seat_map(db.session, event, spec)
    except SeatMapRefused as exc:
        db.session.rollback()
        raise ApiError(400, "invalid_request", str(exc)) from None
    _sell(event, anew=True, dropped=stored.dropped_products)
    return answer(
        SeatMapStored(
            event_id=event_id,
            sections=stored.sections,
            seats=stored.seats,
            standing=stored.standing,
        )
    )


@bp.post("/events/<int:event_id>/purchase")
@jwt_required()
@without_http_limit
@documented_purchase(SeatPurchase)
def purchase(event_id: int) -> Response:
    """Hold seats: those named (all or none), or the best available of a section, side by side
    when `together`, or places in a standing section. 202 with a ticket to poll, as any purchase.

    409 seats_unavailable names the seats that were taken; not_enough_seats and
    not_enough_adjacent say the section has no such seats free."""
    body = parse_body(SeatPurchase)
    headers = parse_headers(PurchaseHeaders, "invalid_idempotency_key")
    key, queue_pass = headers.idempotency_key, headers.queue_pass
    products = _products(check_id(event_id, "event"), body.section, body.seats is not None)
    if body.seats is not None:
        return reserve_and_answer(
            _seats_of(products), len(body.seats), body.payment_method, key, queue_pass, body.seats
        )
    assert body.section is not None and body.quantity is not None
    standing = products.standing.get(body.section)
    if standing is not None:  # places, not seats: any `together` is moot
        return reserve_and_answer(standing, body.quantity, body.payment_method, key, queue_pass)
    best = BestAvailable(body.section, body.together)
    return reserve_and_answer(
        _seats_of(products), body.quantity, body.payment_method, key, queue_pass, best=best
    )


@bp.get("/events/<int:event_id>/seats")
@documented("events", {200: SeatMapStates}, (404, 503), empty=(304,))
def seats(event_id: int) -> Response:
    """Every seat's state, row by row (a letter a seat), with the version to skip an unchanged
    map (ETag, If-None-Match: 304)."""
    products = _products(check_id(event_id, "event"))
    layout = runtime().event_cache.layout(db.session, event_id)
    end_read()
    assert layout is not None
    read = runtime().inventory.seat_states(_seats_of(products))
    if read is None:
        raise ApiError(503, "inventory_unavailable", "the seats are being rebuilt, retry shortly")
    version, states = read
    standing = runtime().inventory.available(list(products.standing.values()))
    places = [
        StandingPlaces(name=name, available=standing[product_id])
        for name, product_id in products.standing.items()
    ]
    left = ".".join(str(place.available) for place in places)
    etag = f"{layout.version}-{version}" + (f"-{left}" if left else "")
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        seat_map = seat_map_states(event_id, version, layout.sections, layout.currency, states)
        response = answer(seat_map.model_copy(update={"standing": places}))
    response.set_etag(etag)
    return response


def _products(event_id: int, section: str | None = None, seats: bool = False) -> EventProducts:
    found = runtime().event_cache.products(db.session, event_id, section, seats)
    end_read()
    if found is None:
        raise ApiError(404, "not_found", "no such event")
    return found


def _seats_of(products: EventProducts) -> int:
    if products.seats is None:
        raise ApiError(404, "not_found", "this event has no seats")
    return products.seats


def _sell(event: Event, *, anew: bool, dropped: list[int] | None = None) -> None:
    """Commits the event's change; a published (or cancelled) event's products follow it in
    SQL, then in Redis. Redis not answering: 503, and the sweep brings Redis to SQL."""
    products = [] if event.status == EventStatus.DRAFT else event_products(db.session, event)
    db.session.commit()
    runtime().event_cache.forget(event.id)
    try:
        catalogue_changed()
        for product_id in dropped or []:
            runtime().inventory.drop_stock(product_id)
        put_on_sale(runtime().inventory, runtime().sessions, products, anew=anew)
    except RedisError:
        raise ApiError(
            503, "inventory_unavailable", "saved; the sale follows once Redis answers"
        ) from None
    finally:
        end_read()


def _viewer_is_admin() -> bool:
    verify_jwt_in_request(optional=True)
    return is_admin()


def _event(event_id: int) -> Event:
    event = db.session.get(Event, check_id(event_id, "event"))
    if event is None:
        raise ApiError(404, "not_found", "no such event")
    return event


def _refusals(change, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        change(*args)
    except EventRefused as refused:
        db.session.rollback()
        raise ApiError(refused.status, refused.code, refused.message) from None


def _answer_for(event_id: int) -> Response:
    view = get_event(db.session, event_id, include_drafts=True)
    end_read()
    assert view is not None
    return answer(event_answer(view))
