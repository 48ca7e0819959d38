"""Event search against both databases (SQLite always; PostgreSQL when the suite runs on one),
each migrated afresh and seeded with ~200 events in English and Korean: relevance (the expected
event in the top 3 for exact words, misspellings, word beginnings, Korean fragments, filters),
exact filters, unpublished events never shown, an index that follows changes in the same
transaction, suggestions. Then the routes over the session's app: the answer's shape with live
availability, bad input, admins' statuses, the rate limit."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.config import normalize_database_url
from core.db import make_engine, make_session_factory
from core.events.catalog import cancel_event
from core.models import Event
from core.search import EventSearch, SearchSort, search_events, suggest_titles
from tests.helpers import app_with, scratch_database
from tests.search_catalogue import Spec, catalogue, seed
from tests.test_api_errors import address, assert_error

FIRST_DAY = datetime(2031, 3, 2, tzinfo=UTC)
DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


@dataclass
class Catalogue:
    sessions: sessionmaker[Session]
    ids: dict[str, int]  # spec key -> event id
    keys: dict[int, str]

    def find(self, query: str = "", **fields: Any) -> list[str]:
        """The keys of the events found, in order (every page)."""
        found: list[str] = []
        search = EventSearch(text=query, limit=50, **fields)
        with self.sessions() as session:
            while True:
                result = search_events(session, search)
                found += [self.keys[hit.id] for hit in result.hits]
                if not result.has_more:
                    return found
                search = dataclasses.replace(search, offset=search.offset + search.limit)


@pytest.fixture(scope="module", params=DATABASES)
def shows(request, settings, tmp_path_factory) -> Iterator[Catalogue]:  # type: ignore[no-untyped-def]
    """The catalogue in a database of its own, migrated as in production."""
    from flask_migrate import upgrade

    from web import create_app

    server = os.environ.get("TEST_DATABASE_URL", "") if request.param == "postgresql" else "sqlite"
    name = f"flashsale_search_{secrets.token_hex(4)}"
    url, drop = scratch_database(server, tmp_path_factory.mktemp("search"), name)
    url = normalize_database_url(url)
    migrator = create_app(dataclasses.replace(settings, database_url=url))
    engine = make_engine(url)
    try:
        with migrator.app_context():
            upgrade()
        sessions = make_session_factory(engine)
        with sessions() as session:
            events = seed(session, FIRST_DAY)
        ids = {key: event.id for key, event in events.items()}
        yield Catalogue(sessions, ids, {v: k for k, v in ids.items()})
    finally:
        from web.extensions import db

        engine.dispose()
        with migrator.app_context():
            db.engine.dispose()
        migrator.extensions["flashsale"].close()
        drop()


# --- relevance ------------------------------------------------------------------------------

TOP_3 = [
    ("hamilton", "hamilton"),  # exact
    ("Coldplay", "coldplay"),
    ("nutcracker ballet", "nutcracker"),
    ("beyonse", "beyonce"),  # misspelled
    ("metalica", "metallica"),
    ("taylor swfit", "taylor"),
    ("sheeren", "sheeran"),
    ("philharm", "mahler"),  # word beginnings
    ("mathem", "sheeran"),
    ("electr daisy", "edc"),
    ("아이유", "iu"),  # Korean: whole words and any two characters of one
    ("이유", "iu"),
    ("레미제라블", "lesmis"),
    ("제라", "lesmis"),
    ("영웅", "hero"),
    ("팬미", "newjeans"),
    ("콘서트", "hero"),
    ("smooth jazz", "jazz_park"),  # the description
    ("wheel of death", "kooza"),
    ("wembley", "coldplay"),  # the venue
    ("블루스퀘어", "lesmis"),
    ("BTS permission", "bts"),
]


@pytest.mark.parametrize(("query", "expected"), TOP_3)
def test_the_expected_event_is_in_the_top_3(shows, query, expected):
    found = shows.find(query)
    assert expected in found[:3], found[:5]


def test_a_title_outranks_a_description_which_outranks_a_venue(shows):
    # "stadium": Coldplay's description and venue; other events' venues only.
    assert shows.find("stadium")[0] == "coldplay"
    # "jazz": two titles (and one description) before any venue or category
    assert set(shows.find("jazz")[:2]) == {"jazz_park", "blue_note"}


def test_exact_matches_come_before_misspellings(shows):
    """A query some event holds word for word finds only those; the fallback is for none."""
    assert shows.find("hamilton") == ["hamilton", "hamilton_later"]
    with shows.sessions() as session:
        assert not search_events(session, EventSearch(text="hamilton")).fuzzy
        assert search_events(session, EventSearch(text="hamiltn")).fuzzy


SWAPPED = [  # two adjacent letters swapped, in words of 5 letters or more
    ("symphnoy", "mahler"),
    ("chpoin", "chopin"),
    ("swfit", "taylor"),
    ("coldpaly", "coldplay"),
    ("mteallica", "metallica"),
    ("brnuch", "brunch"),  # (cancelled: among every status)
]


@pytest.mark.parametrize(("query", "expected"), SWAPPED)
def test_a_swap_of_two_adjacent_letters_finds_the_word(shows, query, expected):
    found = shows.find(query, statuses=())
    assert expected in found[:3], found[:5]
    marked = [hit.marked_title for hit in _hits(shows, query) if "<mark>" in hit.marked_title]
    assert marked, "the swapped word is marked"


def _hits(shows: Catalogue, query: str) -> list[Any]:
    with shows.sessions() as session:
        return search_events(session, EventSearch(text=query, statuses=())).hits


@pytest.mark.parametrize("query", ["sympathy", "chorus", "swept", "colleges", "ymphsony"])
def test_a_word_of_the_same_length_that_is_no_swap_finds_nothing(shows, query):
    """As many letters as a title's word, some the same, but not one swap away."""
    assert shows.find(query, statuses=()) == []


