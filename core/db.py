"""Engines and sessions, with SQLite set up so concurrent workers lose nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, scoped_session, sessionmaker


def engine_options(database_url: str) -> dict[str, Any]:
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def prepare_engine(engine: Engine) -> Engine:
    """SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so read-then-write never loses updates."""
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        reads_only = connection.get_execution_options().get(READS_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")

    return engine


READS_ONLY = "flashsale_reads_only"


def reads_only(session: Session | scoped_session[Session]) -> Session:
    """The session's next transaction only reads: on SQLite it takes no write lock (BEGIN, not
    BEGIN IMMEDIATE), so such transactions run side by side, and beside a writer (WAL)."""
    actual = session() if isinstance(session, scoped_session) else session
    if not actual.in_transaction() and actual.get_bind().dialect.name == "sqlite":
        actual.connection(execution_options={READS_ONLY: True})
    return actual


def make_engine(database_url: str) -> Engine:
    return prepare_engine(create_engine(database_url, **engine_options(database_url)))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def snapshot(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only session whose statements all see one snapshot of the database: REPEATABLE
    READ on PostgreSQL (READ COMMITTED would let a commit land between two statements), and
    SQLite's own transactions, which are serializable."""
    session = factory()
    try:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session
    finally:
        session.rollback()
        session.close()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert(session: Session, model):  # type: ignore[no-untyped-def]
    """A Core INSERT on the model's table, in the session's dialect (for ON CONFLICT). Given a
    list of rows and a RETURNING clause, it is sent as multi-row statements (SQLAlchemy's
    insertmanyvalues): with ON CONFLICT and no RETURNING, the driver would send one statement
    per row."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)
