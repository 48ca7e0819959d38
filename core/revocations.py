"""Revoked tokens: recorded in SQL, the durable record, and copied to Redis, where every request
looks for them in one round trip.

A marker key says that Redis holds every revocation SQL has. Redis restarted without persistence
has lost both: a request that finds neither the revocation nor the marker is answered from SQL,
and all unexpired revocations are copied back before the marker is set again. A request that
cannot reach Redis at all is answered from SQL too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.keys import revocations_load_lock_key, revocations_loaded_key, revoked_token_key
from core.models import RevokedToken

log = logging.getLogger(__name__)

# The marker lapses after MARKER_SECONDS unless a load renews it; the periodic sweep reloads once
# fewer than RELOAD_AHEAD_SECONDS are left, so a revocation whose Redis write failed reaches Redis
# within about ten minutes while requests never go without the marker.
MARKER_SECONDS = 900
RELOAD_AHEAD_SECONDS = 300
LOAD_LOCK_MS = 60_000
WRITE_BATCH = 1000

# The marker is set only by the load that still holds the lock: a Redis restart during the load
# drops the lock with everything else, and the copy it made is not vouched for.
_SET_MARKER_IF_LOCKED = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[2], '1', 'EX', ARGV[2])
    redis.call('del', KEYS[1])
    return 1
end
return 0
"""
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes, which are UTC here."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds_left(expires_at: datetime) -> int:
    return int((_utc(expires_at) - datetime.now(UTC)).total_seconds())


def revoke(
    redis: Redis, sessions: sessionmaker[Session], prefix: str, jti: str, expires_at: datetime
) -> None:
    """SQL first, then Redis: a load that read SQL before this commit finds the Redis copy made
    after it, since a load only adds keys. Raises RedisError when only the Redis copy failed; the
    revocation holds anyway (from SQL while Redis is unreachable, and the sweep copies it)."""
    try:
        with transaction(sessions) as session:
            session.merge(RevokedToken(jti=jti, expires_at=expires_at))
    except IntegrityError:
        pass  # revoked at the same moment by another request
    ttl = _seconds_left(expires_at)
    if ttl > 0:
        redis.set(revoked_token_key(prefix, jti), "1", ex=ttl)


def revoked_in_sql(sessions: sessionmaker[Session], jti: str) -> bool:
    with sessions() as session:
        return session.get(RevokedToken, jti) is not None


def is_revoked(redis: Redis, sessions: sessionmaker[Session], prefix: str, jti: str) -> bool:
    """One Redis round trip while Redis holds the revocations; SQL when it cannot say."""
    try:
        revoked, loaded = redis.mget(revoked_token_key(prefix, jti), revocations_loaded_key(prefix))
    except RedisError:
        return revoked_in_sql(sessions, jti)
    if revoked:
        return True
    if loaded:
        return False
    answer = revoked_in_sql(sessions, jti)
    try:
        load_revocations(redis, sessions, prefix)
    except (RedisError, SQLAlchemyError):
        log.warning("revocations not reloaded into Redis", exc_info=True)
    return answer


def ensure_revocations_loaded(
    redis: Redis, sessions: sessionmaker[Session], settings: Settings
) -> bool:
    """For the periodic sweep: loads the revocations when Redis lost them or the marker is about
    to lapse. True when this call loaded them."""
    if redis.ttl(revocations_loaded_key(settings.key_prefix)) > RELOAD_AHEAD_SECONDS:
        return False
    return load_revocations(redis, sessions, settings.key_prefix)


def load_revocations(redis: Redis, sessions: sessionmaker[Session], prefix: str) -> bool:
    """Deletes expired revocations from SQL, copies the others into Redis and sets the marker.
    One process at a time; False when another one is loading or Redis restarted meanwhile."""
    lock = revocations_load_lock_key(prefix)
    token = secrets.token_hex(8)
    if not redis.set(lock, token, nx=True, px=LOAD_LOCK_MS):
        return False
    try:
        delete_expired_revocations(sessions)
        copied = _copy_to_redis(redis, prefix, unexpired_revocations(sessions))
        marked = redis.eval(
            _SET_MARKER_IF_LOCKED, 2, lock, revocations_loaded_key(prefix), token, MARKER_SECONDS
        )
    except BaseException:
        with suppress(RedisError):
            redis.eval(_UNLOCK, 1, lock, token)
        raise
    log.info("%d revocations loaded into Redis", copied)
    return bool(marked)


def unexpired_revocations(sessions: sessionmaker[Session]) -> list[tuple[str, datetime]]:
    with sessions() as session:
        rows = session.execute(
            select(RevokedToken.jti, RevokedToken.expires_at).where(
                RevokedToken.expires_at > datetime.now(UTC)
            )
        )
        return [(jti, expires_at) for jti, expires_at in rows]


def delete_expired_revocations(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= datetime.now(UTC)))


def _copy_to_redis(redis: Redis, prefix: str, rows: Iterable[tuple[str, datetime]]) -> int:
    """Only adds keys: nothing a logout writes meanwhile is overwritten by an older state."""
    pipe = redis.pipeline(transaction=False)
    copied = 0
    for jti, expires_at in rows:
        ttl = _seconds_left(expires_at)
        if ttl <= 0:
            continue
        pipe.set(revoked_token_key(prefix, jti), "1", ex=ttl)
        copied += 1
        if copied % WRITE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    return copied