def test_nothing_alike_finds_nothing(shows):
    assert shows.find("xylophonic") == []
    assert shows.find("쿼카") == []


def test_an_empty_query_lists_by_date(shows):
    found = shows.find("")
    published = sorted(
        (s for s in catalogue() if s.status == "published"), key=lambda s: (s.day, shows.ids[s.key])
    )
    assert found == [s.key for s in published]


# --- filters --------------------------------------------------------------------------------


def _published(*conditions: Any) -> set[str]:
    return {
        s.key
        for s in catalogue()
        if s.status == "published" and all(condition(s) for condition in conditions)
    }


def _day(n: int) -> datetime:
    return FIRST_DAY + timedelta(days=n)


def _usd(units: int) -> int:
    return units * 100


FILTERS: list[tuple[str, dict[str, Any], Any]] = [
    ("", {"category": "jazz"}, lambda s: s.category == "jazz"),
    ("", {"category": "JAZZ"}, lambda s: s.category == "jazz"),
    ("jazz", {"price_max_minor": _usd(50), "currency": "USD"}, lambda s: s.key == "jazz_park"),
    ("", {"venue": "olympic stadium"}, lambda s: s.venue == "Olympic Stadium"),
    (
        "",
        {"category": "pop", "starts_from": _day(2), "starts_to": _day(9)},
        lambda s: s.category == "pop" and 2 <= s.day < 9,
    ),
    ("", {"price_min_minor": _usd(300), "currency": "USD"}, lambda s: max(s.prices) >= 300),
    (
        "",
        {"price_min_minor": _usd(50), "price_max_minor": _usd(60), "currency": "USD"},
        lambda s: min(s.prices) <= 60 and max(s.prices) >= 50,
    ),
    ("", {"price_min_minor": 1, "currency": "EUR"}, lambda s: False),
    ("콘서트", {"category": "trot"}, lambda s: s.key == "hero"),
]


@pytest.mark.parametrize(("query", "fields", "condition"), FILTERS)
def test_filters_are_exact(shows, query, fields, condition):
    found = shows.find(query, **fields)
    assert len(found) == len(set(found))
    expected = _published(condition)
    if query:  # the query narrows further: what it finds obeys the filter
        assert set(found) <= expected and found
    else:
        assert set(found) == expected


def test_sorted_by_price_then_date(shows):
    found = shows.find("", sort=SearchSort.PRICE, category="pop")
    specs = {s.key: s for s in catalogue()}
    keys = [(min(specs[k].prices), specs[k].day) for k in found]
    assert keys == sorted(keys) and len(found) == len(_published(lambda s: s.category == "pop"))
    by_date = shows.find("jazz", sort=SearchSort.DATE)
    assert [specs[k].day for k in by_date] == sorted(specs[k].day for k in by_date)


