"""Event search for buyers: ranked, filtered results with live availability, and title
suggestions as they type (core/search does the finding)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify
from flask_jwt_extended import verify_jwt_in_request
from redis.exceptions import RedisError

from core.db import reads_only
from core.events.sale import places_left
from core.money import AmountError, to_minor
from core.search import EventSearch, SearchSort, search_events, suggest_titles
from core.times import iso
from web.answers import SearchPage, Suggestions, TitleSuggestion
from web.apidoc import documented
from web.common import end_read, is_admin, parse_query, runtime
from web.errors import ApiError
from web.extensions import db, limiter
from web.mappers import search_hit
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
    search = _search_of(query)
    page = runtime().search_cache.answer(("search", search), lambda: _prepared(query, search))
    left = _places_left(page.products)
    # The page as SearchPage dumps it, prepared when found: only the availability is new.
    answered = dict(page.page, hits=[hit | {"available": left[hit["id"]]} for hit in page.hits])
    return jsonify(answered)


@bp.get("/events/suggest")
@search_budget
@documented("events", {200: Suggestions}, (400, 429), query=SuggestQuery)
def suggest() -> Response:
    """Up to 8 titles of events to come with a word beginning as each word typed so far."""
    text, now = parse_query(SuggestQuery).q, _this_minute()
    return jsonify(
        runtime().search_cache.answer(("suggest", text, now), lambda: _titles(text, now))
    )


@dataclass(frozen=True)
class PreparedPage:
    """A page of results as the answer dumps it, but for the hits' availability."""

    page: dict[str, Any]  # SearchPage's fields but the hits
    hits: list[dict[str, Any]]  # SearchHit dumps
    products: dict[int, list[int]]  # event -> the products whose availability it shows


def _prepared(query: EventSearchQuery, search: EventSearch) -> PreparedPage:
    try:
        result = search_events(reads_only(db.session), search)
    finally:
        end_read()
    page = SearchPage(
        hits=[search_hit(hit, None) for hit in result.hits],
        page=query.page,
        per_page=query.per_page,
        has_more=result.has_more,
        sort=query.sort,
        fuzzy=result.fuzzy,
    ).model_dump(mode="json")
    hits = page.pop("hits")
    return PreparedPage(page, hits, {hit.id: list(hit.product_ids) for hit in result.hits})


def _titles(text: str, now: datetime) -> dict[str, Any]:
    try:
        found = suggest_titles(reads_only(db.session), text, now)
    finally:
        end_read()
    titles = [TitleSuggestion(title=s.title, starts_at=iso(s.starts_at)) for s in found]
    return Suggestions(suggestions=titles).model_dump(mode="json")


def _this_minute() -> datetime:
    """Now, to the minute: events from now on, and one cache key a minute."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


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
        starts_from=query.starts_from or _this_minute(),
        starts_to=query.to,
        currency=currency,
        price_min_minor=_minor(query.min_price, currency),
        price_max_minor=_minor(query.max_price, currency),
        statuses=() if query.status == "all" else (query.status,),
        sort=SearchSort(query.sort),
        offset=(query.page - 1) * query.per_page,
        limit=query.per_page,
    )


def _minor(amount: Decimal | None, currency: str) -> int | None:
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
