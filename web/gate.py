"""The gate: staff with the `gate` role scan codes; each ticket is admitted once."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from core.entry.gate import GateFor
from core.entry.gate import scan as scan_code
from core.times import iso
from web.answers import ScanAnswer, answer
from web.apidoc import ADMIN_ERRORS, BODY_ERRORS, documented
from web.common import current_user_id, parse_body
from web.errors import ApiError
from web.extensions import db
from web.schemas import ScanRequest

bp = Blueprint("gate", __name__, url_prefix="/gate")
F = TypeVar("F", bound=Callable[..., Any])


def gate_staff_required(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verify_jwt_in_request()
        if get_jwt().get("role") != "gate":
            raise ApiError(403, "forbidden", "gate staff only")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@bp.post("/scan")
@gate_staff_required
@documented("gate", {200: ScanAnswer}, (*BODY_ERRORS, *ADMIN_ERRORS), body=ScanRequest,
            bearer=True)  # fmt: skip
def scan() -> Response:
    """Check a ticket's code at the gate of `event_id` (or of `product_id`, for a drop sold
    without an event): `admitted` once per ticket of that event, whichever gate scans first;
    later scans answer `already_used` with the first admission's time and gate, and a ticket of
    another event `wrong_event`."""
    body = parse_body(ScanRequest)
    gate = GateFor(body.event_id, body.product_id)
    outcome = scan_code(db.session, body.code, current_user_id(), gate)
    db.session.commit()
    return answer(
        ScanAnswer(
            result=outcome.result,  # type: ignore[arg-type]
            ticket_id=outcome.ticket_id,
            seat=outcome.seat,
            used_at=iso(outcome.used_at),
            used_gate_id=outcome.used_gate_id,
        )
    )
