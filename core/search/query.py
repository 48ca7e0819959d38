"""What a search asks (words, filters, order, page) and what it finds, whatever the database."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, nulls_last
from sqlalchemy.sql.elements import UnaryExpression

from core.events.catalog import EventStatus
from core.models import Event


class SearchSort(enum.StrEnum):
    RELEVANCE = "relevance"
    DATE = "date"
    PRICE = "price"


@dataclass(frozen=True)
class EventSearch:
    """An empty `text` lists by date. Price bounds are in `currency`'s minor units and keep the
    events sold in it with a ticket in the range; `statuses` empty: every status."""

    text: str = ""
    category: str | None = None
    venue: str | None = None
    starts_from: datetime | None = None
    starts_to: datetime | None = None
    currency: str | None = None
    price_min_minor: int | None = None
    price_max_minor: int | None = None
    statuses: tuple[str, ...] = (EventStatus.PUBLISHED.value,)
    sort: SearchSort = SearchSort.RELEVANCE
    offset: int = 0
    limit: int = 20


@dataclass(frozen=True)
class EventHit:
    """An event found, as the answer shows it: its matching words marked (HTML-escaped, in
    <mark>), and the products selling it (whose availability is Redis', read per answer)."""

    id: int
    title: str
    venue: str
    location: str
    category: str
    status: str
    starts_at: datetime
    ends_at: datetime | None
    currency: str
    price_min_minor: int | None
    price_max_minor: int | None
    marked_title: str
    snippet: str
    product_ids: tuple[int, ...]


@dataclass(frozen=True)
class SearchResult:
    """A page of events, best first. `fuzzy`: no event has every word, these are spelled alike."""

    hits: list[EventHit]
    has_more: bool
    fuzzy: bool


@dataclass(frozen=True)
class Suggestion:
    title: str
    starts_at: datetime  # the soonest event of that title


def filters(search: EventSearch) -> list[ColumnElement[bool]]:
    """The search's filters on events, the same in both databases' statements."""
    found: list[ColumnElement[bool]] = []
    if search.statuses:
        found.append(Event.status.in_(search.statuses))
    if search.starts_from is not None:
        found.append(Event.starts_at >= search.starts_from)
    if search.starts_to is not None:
        found.append(Event.starts_at <= search.starts_to)
    if search.category:
        found.append(func.lower(Event.category) == func.lower(search.category))
    if search.venue:
        found.append(func.lower(Event.venue) == func.lower(search.venue))
    if search.price_min_minor is not None or search.price_max_minor is not None:
        found.append(Event.currency == search.currency)
    if search.price_min_minor is not None:
        found.append(Event.price_max_minor >= search.price_min_minor)
    if search.price_max_minor is not None:
        found.append(Event.price_min_minor <= search.price_max_minor)
    return found


def listing_order(sort: SearchSort) -> list[UnaryExpression | ColumnElement]:
    """Date or price order (relevance puts its rank before the date)."""
    by_date = [Event.starts_at.asc(), Event.id.asc()]
    if sort == SearchSort.PRICE:
        return [nulls_last(Event.price_min_minor.asc()), *by_date]
    return by_date


def listing_key(sort: SearchSort):  # type: ignore[no-untyped-def]
    """`listing_order` in Python, for hits ranked here (the fuzzy ones)."""
    if sort == SearchSort.PRICE:
        return lambda e: (e.price_min_minor is None, e.price_min_minor or 0, e.starts_at, e.id)
    return lambda e: (e.starts_at, e.id)
