"""Event search: words (typos, word beginnings, CJK fragments), filters and order in SQL's own
full-text index (PostgreSQL: core/search/postgres.py, SQLite: core/search/sqlite.py); the
fallback for misspellings, the title suggestions and the marked matches decided here, the same
for both.

A search first asks for events holding every word (as a word beginning, or a CJK fragment). Only
when none does, it asks for titles spelled like the query (PostgreSQL's trigram index, or SQLite's
trigrams of the title) and keeps those alike enough, most alike first: a misspelling never pushes
an exact match down, and costs a second statement only when it is needed.
"""

from __future__ import annotations

from datetime import datetime
from types import ModuleType

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.events.sale import products_of_events
from core.models import Event
from core.search import postgres, sqlite
from core.search.cache import SearchCache
from core.search.highlight import ALIKE, mark, snippet
from core.search.query import (
    EventHit,
    EventSearch,
    SearchResult,
    SearchSort,
    Suggestion,
    filters,
    listing_key,
    listing_order,
)
from core.search.terms import Term, begins_a_word, query_terms, swapped_words, title_likeness

__all__ = [
    "EventHit",
    "EventSearch",
    "SearchCache",
    "SearchResult",
    "SearchSort",
    "Suggestion",
    "search_events",
    "suggest_titles",
]
FUZZY_CANDIDATES = 200  # titles a misspelled query is compared with, the likest first
SUGGESTIONS = 8
SUGGESTION_EVENTS = 64  # the soonest events read for suggestions (a tour repeats its title)


def search_events(session: Session, search: EventSearch) -> SearchResult:
    terms = query_terms(search.text)
    events, has_more, fuzzy = _found(session, search, terms)
    products = products_of_events(session, [event.id for event in events])
    hits = [_hit(event, terms, fuzzy, products[event.id]) for event in events]
    return SearchResult(hits, has_more, fuzzy)


def suggest_titles(
    session: Session, text: str, now: datetime, limit: int = SUGGESTIONS
) -> list[Suggestion]:
    """Up to `limit` titles of published events to come with a word beginning as each of the
    text's words: titles beginning as the text first, then the soonest."""
    terms = query_terms(text)
    if not terms:
        return []
    search = EventSearch(starts_from=now)
    rows = session.execute(_backend(session).titles_beginning(search, terms, SUGGESTION_EVENTS))
    soonest: dict[str, datetime] = {}
    for title, starts_at in rows:
        if title not in soonest and all(begins_a_word(term, title) for term in terms):
            soonest[title] = starts_at
    found = [Suggestion(title, starts_at) for title, starts_at in soonest.items()]
    opening = text.strip().lower()
    found.sort(key=lambda s: (not s.title.lower().startswith(opening), s.starts_at, s.title))
    return found[:limit]


def _backend(session: Session) -> ModuleType:
    return postgres if session.get_bind().dialect.name == "postgresql" else sqlite


Page = tuple[list[Event], bool, bool]  # the events, whether more follow, whether fuzzy


def _found(session: Session, search: EventSearch, terms: list[Term]) -> Page:
    if not terms:
        listing = select(Event).where(*filters(search)).order_by(*listing_order(search.sort))
        return _page(session, listing, search)
    backend = _backend(session)
    every_word = backend.matching(search, terms)
    found = _page(session, every_word, search)
    if found[0] or (search.offset > 0 and _any(session, every_word)):  # (a page past the end)
        return found
    return _spelled_alike(session, backend, search, [term for term in terms if not term.cjk])


def _page(session: Session, statement: Select, search: EventSearch) -> Page:
    rows = list(session.scalars(statement.offset(search.offset).limit(search.limit + 1)))
    return rows[: search.limit], len(rows) > search.limit, False


def _any(session: Session, statement: Select) -> bool:
    return session.scalar(statement.with_only_columns(Event.id).order_by(None).limit(1)) is not None


def _spelled_alike(
    session: Session, backend: ModuleType, search: EventSearch, words: list[Term]
) -> Page:
    if not words:
        return [], False, False
    text = " ".join(t.text for t in words)
    candidates = backend.spelled_alike(
        session, search, text, swapped_words(words), FUZZY_CANDIDATES
    )
    scored = [(title_likeness(words, event.title), event) for event in candidates]
    alike = [(score, event) for score, event in scored if score >= ALIKE]
    if search.sort == SearchSort.RELEVANCE:
        alike.sort(key=lambda pair: (-pair[0], pair[1].starts_at, pair[1].id))
    else:
        by = listing_key(search.sort)
        alike.sort(key=lambda pair: by(pair[1]))
    page = [event for _, event in alike[search.offset : search.offset + search.limit + 1]]
    return page[: search.limit], len(page) > search.limit, bool(page)


def _hit(event: Event, terms: list[Term], fuzzy: bool, product_ids: list[int]) -> EventHit:
    return EventHit(
        id=event.id,
        title=event.title,
        venue=event.venue,
        location=event.location,
        category=event.category,
        status=event.status,
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        currency=event.currency,
        price_min_minor=event.price_min_minor,
        price_max_minor=event.price_max_minor,
        marked_title=mark(event.title, terms, fuzzy),
        snippet=snippet(event.description, terms, fuzzy),
        product_ids=tuple(product_ids),
    )
