"""event search: each event's price range, and a full-text index that follows every change

PostgreSQL: a generated tsvector (title weighted over description over venue and location, in
English words plus the overlapping pairs of Chinese, Japanese and Korean characters) with a GIN
index, and pg_trgm on the title for typos. SQLite: an FTS5 table with the trigram tokenizer,
kept in step by triggers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Hangul jamo and syllables, kana, CJK ideographs (with extension A and the compatibility ones).
CJK_CLASS = (
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)

PG_BIGRAMS = rf"""
CREATE FUNCTION event_search_bigrams(body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT coalesce(string_agg(
           CASE WHEN length(run.part[1]) = 1 THEN run.part[1]
                ELSE (SELECT string_agg(substr(run.part[1], i, 2), ' ' ORDER BY i)
                      FROM generate_series(1, length(run.part[1]) - 1) AS i)
           END, ' ' ORDER BY run.n), '')
  FROM regexp_matches(body, '{CJK_CLASS}+', 'g') WITH ORDINALITY AS run(part, n)
$$
"""


def _weighted(expression: str, weight: str) -> str:
    return (
        f"setweight(to_tsvector('english'::regconfig, {expression}) || "
        f"to_tsvector('simple'::regconfig, event_search_bigrams({expression})), '{weight}')"
    )


PG_VECTOR = " || ".join(
    [
        _weighted("title", "A"),
        _weighted("description", "B"),
        _weighted("venue || ' ' || location", "C"),
    ]
)

SQLITE_INDEX = [
    "CREATE VIRTUAL TABLE event_search USING fts5(title, description, place, tokenize='trigram')",
    """CREATE TRIGGER event_search_insert AFTER INSERT ON events BEGIN
         INSERT INTO event_search(rowid, title, description, place)
         VALUES (new.id, new.title, new.description, new.venue || ' ' || new.location);
       END""",
    """CREATE TRIGGER event_search_update AFTER UPDATE OF title, description, venue, location
       ON events BEGIN
         DELETE FROM event_search WHERE rowid = old.id;
         INSERT INTO event_search(rowid, title, description, place)
         VALUES (new.id, new.title, new.description, new.venue || ' ' || new.location);
       END""",
    """CREATE TRIGGER event_search_delete AFTER DELETE ON events BEGIN
         DELETE FROM event_search WHERE rowid = old.id;
       END""",
    """INSERT INTO event_search(rowid, title, description, place)
       SELECT id, title, description, venue || ' ' || location FROM events""",
]


def upgrade():
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_min_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("price_max_minor", sa.BigInteger(), nullable=True))
    op.execute(
        """UPDATE events SET
             price_min_minor = (SELECT min(price_minor) FROM event_sections s
                                WHERE s.event_id = events.id),
             price_max_minor = (SELECT max(price_minor) FROM event_sections s
                                WHERE s.event_id = events.id)"""
    )
    # A category's events in a date window ("jazz this weekend"), the search's commonest filter.
    op.create_index(
        "ix_events_status_category_starts",
        "events",
        ["status", sa.text("lower(category)"), "starts_at"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(PG_BIGRAMS)
        op.execute(
            f"ALTER TABLE events ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({PG_VECTOR}) STORED"
        )
        # Without GIN's pending list: events change seldom and are searched all the time, and a
        # search would read the whole list until a vacuum merged it.
        op.execute(
            "CREATE INDEX ix_events_search_vector ON events USING gin (search_vector) "
            "WITH (fastupdate = off)"
        )
        op.execute(
            "CREATE INDEX ix_events_title_trgm ON events USING gin (title gin_trgm_ops) "
            "WITH (fastupdate = off)"
        )
    else:
        for statement in SQLITE_INDEX:
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_events_title_trgm")
        op.execute("DROP INDEX ix_events_search_vector")
        op.execute("ALTER TABLE events DROP COLUMN search_vector")
        op.execute("DROP FUNCTION event_search_bigrams(text)")
    else:
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER event_search_{trigger}")
        op.execute("DROP TABLE event_search")
    op.drop_index("ix_events_status_category_starts", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("price_max_minor")
        batch_op.drop_column("price_min_minor")
