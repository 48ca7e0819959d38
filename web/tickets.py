"""Entry tickets (core/entry/): the buyer's list, one ticket with its current code, its QR
code as SVG, and a transfer to another buyer."""

from __future__ import annotations

import io

import segno
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required

from core.entry.codes import make_code
from core.entry.status import VALID
from core.entry.tickets import TicketRow, TransferRefused, get_ticket, list_tickets
from core.entry.tickets import transfer_ticket as transfer_in_sql
from web.answers import EntryTicketPage, EntryTicketView, Transferred, answer
from web.apidoc import BEARER_ERRORS, BODY_ERRORS, documented
from web.common import current_user_id, end_read, is_admin, parse_body, parse_query
from web.errors import ApiError
from web.extensions import db
from web.mappers import ticket_view
from web.schemas import OrderPageQuery, TransferRequest

bp = Blueprint("tickets", __name__, url_prefix="/tickets")
TRANSFER_STATUS = {
    "unknown_user": 404,
    "same_holder": 409,
    "not_transferable": 409,
    "transfers_not_allowed": 409,
}


@bp.get("")
@jwt_required()
@documented("tickets", {200: EntryTicketPage}, (400, *BEARER_ERRORS), query=OrderPageQuery,
            bearer=True)  # fmt: skip
def index() -> Response:
    """The caller's entry tickets, newest first, each with its current code."""
    query = parse_query(OrderPageQuery)
    rows = list_tickets(
        db.session, current_user_id(), query.per_page, (query.page - 1) * query.per_page
    )
    end_read()
    return answer(
        EntryTicketPage(
            tickets=[ticket_view(row) for row in rows], page=query.page, per_page=query.per_page
        )
    )


@bp.get("/<ticket_id>")
@jwt_required()
@documented("tickets", {200: EntryTicketView}, (*BEARER_ERRORS, 404), bearer=True)
def show(ticket_id: str) -> Response:
    """One entry ticket (its holder's, or any for an admin) with its current code."""
    return answer(ticket_view(_visible(ticket_id)))


@bp.get("/<ticket_id>/qr")
@jwt_required()
def qr(ticket_id: str) -> Response:
    """The current code as an SVG QR code (redrawn by the ticket page every step)."""
    row = _visible(ticket_id)
    if row.ticket.status != VALID:
        raise ApiError(409, "not_valid", f"this ticket is {row.ticket.status}")
    out = io.BytesIO()
    segno.make(make_code(row.ticket.id, row.ticket.secret), error="m").save(
        out, kind="svg", scale=6, border=2
    )
    response = Response(out.getvalue(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<ticket_id>/transfer")
@jwt_required()
@documented("tickets", {200: Transferred}, (*BODY_ERRORS, *BEARER_ERRORS, 404, 409),
            body=TransferRequest, bearer=True)  # fmt: skip
def transfer(ticket_id: str) -> Response:
    """Give a valid ticket to another buyer: it gets a new secret, so the codes made before
    (screenshots included) no longer admit anyone."""
    body = parse_body(TransferRequest)
    _visible(ticket_id, holder_only=True)
    try:
        transfer_in_sql(db.session, ticket_id, current_user_id(), body.to)
    except TransferRefused as refused:
        db.session.rollback()
        raise ApiError(TRANSFER_STATUS[refused.code], refused.code, str(refused)) from None
    db.session.commit()
    return answer(Transferred(id=ticket_id, to=body.to))


def _visible(ticket_id: str, holder_only: bool = False) -> TicketRow:
    row = get_ticket(db.session, ticket_id) if len(ticket_id) <= 40 else None
    end_read()
    if row is None or (row.ticket.user_id != current_user_id() and (holder_only or not is_admin())):
        raise ApiError(404, "not_found", "no such ticket")
    return row
