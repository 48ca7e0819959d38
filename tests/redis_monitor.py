"""Every command the Redis databases of the service run while a block of a test runs, read with
MONITOR (on every primary of a cluster): the commands clients send (round trips, as each is one
command here) and those scripts run."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from core.config import Settings, cluster_node_url

_LINE = re.compile(r"^[\d.]+ \[(\d+) (.*?)\] (.*)$")
_ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')
# Sent once when a connection opens (or around a transaction), not by a request.
CONNECTION_SETUP = ("SELECT", "CLIENT", "HELLO", "AUTH", "MULTI", "EXEC")
# redis-py's check of an idle connection (the revocation watch's subscription, every 10 s).
HEALTH_CHECK = ["PING", "redis-py-health-check"]


@dataclass
class Command:
    words: list[str]
    from_script: bool  # run by a Lua script, not sent by a client
    client: str

    @property
    def name(self) -> str:
        return self.words[0].upper()


@dataclass
class CommandLog:
    redis: Redis
    commands: list[Command] = field(default_factory=list)

    def sent(self, ignore_prefixes: tuple[str, ...] = ("rq:",)) -> list[Command]:
        """Commands clients sent, but for a connection's set-up and those whose keys all start
        with an ignored prefix (RQ's own bookkeeping, which the web hands off the request path)."""
        return [
            c
            for c in self.commands
            if not c.from_script
            and not ((keys := self.keys_of(c)) and all(k.startswith(ignore_prefixes) for k in keys))
            and c.name not in CONNECTION_SETUP
            and c.words != HEALTH_CHECK
        ]

    def keys_of(self, command: Command) -> list[str]:
        try:
            return list(self.redis.command_getkeys(*command.words))
        except ResponseError:  # a command without keys (TIME, PING)
            return []


def service_urls(settings: Settings) -> list[str]:
    """The databases of the service: REDIS_URL's, and the inventory's (each primary of a
    cluster) when it is elsewhere."""
    urls = [settings.redis_url]
    inventory = settings.inventory_url
    node_url = cluster_node_url(inventory)
    if node_url:
        cluster = RedisCluster.from_url(node_url)
        urls += [f"redis://{node.host}:{node.port}/0" for node in cluster.get_primaries()]
        cluster.close()
    elif inventory not in urls:
        urls.append(inventory)
    return urls


@contextmanager
def monitored_service(settings: Settings) -> Iterator[CommandLog]:
    """The commands run on every database of the service, in one log."""
    with ExitStack() as stack:
        logs = [stack.enter_context(monitored(url)) for url in service_urls(settings)]
        combined = CommandLog(logs[0].redis)
        yield combined
    for log in logs:
        combined.commands += log.commands


@contextmanager
def monitored(url: str) -> Iterator[CommandLog]:
    """The commands run on the database `url` names, from the start of the block to its end."""
    redis = Redis.from_url(url, decode_responses=True)
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    marker = f"monitor-end-{secrets.token_hex(4)}"
    log = CommandLog(redis)
    monitor = redis.monitor()
    monitor.__enter__()
    reader = threading.Thread(target=_read, args=(monitor, db, marker, log), daemon=True)
    reader.start()
    try:
        yield log
    finally:
        redis.echo(marker)
        reader.join(10)
        monitor.__exit__(None, None, None)
        redis.close()


def _read(monitor, db: int, marker: str, log: CommandLog) -> None:  # type: ignore[no-untyped-def]
    while True:
        raw = monitor.connection.read_response()
        match = _LINE.match(raw.decode() if isinstance(raw, bytes) else raw)
        if match is None or int(match.group(1)) != db:
            continue
        client = match.group(2)
        words = [w.replace('\\"', '"') for w in _ARGUMENT.findall(match.group(3))]
        if words[:2] == ["ECHO", marker] or words[:2] == ["echo", marker]:
            return
        if words:
            log.commands.append(Command(words, client == "lua", client))
