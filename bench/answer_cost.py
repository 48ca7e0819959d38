"""What documenting a route and answering with a model cost per request, in microseconds.

Two costs came with the generated OpenAPI document: spectree's wrapper around each documented
view (web/openapi.py's plugin makes it a plain call), and building a pydantic model and dumping
it instead of handing a dict to `jsonify`. Both are measured in process on a bare Flask app, each
variant beside a plain route in the same round, so the machine's noise mostly cancels out; the
figures are medians of the rounds.

    .venv/bin/python -m bench.answer_cost [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from flask import Flask, Response, jsonify

from core.tickets import OrderStatus
from core.tickets.view import TicketView
from web.answers import answer
from web.apidoc import documented

TICKET = {
    "ticket_id": "1-0123456789abcdef01234567",
    "status": OrderStatus.RESERVED.value,
    "product_id": 1,
    "quantity": 1,
    "amount": "10.00",
    "currency": "USD",
    "created_at": "2026-11-29T10:00:00.000Z",
    "updated_at": "2026-11-29T10:00:00.000Z",
    "expires_at": "2026-11-29T10:05:00.000Z",
    "failure_reason": None,
    "payment": {},
}


def _plain() -> Response:
    return jsonify(TICKET)


def _model() -> Response:
    return answer(TicketView(**TICKET))


def _app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/plain", "plain", _plain)
    app.add_url_rule("/model", "model", _model)
    wrap = documented("bench", {200: TicketView})
    app.add_url_rule("/documented", "documented", wrap(_plain))
    app.add_url_rule("/documented-model", "documented_model", wrap(_model))
    return app


def _time(call: Callable[[], object], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        call()
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = _app().test_client()
    paths = ("/plain", "/documented", "/model", "/documented-model")
    for path in paths:
        assert client.get(path).get_json()["ticket_id"] == TICKET["ticket_id"]
    rounds: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(args.rounds):
        for path in paths:
            rounds[path].append(_time(lambda p=path: client.get(p), args.requests))
    median = {path: statistics.median(values) for path, values in rounds.items()}
    base = median["/plain"]
    print(f"{'route':<20}{'us/request':>12}{'vs plain':>10}")
    for path in paths:
        print(f"{path:<20}{median[path]:>12.1f}{median[path] - base:>+10.1f}")


if __name__ == "__main__":
    main()
