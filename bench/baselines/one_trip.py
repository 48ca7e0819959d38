"""The design's own ceiling: a minimal Flask endpoint that does exactly what an accepted purchase
cannot avoid, and nothing else: verify an HS256 JWT, parse the JSON body, run the project's own
reserve script once (EVALSHA, the same keys and arguments as the API, so it writes what the API
writes) and answer 202 with the hold. No error handling, no rate limiter, no revocation check."""

from __future__ import annotations

import json
import os
import secrets

import jwt
from flask import Flask, jsonify, request
from redis import BlockingConnectionPool, Redis

from core.inventory import CLAIM_MS, RECLAIM_PER_CALL, reserve_keys
from core.keys import ProductKeys
from core.scripts import source

HOLD_MS = 600_000
RATE_LIMIT, RATE_WINDOW_MS = 10, 60_000  # RATELIMIT_PURCHASE's default, counted as the API does


def create_app() -> Flask:
    app = Flask(__name__)
    pool = BlockingConnectionPool.from_url(
        os.environ["REDIS_URL"], max_connections=64, timeout=5, decode_responses=True
    )
    redis = Redis(connection_pool=pool)  # the pool's own options decide decoding
    reserve = redis.register_script(source("reserve"))
    secret = os.environ["JWT_SECRET_KEY"]
    prefix = os.environ["REDIS_KEY_PREFIX"]

    @app.post("/purchase/<int:product_id>")
    def purchase(product_id: int):  # type: ignore[no-untyped-def]
        token = request.headers["Authorization"].removeprefix("Bearer ")
        user = int(jwt.decode(token, secret, algorithms=["HS256"])["sub"])
        body = request.get_json()
        k = ProductKeys(prefix, product_id)
        ticket = f"{product_id}-{secrets.token_hex(12)}"
        # reserve.lua's ARGV: no idempotency key, seats, pass or request id; one bucket.
        reply = reserve(
            keys=reserve_keys(k, user),
            args=[user, body["quantity"], ticket, HOLD_MS, "", body["payment_method"],
                  RECLAIM_PER_CALL, RATE_LIMIT, RATE_WINDOW_MS, "", "", "", "", 1, "",
                  CLAIM_MS],
        )  # fmt: skip
        if reply[0] != "reserved":
            return jsonify({"error": reply[0], "message": reply[0]}), 409
        hold = json.loads(reply[2])
        return jsonify({"ticket_id": ticket, "status": hold["s"], "product_id": product_id,
                        "quantity": hold["q"], "expires_at": hold["d"],
                        "status_url": f"/orders/{ticket}"}), 202  # fmt: skip

    @app.get("/health")
    def health():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok", "checks": {}})

    return app