def test_unpublished_events_never_appear(shows):
    hidden = {"secret", "brunch"}
    for query, _ in TOP_3:
        assert not hidden & set(shows.find(query))
    for query in ("secret beyonce", "brunch", "beyonce", "jazz", ""):
        assert not hidden & set(shows.find(query))
    # admins may ask for every status
    assert "secret" in shows.find("secret beyonce", statuses=())
    assert "brunch" in shows.find("brunch", statuses=("cancelled",))


def test_the_index_follows_a_change_in_the_same_transaction(shows):
    with shows.sessions() as session:
        event = session.get(Event, shows.ids["kooza"])
        assert event is not None
        event.title = "Cirque du Soleil: Alegría"
        session.flush()
        assert _keys(shows, session, "alegria") == ["kooza"]  # (the accent: a misspelling)
        assert _keys(shows, session, "alegría") == ["kooza"]
        assert _keys(shows, session, "kooza") == []
        cancel_event(event)
        session.flush()
        assert _keys(shows, session, "alegría") == []
        session.rollback()
        assert _keys(shows, session, "kooza") == ["kooza"]


def _keys(shows: Catalogue, session: Session, query: str) -> list[str]:
    return [shows.keys[hit.id] for hit in search_events(session, EventSearch(text=query)).hits]


# --- suggestions ----------------------------------------------------------------------------


def _suggest(shows: Catalogue, prefix: str, now: datetime = FIRST_DAY) -> list[str]:
    with shows.sessions() as session:
        return [s.title for s in suggest_titles(session, prefix, now)]


def test_suggestions_complete_words_once_each(shows):
    assert _suggest(shows, "ham") == ["Hamilton"]  # two events, one title
    assert _suggest(shows, "Jazz") == ["Jazz in the Park", "Blue Note Jazz Nights"]
    assert _suggest(shows, "아이") == ["아이유 콘서트 HER"]
    assert _suggest(shows, "cirque du s") == ["Cirque du Soleil: Kooza"]
    assert _suggest(shows, "secret") == []  # a draft
    assert _suggest(shows, "") == []
    many = _suggest(shows, "golden")
    assert 1 <= len(many) <= 8 and all(title.startswith("Golden ") for title in many)


def test_suggestions_are_of_events_to_come(shows):
    assert _suggest(shows, "ham", now=_day(3) + timedelta(hours=21)) == []
    assert _suggest(shows, "ham", now=_day(2) + timedelta(hours=21)) == ["Hamilton"]


# --- the routes -----------------------------------------------------------------------------


def _show(client: Any, admin: Any, title: str, **fields: Any) -> dict[str, Any]:
    starts = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    body = {"title": title, "venue": "Quarry Hall", "starts_at": starts, "currency": "USD"}
    event = client.post("/events", json=body | fields, headers=admin.headers).get_json()
    sections = [{"name": "Floor", "price": "25.00", "capacity": 50},
                {"name": "Balcony", "price": "12.50", "capacity": 30}]  # fmt: skip
    mapped = client.put(
        f"/events/{event['id']}/seatmap", json={"sections": sections}, headers=admin.headers
    )
    assert mapped.status_code == 200, mapped.get_json()
    return event


def test_a_search_answers_hits_with_prices_availability_and_marks(client, admin, buyer):
    word = f"quokka{secrets.token_hex(3)}"
    event = _show(client, admin, f"The {word} <b>revue</b>", description=f"Wild {word} nights")
    hidden = client.get("/events/search", query_string={"q": word})
    assert hidden.status_code == 200 and hidden.get_json()["hits"] == []  # still a draft
    assert client.post(f"/events/{event['id']}/publish", headers=admin.headers).status_code == 200
    body = client.get("/events/search", query_string={"q": word}).get_json()
    assert body["page"] == 1 and body["per_page"] == 20 and not body["has_more"]
    assert body["sort"] == "relevance" and not body["fuzzy"]
    (hit,) = body["hits"]
    assert hit["id"] == event["id"] and hit["status"] == "published"
    assert (hit["price_min"], hit["price_max"], hit["currency"]) == ("12.50", "25.00", "USD")
    assert hit["available"] == 80
    assert hit["highlight"]["title"] == f"The <mark>{word}</mark> &lt;b&gt;revue&lt;/b&gt;"
    assert hit["highlight"]["snippet"] == f"Wild <mark>{word}</mark> nights"
    # availability is Redis' now: a hold takes a place at once
    held = client.post(
        f"/events/{event['id']}/purchase",
        json={"section": "Floor", "quantity": 2, "payment_method": "pm_card_visa"},
        headers=buyer.headers,
    )
    assert held.status_code == 202, held.get_json()
    again = client.get("/events/search", query_string={"q": word}).get_json()
    assert again["hits"][0]["available"] == 78
    suggested = client.get("/events/suggest", query_string={"q": word[:6]}).get_json()
    assert {"title": f"The {word} <b>revue</b>", "starts_at": hit["starts_at"]} in suggested[
        "suggestions"
    ]


