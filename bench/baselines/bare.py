"""The ceiling: a Flask endpoint that answers a purchase-sized JSON body and does no work."""

from __future__ import annotations

from flask import Flask, jsonify

BODY = {
    "ticket_id": "1-0123456789abcdef01234567",
    "status": "reserved",
    "product_id": 1,
    "quantity": 1,
    "expires_at": "2026-11-22T00:00:00.000Z",
    "status_url": "/orders/1-0123456789abcdef01234567",
}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/purchase/<int:product_id>")
    def purchase(product_id: int):  # type: ignore[no-untyped-def]
        return jsonify(BODY), 202

    @app.get("/orders/<ticket_id>")
    def status(ticket_id: str):  # type: ignore[no-untyped-def]
        return jsonify(BODY)

    @app.get("/health")
    def health():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok"})

    return app
