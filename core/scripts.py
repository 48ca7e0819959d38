"""Lua scripts, one per file, read once and run by SHA (redis-py reloads one on NOSCRIPT)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

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
    "set_room",
}


@cache
def source(name: str) -> str:
    body = (LUA_DIR / f"{name}.lua").read_text()
    if name in _USES_LIB:
        return (LUA_DIR / "lib.lua").read_text() + "\n" + body
    return body


class Scripts:
    """The project's scripts registered on one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, Script] = {}

    def __getattr__(self, name: str) -> Script:
        if name.startswith("_"):
            raise AttributeError(name)
        script = self._scripts.get(name)
        if script is None:
            script = self._redis.register_script(source(name))
            self._scripts[name] = script
        return script