def test_filters_and_pages_over_http(client, admin):
    word = f"wombat{secrets.token_hex(3)}"
    for n in range(3):
        event = _show(client, admin, f"{word} night {n}", category=f"cat{word}")
        client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    first = client.get("/events/search", query_string={"q": word, "per_page": 2}).get_json()
    second = client.get(
        "/events/search", query_string={"q": word, "per_page": 2, "page": 2}
    ).get_json()
    assert first["has_more"] and not second["has_more"]
    assert len({h["id"] for h in first["hits"] + second["hits"]}) == 3
    cheap = {"category": f"CAT{word}", "max_price": "12.50", "currency": "USD"}
    assert len(client.get("/events/search", query_string=cheap).get_json()["hits"]) == 3
    dear = {"category": f"cat{word}", "min_price": "25.01"}
    assert client.get("/events/search", query_string=dear).get_json()["hits"] == []
    through_the_day = {"q": word, "to": (datetime.now(UTC) + timedelta(days=40)).date()}
    assert len(client.get("/events/search", query_string=through_the_day).get_json()["hits"]) == 3


BAD_SEARCHES = [
    {"q": "x" * 201},
    {"sort": "popularity"},
    {"from": "2031-05-01", "to": "2031-04-01"},
    {"min_price": "50", "max_price": "20"},
    {"min_price": "-1"},
    {"max_price": "5e3"},
    {"min_price": "0.001"},
    {"min_price": "1.5", "currency": "JPY"},
    {"currency": "usd"},
    {"q": "jazz\x00"},
    {"q": "jazz\x07"},
    {"q": "jazz\ufffe"},
    {"q": "jazz\ue000"},
    {"q": "jazz\ufffd"},
    {"venue": "hall\x1b"},
    {"page": "0"},
    {"per_page": "51"},
    {"page": "1e2"},
    {"from": "yesterday"},
]


@pytest.mark.parametrize("query", BAD_SEARCHES)
def test_bad_searches_are_400(client, query):
    body = assert_error(client.get("/events/search", query_string=query), 400, "invalid_request")
    assert body["message"]


@pytest.mark.parametrize("query", [{"q": "x" * 201}, {"q": "a\x00"}, {"q": "\U000e0000"}])
def test_bad_suggestions_are_400(client, query):
    assert_error(client.get("/events/suggest", query_string=query), 400, "invalid_request")


def test_undecodable_bytes_are_searched_as_typed(client):
    for raw in ("%ff%fe", "%ed%a0%80", "%c3"):
        response = client.get(f"/events/search?q={raw}")
        assert response.status_code == 200 and response.get_json()["hits"] == []


def test_only_admins_search_other_statuses(client, admin, buyer):
    word = f"okapi{secrets.token_hex(3)}"
    draft = _show(client, admin, f"{word} draft")
    for status in ("all", "draft", "cancelled"):
        assert_error(
            client.get("/events/search", query_string={"q": word, "status": status}),
            403,
            "forbidden",
        )
        assert_error(
            client.get(
                "/events/search", query_string={"q": word, "status": status}, headers=buyer.headers
            ),
            403,
            "forbidden",
        )
    seen = client.get(
        "/events/search", query_string={"q": word, "status": "draft"}, headers=admin.headers
    ).get_json()
    assert [hit["id"] for hit in seen["hits"]] == [draft["id"]]


@pytest.fixture()
def limited_search(app):  # type: ignore[no-untyped-def]
    with app_with(ratelimit_enabled=True, ratelimit_search="3/minute") as limited:
        yield limited


def test_searches_are_rate_limited_per_client(limited_search):
    client = limited_search.test_client()
    one, other = address(), address()
    for path in ("/events/search?q=jazz", "/events/suggest?q=ja", "/events/search"):
        assert client.get(path, environ_base=one).status_code == 200
    over = client.get("/events/suggest?q=jaz", environ_base=one)
    assert_error(over, 429, "rate_limited")
    assert int(over.headers["Retry-After"]) >= 1
    assert client.get("/events/search?q=jazz", environ_base=other).status_code == 200


