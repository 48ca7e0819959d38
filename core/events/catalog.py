"""Events in SQL: created as drafts, edited, published, cancelled; who may see which."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.events.sale import event_has_orders
from core.inventory import Inventory
from core.models import Event, EventSection
from core.times import aware


class EventStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CANCELLED = "cancelled"


class EventRefused(ValueError):
    """The change does not apply to the event as it is: 409, or 400 for times out of order."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class EventView:
    """An event with its sections, as listings and the event's page show it."""

    event: Event
    sections: list[EventSection]


def create_event(session: Session, **fields: Any) -> Event:
    event = Event(status=EventStatus.DRAFT.value, **fields)
    session.add(event)
    session.flush()
    return event


def update_event(event: Event, changes: dict[str, Any]) -> None:
    if event.status == EventStatus.CANCELLED:
        raise EventRefused("event_cancelled", "a cancelled event does not change")
    for name, value in changes.items():
        setattr(event, name, value)
    _check_times(event)


def publish_event(session: Session, event: Event) -> None:
    if event.status == EventStatus.CANCELLED:
        raise EventRefused("event_cancelled", "a cancelled event cannot be published")
    if not sections_of(session, [event.id])[event.id]:
        raise EventRefused("no_seat_map", "upload the seat map before publishing")
    event.status = EventStatus.PUBLISHED.value


def cancel_event(event: Event) -> None:
    if event.status == EventStatus.CANCELLED:
        raise EventRefused("event_cancelled", "the event is cancelled already")
    event.status = EventStatus.CANCELLED.value


def check_seat_map_may_change(
    session: Session, event: Event, inventory: Inventory, now: datetime | None = None
) -> None:
    """The map is the event's until its sale starts; a cancelled event keeps its own. Once the
    event has an order (in SQL, or a purchase Redis accepted and no settler wrote yet) the map
    stays, even if the sale is put off: a new one would set its stock up anew, and a section
    dropped would take its orders' product with it. Redis not answering: RedisError."""
    if event.status == EventStatus.CANCELLED:
        raise EventRefused("event_cancelled", "a cancelled event keeps its seat map")
    if event.status == EventStatus.PUBLISHED and sale_started(event, now):
        raise EventRefused("sale_started", "the sale has started: the seat map is fixed")
    if event_has_orders(session, event.id, inventory):
        raise EventRefused("event_has_orders", "the event has orders: the seat map is fixed")


def sale_started(event: Event, now: datetime | None = None) -> bool:
    starts = aware(event.sale_starts_at)
    return starts is None or starts <= (now or datetime.now(UTC))


def get_event(session: Session, event_id: int, *, include_drafts: bool) -> EventView | None:
    event = session.get(Event, event_id)
    if event is None or not (include_drafts or event.status != EventStatus.DRAFT):
        return None
    return EventView(event, sections_of(session, [event.id])[event.id])


def list_events(session: Session, *, include_drafts: bool) -> list[EventView]:
    """Soonest first; drafts for admins only."""
    query = select(Event).order_by(Event.starts_at, Event.id)
    if not include_drafts:
        query = query.where(Event.status != EventStatus.DRAFT.value)
    events = list(session.scalars(query))
    sections = sections_of(session, [event.id for event in events])
    return [EventView(event, sections[event.id]) for event in events]


def event_categories(session: Session) -> list[str]:
    """The categories of published events, for the search page's filter."""
    query = (
        select(Event.category)
        .where(Event.status == EventStatus.PUBLISHED.value, Event.category != "")
        .distinct()
        .order_by(Event.category)
    )
    return list(session.scalars(query))


def sections_of(session: Session, event_ids: list[int]) -> dict[int, list[EventSection]]:
    """Each event's sections in the map's order (batch-first: one query for any number)."""
    found: dict[int, list[EventSection]] = {event_id: [] for event_id in event_ids}
    if event_ids:
        query = (
            select(EventSection)
            .where(EventSection.event_id.in_(event_ids))
            .order_by(EventSection.event_id, EventSection.position)
        )
        for section in session.scalars(query):
            found[section.event_id].append(section)
    return found


def _check_times(event: Event) -> None:
    starts, ends = aware(event.starts_at), aware(event.ends_at)
    if starts and ends and ends <= starts:
        raise EventRefused("invalid_request", "ends_at must be after starts_at", 400)
    sale_starts, sale_ends = aware(event.sale_starts_at), aware(event.sale_ends_at)
    if sale_starts and sale_ends and sale_ends <= sale_starts:
        raise EventRefused("invalid_request", "sale_ends_at must be after sale_starts_at", 400)
