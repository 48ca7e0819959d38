"""Lua scripts, one per file, read once and run by SHA (redis-py reloads one on NOSCRIPT)."""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from functools import cache
from pathlib import Path

from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Inventory runs on a plain Redis or a Redis Cluster: redis-py routes a script by its first key,
# and every key of a script shares one product's hash tag (core/keys.py).
RedisClient = Redis | RedisCluster

LUA_DIR = Path(__file__).with_name("lua")
_USES_LIB = {
    "reserve",
    "adopt_hold",
    "expire_holds",
    "begin_settlement",
    "finish_hold",
    "restore_stock",
    "update_product",
    "inventory_snapshot",
    "repair_stock",
    "await_action",
    "begin_return",
    "return_units",
    "repair_seats",
    "room_join",
    "room_status",
    "room_board",
}


@cache
def source(name: str) -> str:
    body = (LUA_DIR / f"{name}.lua").read_text()
    if name in _USES_LIB:
        return (LUA_DIR / "lib.lua").read_text() + "\n" + body
    return body


SLOT_MAP_REFRESH_S = 0.2  # a dead primary's callers ask the cluster for its map this often at most


class SlotMap:
    """A cluster's map of slots to primaries, learnt again when a call meets a moved slot or a
    primary that does not answer (a failover promotes its replica): the callers of a dead
    primary answer at once and, once its replica is promoted, reach the new one."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._guard = threading.Lock()
        self._learnt_at = -float("inf")

    def relearn(self) -> None:
        """Asks the cluster for its map, unless another thread did so just now."""
        if not self._guard.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._learnt_at < SLOT_MAP_REFRESH_S:
                return
            self._learnt_at = time.monotonic()
            with suppress(RedisError):  # no node answered: the next failed call asks again
                self.cluster.nodes_manager.initialize()
        finally:
            self._guard.release()


UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class ClusterScript:
    """A script run on a cluster by the client of the primary that owns its first key's slot:
    redis-py's cluster client checks the slot of every key of every call, which costs as much
    client time as the round trip. A call that meets a moved slot (it did not run) goes again
    through the cluster client, which follows the redirection and learns the new slot map; one
    that meets a primary that does not answer fails, and the map is learnt again for the next."""

    def __init__(self, cluster: RedisCluster, script: Script, slots: SlotMap) -> None:
        self.cluster = cluster
        self.script = script
        self.slots = slots

    def __call__(self, keys: list[str], args: list[object] | None = None, client=None):  # type: ignore[no-untyped-def]
        if client is not None:  # a pipeline (see Scripts.pipeline)
            return self.script(keys=keys, args=args, client=client)
        node = self.cluster.get_node_from_key(keys[0])
        try:
            return self.script(keys=keys, args=args, client=node.redis_connection)
        except AskError:  # MOVED too (redis-py's MovedError is an AskError)
            pass
        except UNREACHABLE:
            self.slots.relearn()
            raise
        self.cluster.nodes_manager.initialize()
        return self.script(keys=keys, args=args, client=self.cluster)


class Scripts:
    """The project's scripts registered on one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._scripts: dict[str, Script | ClusterScript] = {}
        self._slots = SlotMap(redis) if isinstance(redis, RedisCluster) else None

    def __getattr__(self, name: str) -> Script | ClusterScript:
        if name.startswith("_"):
            raise AttributeError(name)
        script = self._scripts.get(name)
        if script is None:
            script = self._redis.register_script(source(name))
            if isinstance(self._redis, RedisCluster):
                self._redis.script_load(source(name))  # on every primary, once per process
                script = ClusterScript(self._redis, script, self._slots)  # type: ignore[arg-type]
            self._scripts[name] = script
        return script

    def pipeline(self, key: str, transaction: bool = False) -> Pipeline:
        """A pipeline for a batch of calls on the keys of `key`'s hash tag, one round trip (in
        MULTI/EXEC with `transaction`). On a cluster it is a pipeline of the primary that owns
        the slot: redis-py's cluster pipeline refuses scripts and leaves some replies of a
        transaction unparsed. A batch that meets a moved slot fails whole, and is retried by
        its caller like any other failed batch."""
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(key)
            return node.redis_connection.pipeline(transaction=transaction)
        return self._redis.pipeline(transaction=transaction)

    def call_and_wait(
        self, name: str, keys: list[str], args: list[object], replicas: int, timeout_ms: int
    ) -> tuple[object, int]:
        """Runs a script, then WAIT for `replicas` replicas to have its writes, in one round trip
        (a pipeline without MULTI: WAIT cannot run inside one); answers the script's reply and
        how many replicas have them. The script is sent by SHA, loaded and sent again on
        NOSCRIPT; redis-py's own pipeline of a script would first ask SCRIPT EXISTS."""
        script = getattr(self, name)
        sha = script.script.sha if isinstance(script, ClusterScript) else script.sha
        for attempt in range(3):
            pipe = self.pipeline(keys[0])
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            try:
                reply, acked = pipe.execute(raise_on_error=False)
            except UNREACHABLE:
                if self._slots:
                    self._slots.relearn()
                raise
            if isinstance(reply, NoScriptError) and attempt == 0:
                pipe.script_load(source(name))  # on the server this pipeline talks to
                pipe.execute()
            elif isinstance(reply, AskError) and self._slots and attempt < 2:
                self._redis.nodes_manager.initialize()  # type: ignore[union-attr]
            elif isinstance(reply, Exception):
                raise reply
            else:
                return reply, int(acked)  # type: ignore[call-overload]
        raise RedisError(f"{name}: no primary took the call")
