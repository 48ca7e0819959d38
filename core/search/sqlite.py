"""Search in SQLite: the FTS5 table `event_search` (trigram tokenizer, kept by triggers) finds
any fragment of three characters or more; shorter ones are LIKE over the same table. Ranked by
bm25 with the 3:2:1 weights of title, description and place."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, column, func, literal_column, or_, select, table
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


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(term: Term, fields: tuple = FIELDS) -> ColumnElement[bool]:
    return or_(*(field.like(_like(term.text), escape="\\") for field in fields))


def _indexed(statement: Select, terms: list[Term], fields: tuple = FIELDS, scope: str = ""):  # type: ignore[no-untyped-def]
    """The statement joined to the index, with every term found in `fields` (`scope`: the
    FTS5 column filter saying the same)."""
    long_terms = [t for t in terms if len(t.text) >= SHORTEST_MATCHED]
    short_terms = [t for t in terms if len(t.text) < SHORTEST_MATCHED]
    statement = statement.join(INDEX, INDEX.c.rowid == Event.id)
    if long_terms:
        expression = " AND ".join(f"{scope}{_phrase(t.text)}" for t in long_terms)
        statement = statement.where(FTS.op("MATCH")(expression))
    if short_terms:
        statement = statement.where(and_(*(_contains(t, fields) for t in short_terms)))
    return statement, bool(long_terms)


def matching(search: EventSearch, terms: list[Term]) -> Select[tuple[Event]]:
    statement, ranked = _indexed(select(Event).where(*filters(search)), terms)
    order = listing_order(search.sort)
    if search.sort == SearchSort.RELEVANCE and ranked:
        order = [func.bm25(FTS, 3.0, 2.0, 1.0), *order]
    return statement.order_by(*order)


def spelled_alike(session: Session, search: EventSearch, text: str, limit: int) -> list[Event]:
    """Events whose title shares trigrams with the query's words, most shared first."""
    grams = sorted(
        {
            word[i : i + 3]
            for word in text.split()
            if len(word) >= SHORTEST_MATCHED
            for i in range(len(word) - 2)
        }
    )
    if not grams:
        return []
    expression = "title : (" + " OR ".join(_phrase(gram) for gram in grams) + ")"
    statement = (
        select(Event)
        .join(INDEX, INDEX.c.rowid == Event.id)
        .where(*filters(search), FTS.op("MATCH")(expression))
        .order_by(func.bm25(FTS, 1.0, 0.0, 0.0), Event.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def titles_beginning(search: EventSearch, terms: list[Term], limit: int) -> Select:
    """The soonest events whose title holds each term (core.search keeps those with a word
    beginning so)."""
    events = select(Event.title, Event.starts_at).where(*filters(search))
    statement, _ = _indexed(events, terms, (INDEX.c.title,), "title : ")
    return statement.order_by(Event.starts_at, Event.id).limit(limit)
