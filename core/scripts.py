"""Lua scripts, one per file, read once and run by SHA (redis-py reloads one on NOSCRIPT)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError

# Inventory runs on a plain Redis or a Redis Cluster: redis-py routes a script by its first key,
# and every key of a script shares one product's hash tag (core/keys.py).
RedisClient = Redis | RedisCluster

LUA_DIR = Path(__file__).with_name("lua")
_USES_LIB = {
    "reserve",
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


class ClusterScript:
    """A script run on a cluster by the client of the primary that owns its first key's slot:
    redis-py's cluster client checks the slot of every key of every call, which costs as much
    client time as the round trip. A call that meets a moved slot (it did not run) goes again
    through the cluster client, which follows the redirection and learns the new slot map."""

    def __init__(self, cluster: RedisCluster, script: Script) -> None:
        self.cluster = cluster
        self.script = script

    def __call__(self, keys: list[str], args: list[object] | None = None, client=None):  # type: ignore[no-untyped-def]
        if client is not None:  # a pipeline (see Scripts.pipeline)
            return self.script(keys=keys, args=args, client=client)
        node = self.cluster.get_node_from_key(keys[0])
        try:
            return self.script(keys=keys, args=args, client=node.redis_connection)
        except AskError:  # MOVED too (redis-py's MovedError is an AskError)
            pass
        self.cluster.nodes_manager.initialize()
        return self.script(keys=keys, args=args, client=self.cluster)


class Scripts:
    """The project's scripts registered on one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._scripts: dict[str, Script | ClusterScript] = {}

    def __getattr__(self, name: str) -> Script | ClusterScript:
        if name.startswith("_"):
            raise AttributeError(name)
        script = self._scripts.get(name)
        if script is None:
            script = self._redis.register_script(source(name))
            if isinstance(self._redis, RedisCluster):
                self._redis.script_load(source(name))  # on every primary, once per process
                script = ClusterScript(self._redis, script)
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
