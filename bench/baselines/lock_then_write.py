"""The seed design, synchronous on one hot product: take a Redis lock (SET NX EX, retried with
backoff), read the stock, DECRBY it, INSERT the purchase row in SQL, then compare-and-delete the
lock. Kept here only to be measured against. The benchmark creates its table before serving."""

from __future__ import annotations

import os
import random
import secrets
import time

from flask import Flask, jsonify
from redis import Redis
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert

from core.config import normalize_database_url
from core.db import prepare_engine

metadata = MetaData()
purchases = Table(
    "bench_purchases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", String(64), unique=True),
    Column("product_id", Integer),
)
UNLOCK = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def create_app() -> Flask:
    app = Flask(__name__)
    redis = Redis.from_url(os.environ["REDIS_URL"])
    engine = prepare_engine(create_engine(normalize_database_url(os.environ["DATABASE_URL"])))
    unlock = redis.register_script(UNLOCK)
    prefix = os.environ.get("BENCH_PREFIX", "bench")

    @app.post("/purchase/<int:product_id>")
    def purchase(product_id: int):  # type: ignore[no-untyped-def]
        lock, token = f"{prefix}:lock:{product_id}", secrets.token_hex(8)
        delay = 0.001
        while not redis.set(lock, token, nx=True, ex=5):
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.05)
        try:
            stock_key = f"{prefix}:stock:{product_id}"
            if int(redis.get(stock_key) or 0) <= 0:
                return jsonify({"error": "sold_out", "message": "sold out"}), 409
            redis.decrby(stock_key, 1)
            ticket = f"{product_id}-{secrets.token_hex(12)}"
            with engine.begin() as conn:
                conn.execute(insert(purchases).values(ticket_id=ticket, product_id=product_id))
        finally:
            unlock(keys=[lock], args=[token])
        return jsonify({"ticket_id": ticket, "status": "reserved"}), 202

    @app.get("/health")
    def health():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok"})

    return app
