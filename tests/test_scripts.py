"""core/scripts.py: the constants the scripts share with Python are generated from Python's own
definitions, no script keeps a copy of them, and lib.lua goes to the scripts that declare it."""

from __future__ import annotations

import json
import re

import pytest

from core.inventory.hold import HOLD_FIELDS, Hold
from core.inventory.outcomes import BucketStep, PurchaseOutcome
from core.scripts import LUA_DIR, USES_LIB, lua_constants, source
from core.tickets import OPEN_STATUSES, OrderStatus

SCRIPTS = sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem != "lib")
LIB_FUNCTIONS = re.findall(r"^local function (\w+)\(", (LUA_DIR / "lib.lua").read_text(), re.M)


def _lua(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def _code(text: str) -> str:
    """The script without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


@pytest.mark.parametrize("name", [*SCRIPTS, "lib"])
def test_no_script_writes_an_order_status_as_a_literal(name):
    statuses = "|".join(s.value for s in OrderStatus)
    literals = re.findall(rf"""['"]({statuses})['"]""", _code(_lua(name)))
    assert literals == [], f"{name}.lua: use STATUS.<name> (generated) instead of {literals}"


def test_reserve_answers_with_the_generated_outcomes_only():
    code = _code(_lua("reserve"))
    answers = "|".join(o.value for o in [*PurchaseOutcome, *BucketStep])
    assert re.findall(rf"return \{{[^}}]*['\"]({answers})['\"]", code) == []
    used = set(re.findall(r"OUTCOME\.(\w+)", code))
    assert used <= {o.value for o in [*PurchaseOutcome, *BucketStep]}
    assert {o.value for o in PurchaseOutcome} - used == set(), "an outcome reserve never gives"


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_gets_lib_exactly_when_its_header_declares_it(name):
    body = _lua(name)
    calls = {f for f in LIB_FUNCTIONS if re.search(rf"\b{f}\(", _code(body))}
    declared = body.startswith(USES_LIB + "\n")
    assert declared == bool(calls), f"{name}.lua calls {sorted(calls)}; header: {declared}"
    assert ("local function now_ms()" in source(name)) == declared


@pytest.mark.parametrize("name", [*SCRIPTS, "lib"])
def test_the_hold_fields_the_scripts_read_are_the_codecs(name):
    short = set(HOLD_FIELDS.values())
    used = set(re.findall(r"\bhold\.(\w+)", _code(_lua(name))))
    assert used <= short, f"{name}.lua reads hold fields the codec does not know: {used - short}"


def test_the_generated_constants_are_pythons_as_redis_reads_them(rt):
    listing = """
local function keys(t) local r = {} for k in pairs(t) do r[#r + 1] = k end return r end
local function values(t)
  local r = {} for k, v in pairs(t) do r[#r + 1] = k .. '=' .. v end return r
end
return {keys(OPEN), values(STATUS), values(OUTCOME), values(HOLD)}
"""
    redis = rt.inventory_redis
    node = redis.get_primaries()[0].redis_connection if hasattr(redis, "get_primaries") else redis
    open_set, statuses, outcomes, fields = node.eval(lua_constants() + listing, 0)
    assert set(open_set) == {s.value for s in OPEN_STATUSES}
    assert set(statuses) == {f"{s.value}={s.value}" for s in OrderStatus}
    assert set(outcomes) == {f"{o.value}={o.value}" for o in [*PurchaseOutcome, *BucketStep]}
    assert set(fields) == {f"{name}={short}" for name, short in HOLD_FIELDS.items()}


def test_a_hold_record_reads_back_as_the_same_hold():
    hold = Hold(
        "12-" + "a" * 24, 7, 2, 1500, 99, "reserved", "why", "pm_card_visa", 5, 6, "EUR",
        idempotency_key="key", seats=("A-1-1", "A-1-2"), request_id="r", queue_pass="p",
    )  # fmt: skip
    assert Hold.from_json(json.dumps(hold.to_record())) == hold
    bare = {"t": hold.ticket_id, "u": "7", "q": 1, "a": 10, "d": 1, "s": "expired", "c": 3}
    assert Hold.from_json(json.dumps(bare)) == Hold(
        hold.ticket_id, 7, 1, 10, 1, "expired", None, "", 3, 3
    )
