"""Search in PostgreSQL: the generated `search_vector` (GIN) for words and word beginnings,
pg_trgm on the title (GIN) for misspellings. Ranked by ts_rank with title over description over
venue and location (weights 1.0, 0.67, 0.33: the 3:2:1 of title, description and place)."""

from __future__ import annotations

from sqlalchemy import Select, bindparam, cast, column, func, literal, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, REAL, REGCONFIG, TSVECTOR
from sqlalchemy.orm import Session

from core.models import Event
from core.search.query import EventSearch, SearchSort, filters, listing_order
from core.search.terms import Term

VECTOR = column("search_vector", TSVECTOR)
# ts_rank's weights, for D, C, B, A: place (C), description (B), title (A).
WEIGHTS = cast(literal("{0.1, 0.33, 0.67, 1.0}"), ARRAY(REAL))
# The likeness (word_similarity) a title needs to be a fuzzy candidate; core.search decides.
FUZZY_FLOOR = "0.5"


def tsquery_text(terms: list[Term], *, title_only: bool = False) -> str:
    """Every term, as a word beginning, or for CJK also as its run of character pairs (so an
    inner fragment finds its word). Terms are letters and digits only: nothing to escape."""
    weight = "A" if title_only else ""
    parts = []
    for term in terms:
        word = f"'{term.text}':*{weight}"
        if term.cjk and len(term.text) > 1:
            pairs = " <-> ".join(
                f"'{pair}'{':' + weight if weight else ''}" for pair in term.bigrams()
            )
            word = f"({word} | {pairs})"
        parts.append(word)
    return " & ".join(parts)


def _tsquery(terms: list[Term], *, title_only: bool = False):  # type: ignore[no-untyped-def]
    text = bindparam("tsquery", tsquery_text(terms, title_only=title_only))
    return func.to_tsquery(literal("english", REGCONFIG), text)


def matching(search: EventSearch, terms: list[Term]) -> Select[tuple[Event]]:
    query = _tsquery(terms)
    statement = select(Event).where(*filters(search), VECTOR.op("@@")(query))
    if search.sort == SearchSort.RELEVANCE:
        return statement.order_by(
            func.ts_rank(WEIGHTS, VECTOR, query).desc(), *listing_order(search.sort)
        )
    return statement.order_by(*listing_order(search.sort))


def spelled_alike(
    session: Session, search: EventSearch, text: str, swapped: list[str], limit: int
) -> list[Event]:
    """Events whose title has words like the query's (or like one of the `swapped` words: the
    query's with two letters swapped back), most alike first."""
    session.execute(select(func.set_config("pg_trgm.word_similarity_threshold", FUZZY_FLOOR, True)))
    spellings = [text, *swapped]
    statement = (
        select(Event)
        .where(*filters(search), or_(*(Event.title.op("%>")(spelling) for spelling in spellings)))
        .order_by(_likest(spellings).desc(), Event.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def _likest(spellings: list[str]):  # type: ignore[no-untyped-def]
    alike = [func.word_similarity(spelling, Event.title) for spelling in spellings]
    return alike[0] if len(alike) == 1 else func.greatest(*alike)


def titles_beginning(search: EventSearch, terms: list[Term], limit: int) -> Select:
    """The soonest events with a title word beginning as each term (walking the date index
    when such titles are common, the GIN index when they are rare)."""
    return (
        select(Event.title, Event.starts_at)
        .where(*filters(search), VECTOR.op("@@")(_tsquery(terms, title_only=True)))
        .order_by(Event.starts_at, Event.id)
        .limit(limit)
    )
