"""The buyers of a sale behind a waiting room (the `room_sale` step of bench.rush): each joins
the room, asks for its place again when the API says to (`poll_after_ms`), and once admitted
buys once with its pass. wrk's Lua cannot chain join, polls and purchase per buyer.

A plain asyncio HTTP/1.1 client over a fixed pool of keep-alive connections (as wrk's -c): the
driver shares the two cores with gunicorn, Redis and the workers, and httpx's AsyncClient cost
about 1.6 ms of CPU per request on this machine against about 60 us for this one (GET /health
of the bare app, 64 connections)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PURCHASE_BODY = b'{"quantity": 1, "payment_method": "pm_card_visa"}'
IDLE_S = 1.0  # gunicorn closes a keep-alive connection after 2 s idle: older ones are reopened
RETRY_S = 2.0  # after no answer or a 503 (the room being restored), as the waiting-room page


@dataclass
class Calls:
    """One kind of request: when each was sent (wall clock, s), how long it waited for one of
    the pool's connections and how long for its answer (s), and the answers."""

    sent: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # "409 sold_out": count
    failures: int = 0  # no answer, even on a fresh connection


@dataclass
class Crowd:
    opening: float  # wall clock: the sale's opening, or the first join sent
    joins: Calls
    polls: Calls
    purchases: Calls
    outcomes: Counter[str]  # one a buyer: bought, refused <code> <error>, told sold_out...
    last_told: float  # wall clock: the last buyer's final answer
    cpu_s: float  # the driver's own CPU time over the crowd


class Pool:
    """`size` keep-alive connections; a request waits for a free one (first come, first served)."""

    def __init__(self, url: str, size: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.slots: asyncio.Queue[tuple | None] = asyncio.Queue()
        for _ in range(size):
            self.slots.put_nowait(None)

    def head(self, method: str, path: str, token: str, body: bytes = b"", **extra: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
        if method != "GET":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def request(self, calls: Calls, message: bytes) -> tuple[int, bytes]:
        """The answer's status and body; (0, b"") when none came, on a reused connection and
        then on a fresh one. Requests are safe to send twice: joining keeps the place, a
        purchase carries an Idempotency-Key."""
        asked = time.perf_counter()
        slot = await self.slots.get()
        try:
            for _ in range(2):
                try:
                    if slot is None or time.monotonic() - slot[2] > IDLE_S:
                        _close(slot)
                        slot = None
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        slot = (reader, writer, 0.0)
                    reader, writer, _ = slot
                    sent, wall = time.perf_counter(), time.time()
                    writer.write(message)
                    code, body, close = await _answer(reader)
                except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):
                    _close(slot)  # IncompleteReadError is an EOFError
                    slot = None
                    continue
                answered = time.perf_counter()
                calls.sent.append(wall)
                calls.waited.append(sent - asked)
                calls.latency.append(answered - sent)
                calls.codes[str(code)] += 1
                if code >= 400:
                    calls.reasons[f"{code} {_error(body)}"] += 1
                if close:
                    _close(slot)
                    slot = None
                else:
                    slot = (reader, writer, time.monotonic())
                return code, body
            calls.failures += 1
            return 0, b""
        finally:
            self.slots.put_nowait(slot)

    def close(self) -> None:
        while not self.slots.empty():
            _close(self.slots.get_nowait())


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    code = int(head[9:12])
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ValueError("a chunked answer: not read by this client")
    return code, await reader.readexactly(length), close


def _close(slot: tuple | None) -> None:
    if slot is not None:
        slot[1].close()


def _error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", "?"))
    except (ValueError, AttributeError):
        return "?"


async def _buyer(
    pool: Pool, crowd: Crowd, product_id: int, token: str, index: int, arrives: float
) -> str:
    """Arrives (wall clock), joins, polls until admitted (or told sold out), then buys once
    with the pass."""
    await asyncio.sleep(max(0.0, arrives - time.time()))
    status = pool.head("GET", f"/queue/{product_id}/status", token)
    join = pool.head("POST", f"/queue/{product_id}/join", token)
    code, body = await pool.request(crowd.joins, join)
    while True:
        if code == 200:
            place = json.loads(body)
            if place["status"] == "admitted":
                break
            if place["status"] == "sold_out":
                return "told sold_out"
            delay = place["poll_after_ms"] / 1000
        elif code in (0, 503):
            delay = RETRY_S
        elif code == 404 and _error(body) == "not_in_queue":
            code, body = await pool.request(crowd.joins, join)
            continue
        else:
            return f"room answered {code} {_error(body)}"
        await asyncio.sleep(delay)
        code, body = await pool.request(crowd.polls, status)
    purchase = pool.head("POST", f"/purchase/{product_id}", token, PURCHASE_BODY,
                         X_Queue_Pass=place["queue_pass"],
                         Idempotency_Key=f"room-{index}-{os.urandom(6).hex()}")  # fmt: skip
    code, body = await pool.request(crowd.purchases, purchase)
    return "bought" if code == 202 else f"refused {code} {_error(body)}"


async def _crowd(
    url: str,
    product_id: int,
    tokens: list[str],
    connections: int,
    timeout: float,
    arrival_s: float,
    opening: float | None,
) -> Crowd:
    pool = Pool(url, connections)
    start = time.time()
    crowd = Crowd(opening or start, Calls(), Calls(), Calls(), Counter(), 0.0, 0.0)
    every = arrival_s / max(1, len(tokens))

    async def one(index: int, token: str) -> None:
        try:
            outcome = await _buyer(pool, crowd, product_id, token, index, start + index * every)
        except Exception as error:  # a buyer's surprise must not stop the others
            outcome = f"driver error {type(error).__name__}"
        crowd.outcomes[outcome] += 1
        crowd.last_told = time.time()

    tasks = [asyncio.create_task(one(i, token)) for i, token in enumerate(tokens)]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        crowd.outcomes[f"unfinished after {timeout:.0f} s"] += len(pending)
        await asyncio.wait(pending)
    pool.close()
    return crowd


def run_crowd(
    url: str,
    product_id: int,
    tokens: list[str],
    connections: int,
    timeout: float,
    arrival_s: float = 0.0,
    opening: float | None = None,
) -> Crowd:
    """Every buyer through the room, arriving evenly over `arrival_s` (0: all at once), at
    most `connections` requests in flight; ends when every buyer has had its final answer.
    `opening`: the sale's start (wall clock); without one, the first join sent."""
    cpu = time.process_time()
    crowd = asyncio.run(_crowd(url, product_id, tokens, connections, timeout, arrival_s, opening))
    crowd.cpu_s = time.process_time() - cpu
    return crowd
