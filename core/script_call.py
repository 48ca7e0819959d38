"""A script call's KEYS and ARGV by name: each call class names them in order, the one place
that order is written. Python builds the lists by name (`keys()`, `argv()`), and the script
reads them by name too: core/scripts.py prepends `KEY` and `ARG` (name -> position) to it.

A call whose tail is a list of repeated items (locks, claims) names one item's keys and
arguments (`KEYS_EACH`, `ARGV_EACH`); its script walks them in a fixed-width loop after the
named head, reading `KEY_EACH.x` / `ARG_EACH.x` (an item's offset) from `KEY_HEAD` / `ARG_HEAD`
(the head's length) in steps of `KEY_WIDTH` / `ARG_WIDTH`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# The modules declaring calls, imported before a script's layout is looked up.
CALL_MODULES = ("core.inventory.calls", "core.locks", "core.payments.simulated")

_LAYOUTS: dict[str, type[ScriptCall]] = {}


@dataclass(frozen=True)
class ScriptCall:
    """One call: its keys and arguments by name, and its repeated items, if any."""

    script: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]] = ()
    ARGV: ClassVar[tuple[str, ...]] = ()
    KEYS_EACH: ClassVar[tuple[str, ...]] = ()
    ARGV_EACH: ClassVar[tuple[str, ...]] = ()

    keys_by_name: Mapping[str, str]
    args: Mapping[str, object]
    items: Sequence[Mapping[str, Any]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _LAYOUTS[cls.script] = cls

    def keys(self) -> list[str]:
        return self.ordered_keys(self.keys_by_name) + self._each(self.KEYS_EACH)

    @classmethod
    def ordered_keys(cls, keys_by_name: Mapping[str, str]) -> list[str]:
        """KEYS, in the script's order; keys a call does not have may only be the last ones."""
        present = [name in keys_by_name for name in cls.KEYS]
        if sorted(present, reverse=True) != present or set(keys_by_name) - set(cls.KEYS):
            raise ValueError(f"{cls.script}: keys {sorted(keys_by_name)} out of its order")
        return [keys_by_name[name] for name in cls.KEYS if name in keys_by_name]

    def argv(self) -> list[object]:
        if set(self.args) != set(self.ARGV):
            raise ValueError(f"{self.script}: arguments {sorted(set(self.args) ^ set(self.ARGV))}")
        return [self.args[name] for name in self.ARGV] + self._each(self.ARGV_EACH)

    def _each(self, names: tuple[str, ...]) -> list[Any]:
        expected = set(self.KEYS_EACH) | set(self.ARGV_EACH)
        for item in self.items:
            if set(item) != expected:
                raise ValueError(f"{self.script}: item {sorted(set(item) ^ expected)}")
        return [item[name] for item in self.items for name in names]

    def run(self, scripts: Any, client: Any = None) -> Any:
        """Runs the call on a `core.scripts.Scripts` (queued on `client`, a pipeline, if given)."""
        return getattr(scripts, self.script)(keys=self.keys(), args=self.argv(), client=client)


def layouts() -> dict[str, type[ScriptCall]]:
    """Every script's call, by script name."""
    for module in CALL_MODULES:
        importlib.import_module(module)
    return dict(_LAYOUTS)
