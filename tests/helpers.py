"""Helpers for the tests: users with tokens, products, running real RQ workers, databases and
apps of their own."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from flask import Flask
from flask_jwt_extended import create_access_token
from rq import SimpleWorker
from sqlalchemy import create_engine, text

from core import catalog
from core.catalog import create_user
from core.config import Settings, normalize_database_url
from core.db import transaction
from core.inventory import SECTION_SCORE, Inventory, ProductTerms, SeatPlan
from core.models import User
from core.runtime import Runtime
from core.stock import setup_stock
from jobs.queues import JsonJob, rq_connection, settlement_queue
from web.extensions import db


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_user(app: Flask, role: str = "buyer", password: str = "correct horse") -> Account:
    name = f"{role}_{secrets.token_hex(5)}"
    with app.app_context():
        user = create_user(db.session, name, password, 4, role=role)
        db.session.commit()
        token = create_access_token(identity=str(user.id), additional_claims={"role": role})
        return Account(user.id, name, token)


def make_users(app: Flask, count: int) -> list[Account]:
    """Many buyers at once (one transaction), for rush tests."""
    with app.app_context():
        users = [
            User(username=f"b_{secrets.token_hex(6)}", password_hash="x", role="buyer")
            for _ in range(count)
        ]
        db.session.add_all(users)
        db.session.commit()
        return [
            Account(
                u.id,
                u.username,
                create_access_token(identity=str(u.id), additional_claims={"role": "buyer"}),
            )
            for u in users
        ]


def stocked_product(
    rt: Runtime,
    stock: int = 5,
    max_per_user: int = 0,
    starts: datetime | None = None,
    ends: datetime | None = None,
    buckets: int = 1,
) -> int:
    """A product written to SQL with its stock set up in Redis, without the HTTP API."""
    with transaction(rt.sessions) as session:
        name = f"drop {secrets.token_hex(3)}"
        product = catalog.create_product(
            session, name, 1000, "USD", stock, max_per_user, starts, ends, buckets
        )
    setup_stock(rt.inventory, product)
    return product.id


def buyer_ids(rt: Runtime, count: int) -> list[int]:
    """Buyers in SQL, by id, without tokens."""
    with transaction(rt.sessions) as session:
        users = [
            User(username=f"b_{secrets.token_hex(6)}", password_hash="x") for _ in range(count)
        ]
        session.add_all(users)
        session.flush()
        return [u.id for u in users]


def create_product(client: Any, admin: Account, **fields: Any) -> dict[str, Any]:
    body = {"name": f"drop {secrets.token_hex(3)}", "price": "25.00", "stock": 10} | fields
    response = client.post("/products", json=body, headers=admin.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def run_workers(settings: Settings) -> None:
    """Runs a real RQ worker in burst mode: every queued job, then back."""
    worker = SimpleWorker(
        [settlement_queue(settings)],
        connection=rq_connection(settings.redis_url),
        job_class=JsonJob,
        serializer=settlement_queue(settings).serializer,
    )
    worker.work(burst=True, with_scheduler=False)


def seated_hall(app: Flask, title: str, rows: int, seats: int, max_per_user: int = 0) -> dict:
    """A published show on sale now: one section A of `rows` rows of `seats` seats, at most
    `max_per_user` seats a buyer (0: no limit); its stock in `app`'s inventory."""
    admin, client = make_user(app, "admin"), app.test_client()
    starts = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {"title": title, "venue": "Hall", "starts_at": starts, "currency": "USD",
            "max_per_user": max_per_user}  # fmt: skip
    event = client.post("/events", json=body, headers=admin.headers).get_json()
    layout = [{"name": str(n), "seats": seats} for n in range(1, rows + 1)]
    hall = {"sections": [{"name": "A", "price": 30, "rows": layout}]}
    put = client.put(f"/events/{event['id']}/seatmap", json=hall, headers=admin.headers)
    assert put.status_code == 200, put.get_json()
    assert client.post(f"/events/{event['id']}/publish", headers=admin.headers).status_code == 200
    return event


def seat_blocks(free: set[str], size: int) -> list[list[str]]:
    """Every run of `size` free seats side by side in one row (seat ids <section>-<row>-<n>)."""
    blocks = []
    for label in free:
        row, number = label.rsplit("-", 1)
        block = [f"{row}-{n}" for n in range(int(number), int(number) + size)]
        if all(seat in free for seat in block):
            blocks.append(block)
    return blocks


def striped_section(rows: int, seats_per_row: int, run: int) -> SeatPlan:
    """Section A of `rows` rows of `seats_per_row` seats, every (run + 1)th seat of a row sold:
    the longest free run is `run` seats. Ranked as a seat map ranks them (front rows first, then
    the middle of the row)."""
    states, scores = {}, {}
    middle = (seats_per_row - 1) / 2
    for row in range(1, rows + 1):
        for number in range(1, seats_per_row + 1):
            label = f"A-{row}-{number}"
            states[label] = "s:1-sold" if number % (run + 1) == 0 else "f"
            scores[label] = SECTION_SCORE + row * 10**4 + int(abs(number - 1 - middle) * 2)
    return SeatPlan(states, {"A": (1000, 1, seats_per_row)}, scores)


def seated_stock(inventory: Inventory, product_id: int, plan: SeatPlan) -> None:
    """A seated product's stock written straight into Redis, from `plan` (no SQL behind it)."""
    sold = sum(state != "f" for state in plan.states.values())
    terms = ProductTerms(product_id, len(plan.states), 0, 0, 0, 1000, "USD")
    view = inventory.begin_rebuild(product_id)
    assert view is not None, "the product's stock exists already"
    assert inventory.restore(terms, sold, [], {}, lease=view.token, seats=plan)


def scratch_database(server_url: str, folder: Path, name: str) -> tuple[str, Callable[[], None]]:
    """A database of its own: a SQLite file in `folder` when `server_url` is SQLite, else a
    database `name` on that PostgreSQL server. Its URL, and what drops it."""
    if server_url.startswith("sqlite"):
        return f"sqlite:///{folder / f'{name}.db'}", lambda: None
    admin = create_engine(normalize_database_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")), drop


@contextmanager
def app_with(**changes: Any) -> Iterator[Flask]:
    """A second app beside the session's, its settings changed so (rate limits on, say)."""
    from web import create_app

    app = create_app(dataclasses.replace(Settings.from_env(), **changes))
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        app.extensions["flashsale"].close()


async def rush(url: str, product_id: int, tokens: list[str]) -> list[httpx.Response]:
    """Every buyer (a token each) buys one unit at once, over real HTTP: the answers, in order."""
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        start = asyncio.Event()

        async def one(token: str) -> httpx.Response:
            await start.wait()
            return await http.post(
                f"/purchase/{product_id}",
                json={"quantity": 1, "payment_method": "pm_card_visa"},
                headers={"Authorization": f"Bearer {token}"},
            )

        tasks = [asyncio.create_task(one(t)) for t in tokens]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)
