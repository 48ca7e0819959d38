"""Search in SQLite: the FTS5 table `event_search` (trigram tokenizer, kept by triggers) finds
any fragment of three characters or more; shorter ones are LIKE over the same table. Ranked by
bm25 with the 3:2:1 weights of title, description and place."""

from __future__ import annotations

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.orm import Session

from core.models import Event
from core.search.query import EventSearch, SearchSort, filters, listing_order
from core.search.terms import Term

INDEX = table(
    "event_search", column("rowid"), column("title"), column("description"), column("place")
)
FTS = literal_column("event_search")
FIELDS = (INDEX.c.title, INDEX.c.description, INDEX.c.place)
SHORTEST_MATCHED = 3  # the trigram tokenizer matches nothing shorter
RANK = (3.0, 2.0, 1.0)  # bm25's weights of title, description, place
TITLE_RANK = (1.0, 0.0, 0.0)


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(term: Term, fields: tuple = FIELDS) -> ColumnElement[bool]:
    return or_(*(field.like(_like(term.text), escape="\\") for field in fields))


def _matched(terms: list[Term], fields: tuple = FIELDS, scope: str = "", weights=RANK):  # type: ignore[no-untyped-def]
    """The events (`id`, `rank`: bm25, lower is better) with every term in `fields`, taken from
    the index first, whole (`scope`: the FTS5 column filter saying the same). Materialized:
    joined in place, SQLite's planner may walk the events by another index and ask FTS5 again
    for each row (230 ms instead of 2 for a category's events on 20,000)."""
    long_terms = [t for t in terms if len(t.text) >= SHORTEST_MATCHED]
    short_terms = [t for t in terms if len(t.text) < SHORTEST_MATCHED]
    rank = func.bm25(FTS, *weights) if long_terms else literal(0.0)
    found = select(INDEX.c.rowid.label("id"), rank.label("rank"))
    if long_terms:
        expression = " AND ".join(f"{scope}{_phrase(t.text)}" for t in long_terms)
        found = found.where(FTS.op("MATCH")(expression))
    if short_terms:
        found = found.where(and_(*(_contains(t, fields) for t in short_terms)))
    return found.cte("matched").prefix_with("MATERIALIZED")


def _joined(columns: Select, matched) -> Select:  # type: ignore[no-untyped-def]
    return columns.join(matched, matched.c.id == Event.id)


def matching(search: EventSearch, terms: list[Term]) -> Select[tuple[Event]]:
    matched = _matched(terms)
    order = listing_order(search.sort)
    if search.sort == SearchSort.RELEVANCE:
        order = [matched.c.rank, *order]
    return _joined(select(Event).where(*filters(search)), matched).order_by(*order)


def spelled_alike(
    session: Session, search: EventSearch, text: str, swapped: list[str], limit: int
) -> list[Event]:
    """Events whose title shares trigrams with the query's words (or with the `swapped` words:
    the query's with two letters swapped back), most shared first."""
    grams = sorted(
        {
            word[i : i + 3]
            for word in [*text.split(), *swapped]
            if len(word) >= SHORTEST_MATCHED
            for i in range(len(word) - 2)
        }
    )
    if not grams:
        return []
    expression = "title : (" + " OR ".join(_phrase(gram) for gram in grams) + ")"
    found = select(INDEX.c.rowid.label("id"), func.bm25(FTS, *TITLE_RANK).label("rank"))
    matched = found.where(FTS.op("MATCH")(expression)).cte("matched").prefix_with("MATERIALIZED")
    statement = (
        _joined(select(Event).where(*filters(search)), matched)
        .order_by(matched.c.rank, Event.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def titles_beginning(search: EventSearch, terms: list[Term], limit: int) -> Select:
    """The soonest events whose title holds each term (core.search keeps those with a word
    beginning so)."""
    matched = _matched(terms, (INDEX.c.title,), "title : ", TITLE_RANK)
    events = select(Event.title, Event.starts_at).where(*filters(search))
    return _joined(events, matched).order_by(Event.starts_at, Event.id).limit(limit)
