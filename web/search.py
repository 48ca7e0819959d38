"""Event search for buyers: ranked, filtered results with live availability, and title
suggestions as they type (core/search does the finding)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response
from flask_jwt_extended import verify_jwt_in_request
from redis.exceptions import RedisError

from core.events.sale import places_left, products_of_events
from core.models import Event
from core.money import AmountError, to_decimal_string, to_minor
from core.search import (
    EventSearch,
    SearchResult,
    SearchSort,
    mark,
    search_events,
    snippet,
    suggest_titles,
)
from core.times import iso
from web.answers import (
    SearchHighlight,
    SearchHit,
    SearchPage,
    Suggestions,
    TitleSuggestion,
    answer,
)
from web.common import end_read, is_admin, parse_query, runtime
from web.errors import ApiError
from web.extensions import db, limiter
from web.openapi import documented
from web.schemas import EventSearchQuery, SuggestQuery

bp = Blueprint("search", __name__)


def _search_limit() -> str:
    return runtime().settings.ratelimit_search


# Searches and suggestions draw on one budget per client.
search_budget = limiter.shared_limit(_search_limit, scope="search")


@bp.get("/events/search")
@search_budget
@documented("events", {200: SearchPage}, (400, 403, 429), query=EventSearchQuery)
def search() -> Response:
    """Events for words and filters, best first (or by `date`, or by `price`): misspellings
    and word beginnings find their event; an empty `q` lists by date. 20 a page, up to 50."""
    query = parse_query(EventSearchQuery)
    result = search_events(db.session, _search_of(query))
    products = products_of_events(db.session, [event.id for event in result.events])
    end_read()
    left = _places_left(products)
    return answer(
        SearchPage(
            hits=[_hit(event, result, left[event.id]) for event in result.events],
            page=query.page,
            per_page=query.per_page,
            has_more=result.has_more,
            sort=query.sort,
            fuzzy=result.fuzzy,
        )
    )


@bp.get("/events/suggest")
@search_budget
@documented("events", {200: Suggestions}, (400, 429), query=SuggestQuery)
def suggest() -> Response:
    """Up to 8 titles of events to come with a word beginning as each word typed so far."""
    query = parse_query(SuggestQuery)
    found = suggest_titles(db.session, query.q, datetime.now(UTC))
    end_read()
    return answer(
        Suggestions(
            suggestions=[TitleSuggestion(title=s.title, starts_at=iso(s.starts_at)) for s in found]
        )
    )


def _search_of(query: EventSearchQuery) -> EventSearch:
    if query.status != "published":
        verify_jwt_in_request(optional=True)
        if not is_admin():
            raise ApiError(403, "forbidden", "only admins search events that are not published")
    currency = query.currency or runtime().settings.default_currency
    return EventSearch(
        text=query.q,
        category=query.category,
        venue=query.venue,
        starts_from=query.starts_from or datetime.now(UTC),
        starts_to=query.to,
        currency=currency,
        price_min_minor=_minor(query.min_price, currency),
        price_max_minor=_minor(query.max_price, currency),
        statuses=() if query.status == "all" else (query.status,),
        sort=SearchSort(query.sort),
        offset=(query.page - 1) * query.per_page,
        limit=query.per_page,
    )


def _minor(amount, currency: str) -> int | None:  # type: ignore[no-untyped-def]
    if amount is None:
        return None
    try:
        return to_minor(amount, currency)
    except AmountError as exc:
        raise ApiError(400, "invalid_request", f"price: {exc}") from None


def _places_left(products: dict[int, list[int]]) -> dict[int, int | None]:
    try:
        return places_left(runtime().inventory, products)
    except RedisError:
        return dict.fromkeys(products)


def _hit(event: Event, result: SearchResult, available: int | None) -> SearchHit:
    def price(minor: int | None) -> str | None:
        return None if minor is None else to_decimal_string(minor, event.currency)

    return SearchHit(
        id=event.id,
        title=event.title,
        venue=event.venue,
        location=event.location,
        category=event.category,
        status=event.status,
        starts_at=iso(event.starts_at),
        ends_at=iso(event.ends_at),
        currency=event.currency,
        price_min=price(event.price_min_minor),
        price_max=price(event.price_max_minor),
        available=available,
        highlight=SearchHighlight(
            title=mark(event.title, result.terms, result.fuzzy),
            snippet=snippet(event.description, result.terms, result.fuzzy),
        ),
    )
