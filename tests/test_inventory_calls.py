"""core/inventory/calls.py: a script's KEYS and ARGV are built by name in the order its call
declares, and the script reads them by the same names (KEY, ARG)."""

from __future__ import annotations

import re

import pytest

from core.inventory.calls import LAYOUTS, ReserveCall, RestoreCall, restore_key_map
from core.keys import ProductKeys
from core.scripts import LUA_DIR, source


def test_argv_follows_the_declared_order_whatever_order_the_call_names_them_in():
    args = {name: f"v-{name}" for name in reversed(ReserveCall.ARGV)}
    call = ReserveCall({}, args)
    assert call.argv() == [f"v-{name}" for name in ReserveCall.ARGV]


def test_a_call_missing_or_inventing_an_argument_is_refused():
    args = dict.fromkeys(ReserveCall.ARGV, "")
    with pytest.raises(ValueError, match="claim_ms"):
        ReserveCall({}, {k: v for k, v in args.items() if k != "claim_ms"}).argv()
    with pytest.raises(ValueError, match="nonsense"):
        ReserveCall({}, args | {"nonsense": 1}).argv()


def test_only_trailing_keys_may_be_left_out():
    later_bucket = ProductKeys("t", 5, 1)
    keys = RestoreCall.ordered_keys(restore_key_map(later_bucket, with_room=False))
    assert keys[-1] == later_bucket.passes_used and later_bucket.room not in keys
    first = ProductKeys("t", 5, 0)
    assert RestoreCall.ordered_keys(restore_key_map(first, with_room=True))[-4:] == first.room_keys
    holed = restore_key_map(first, with_room=True)
    del holed["holds"]
    with pytest.raises(ValueError):
        RestoreCall.ordered_keys(holed)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_script_reads_only_names_its_call_declares_and_no_position(name):
    call = LAYOUTS[name]
    body = (LUA_DIR / f"{name}.lua").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in body.splitlines())
    assert re.findall(r"(?:KEYS|ARGV)\[\d+\]", code) == []
    assert set(re.findall(r"\bKEY\.(\w+)", code)) <= set(call.KEYS)
    assert set(re.findall(r"\bARG\.(\w+)", code)) == set(call.ARGV), "an argument never read"
    assert f"local ARG = {{{call.ARGV[0]} = 1," in source(name)
