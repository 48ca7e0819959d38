"""Revoked tokens: SQL keeps them (the record); every web process holds a copy in memory, kept
current by a Redis pub/sub channel, so checking a token costs no round trip.

A logout writes SQL first, then publishes the token's id. Each process's watch subscribes, then
loads every unexpired revocation from SQL (so nothing published during the load is missed), and
loads again after any reconnection (a Redis restart loses no revocation: SQL has them) and every
RELOAD_SECONDS (a publish that failed reaches every process all the same). While the watch is
not subscribed, a check asks SQL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.backoff import Outage
from core.db import transaction, upsert
from core.keys import ServiceKeys
from core.models import RevokedToken
from core.redis_urls import redis_client

log = logging.getLogger(__name__)

RELOAD_SECONDS = 30.0
RECONNECT_SECONDS = 0.5  # the first retry's bound; doubled up to RECONNECT_MAX_SECONDS
RECONNECT_MAX_SECONDS = 5.0


def record_revocations(sessions: sessionmaker[Session], expiries: dict[str, datetime]) -> None:
    """The revocations' record (token id: its expiry), all in one transaction; every process
    refuses the tokens from its next reload on. A token revoked already stays as it is."""
    rows = [{"jti": jti, "expires_at": expires_at} for jti, expires_at in expiries.items()]
    with transaction(sessions) as session:
        statement = upsert(session, RevokedToken).on_conflict_do_nothing(index_elements=["jti"])
        session.execute(statement, rows)


def announce_revocations(redis: Redis, prefix: str, jtis: Iterable[str]) -> None:
    """Tells every process at once (RedisError: they learn it at their next reload)."""
    channel = ServiceKeys(prefix).revocations
    for jti in jtis:
        redis.publish(channel, jti)


def revoked_in_sql(sessions: sessionmaker[Session], jti: str) -> bool:
    with sessions() as session:
        return session.get(RevokedToken, jti) is not None


def unexpired_revocations(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        rows = session.scalars(
            select(RevokedToken.jti).where(RevokedToken.expires_at > datetime.now(UTC))
        )
        return set(rows)


def delete_expired_revocations(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        result = session.execute(
            delete(RevokedToken).where(RevokedToken.expires_at <= datetime.now(UTC))
        )
        return result.rowcount


class RevocationWatch:
    """This process's copy of the revoked tokens. Started on first use in each process (after
    gunicorn forks), by a daemon thread that owns the subscription."""

    def __init__(
        self,
        redis_url: str,
        sessions: sessionmaker[Session],
        prefix: str,
        reload_seconds: float = RELOAD_SECONDS,
    ) -> None:
        self.redis_url = redis_url
        self.sessions = sessions
        self.channel = ServiceKeys(prefix).revocations
        self.reload_seconds = reload_seconds
        self._revoked: set[str] = set()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._outage = Outage("revocation watch", log, RECONNECT_SECONDS, RECONNECT_MAX_SECONDS)
        self._guard = threading.Lock()
        self._owner_pid: int | None = None

    def is_revoked(self, jti: str) -> bool:
        """From memory while subscribed; from SQL otherwise (SQLAlchemyError if SQL is down)."""
        self._start_once()
        if self._ready.is_set():
            return jti in self._revoked
        return revoked_in_sql(self.sessions, jti)

    def refuses(self, claims: dict) -> bool:
        """Whether a token is revoked: itself (its `jti`), or its whole sign-in (its `sid`, which
        every token made from one login carries)."""
        return any(self.is_revoked(i) for i in (claims["jti"], claims.get("sid")) if i)

    def add(self, jti: str) -> None:
        """A revocation this process made: refused here at once, before its announcement."""
        self._revoked.add(jti)

    @property
    def ready(self) -> bool:
        """Subscribed and loaded (starts the watch in this process if it is not running)."""
        self._start_once()
        return self._ready.is_set()

    def _start_once(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._guard:
            if self._owner_pid != os.getpid():
                self._owner_pid = os.getpid()
                self._ready.clear()
                threading.Thread(target=self._run, name="revocation-watch", daemon=True).start()

    def stop(self) -> None:
        """Ends the watch (within a second); checks then ask SQL."""
        self._stopped.set()
        self._ready.clear()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._follow()
            except (RedisError, SQLAlchemyError, OSError) as error:
                self._stopped.wait(self._outage.failed(error))  # logged once per outage

    def _follow(self) -> None:
        client = redis_client(self.redis_url, decode_responses=True, health_check_interval=10)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            while pubsub.get_message(timeout=5.0) is None:  # the subscription's confirmation
                pass
            self._reload()
            if self._stopped.is_set():
                return
            self._ready.set()
            self._outage.recovered()
            reload_at = time.monotonic() + self.reload_seconds
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self._revoked.add(message["data"])
                if time.monotonic() >= reload_at:
                    self._reload()
                    reload_at = time.monotonic() + self.reload_seconds
        finally:
            self._ready.clear()
            pubsub.close()
            client.close()

    def _reload(self) -> None:
        # Messages arriving meanwhile wait in the subscription and are added after this.
        self._revoked = unexpired_revocations(self.sessions)