def test_every_spec_is_searchable() -> None:
    """The catalogue is sound: keys are unique, and each query names a known event."""
    specs: list[Spec] = catalogue()
    assert len({s.key for s in specs}) == len(specs) >= 200
    assert {expected for _, expected in TOP_3} <= {s.key for s in specs}


# --- the answers each process keeps -----------------------------------------------------------


def test_a_kept_answer_follows_every_change_of_an_event(client, admin):
    word = f"ibex{secrets.token_hex(3)}"
    event = _show(client, admin, f"{word} matinee")
    client.post(f"/events/{event['id']}/publish", headers=admin.headers)

    def titles(query: str) -> list[str]:
        found = client.get("/events/search", query_string={"q": query}).get_json()
        return [hit["title"] for hit in found["hits"]]

    assert titles(word) == titles(word) == [f"{word} matinee"]  # the second one kept
    renamed = client.patch(
        f"/events/{event['id']}", json={"title": f"{word} soirée"}, headers=admin.headers
    )
    assert renamed.status_code == 200
    assert titles(word) == [f"{word} soirée"]
    assert client.post(f"/events/{event['id']}/cancel", headers=admin.headers).status_code == 200
    assert titles(word) == []
    suggested = client.get("/events/suggest", query_string={"q": word}).get_json()
    assert suggested["suggestions"] == []


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


@pytest.fixture()
def version_key(rt):  # type: ignore[no-untyped-def]
    key = f"{rt.settings.key_prefix}:test-catalogue:{secrets.token_hex(4)}"
    yield key
    rt.redis.delete(key)


def test_the_cache_keeps_an_answer_until_the_catalogue_changes(rt, version_key):
    from core.search import SearchCache

    cache, compute = SearchCache(rt.redis, version_key, 2, 60.0), Counting()
    assert [cache.answer("jazz", compute) for _ in range(3)] == [1, 1, 1]
    cache.changed()
    assert cache.answer("jazz", compute) == 2
    cache.answer("rock", compute)
    cache.answer("folk", compute)  # two entries at most: "jazz", the oldest, goes
    assert cache.answer("jazz", compute) == 5


def test_the_cache_forgets_old_answers_and_keeps_none_without_redis(rt, version_key):
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from core.search import SearchCache
    from tests.servers import free_port

    compute = Counting()
    aged = SearchCache(rt.redis, version_key, 10, 0.0)
    assert [aged.answer("jazz", compute) for _ in range(2)] == [1, 2]
    off = SearchCache(rt.redis, version_key, 0, 60.0)
    assert [off.answer("jazz", compute) for _ in range(2)] == [3, 4]
    unreachable = Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    gone = SearchCache(unreachable, version_key, 10, 60.0)
    assert [gone.answer("jazz", compute) for _ in range(2)] == [5, 6]


def test_on_sqlite_a_search_reads_beside_a_writer(shows):
    """SQLite's transactions take the write lock at BEGIN (read-then-write loses nothing); a
    search only reads, and runs while another transaction holds that lock."""
    from core.db import reads_only

    with shows.sessions() as writer, shows.sessions() as reader:
        if writer.get_bind().dialect.name != "sqlite":
            pytest.skip("PostgreSQL's readers never wait for writers")
        event = writer.get(Event, shows.ids["chopin"])
        assert event is not None
        event.title = "Chopin Nocturnes"
        writer.flush()  # holds the write lock until the rollback
        found = search_events(reads_only(reader), EventSearch(text="chopin recital")).hits
        assert [shows.keys[hit.id] for hit in found] == ["chopin"]  # the committed title
        reader.rollback()
        writer.rollback()


def test_a_search_answers_while_a_writer_holds_the_database(client, admin, rt):
    word = f"tapir{secrets.token_hex(3)}"
    event = _show(client, admin, f"{word} parade")
    client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    with rt.sessions() as writer:
        held = writer.get(Event, event["id"])
        assert held is not None
        held.description = "being edited"
        writer.flush()  # on SQLite: the write lock, until the rollback
        found = client.get("/events/search", query_string={"q": word})
        suggested = client.get("/events/suggest", query_string={"q": f"{word} par"})
        writer.rollback()
    assert [hit["id"] for hit in found.get_json()["hits"]] == [event["id"]]
    assert suggested.get_json()["suggestions"][0]["title"] == f"{word} parade"
