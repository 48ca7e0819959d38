"""Server-rendered pages: the sale page (/), the buyer's orders (/account/orders) and the
operations page for admins (/admin). They know who is signed in from the session cookies that
POST /auth/session sets; their scripts (web/static) call the JSON API with those cookies."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from sqlalchemy import select

from core.catalog import list_products
from core.entry.tickets import list_tickets
from core.events.catalog import EventStatus, event_categories, get_event, list_events
from core.models import Product, User
from core.orders import list_orders
from core.tickets.view import RecordedOrder, order_view
from web.common import available_units, end_read
from web.errors import ApiError
from web.extensions import db
from web.mappers import event_answer, product_answer, ticket_view
from web.overview import overview_data
from web.schemas import MAX_PAGE, MAX_SEATS_PER_PURCHASE
from web.sessions import access_token_for, set_session_cookies, token_revoked

bp = Blueprint("pages", __name__)
ORDERS_PER_PAGE = 20
TICKETS_SHOWN = 50
LOCAL_PATH = re.compile(r"/[A-Za-z0-9/_.~%=&?-]{0,200}")
# Scripts and styles only from our own origin: no inline code, no CDN.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@dataclass(frozen=True)
class Viewer:
    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_gate(self) -> bool:
        return self.role == "gate"


def viewer() -> Viewer | None:
    """Who is signed in, from the access cookie; when it has expired, from the refresh cookie
    (a new access cookie is then set on the response). Bad or revoked tokens: nobody."""
    if "viewer" in g:
        return g.viewer
    config = current_app.config
    claims = _cookie_claims(config["JWT_ACCESS_COOKIE_NAME"], "access")
    renew = False
    if claims is None:
        claims = _cookie_claims(config["JWT_REFRESH_COOKIE_NAME"], "refresh")
        renew = claims is not None
    found: Viewer | None = None
    if claims is not None:
        user = db.session.get(User, int(claims["sub"]))
        end_read()
        if user is not None:
            role = user.role if renew else str(claims.get("role", "buyer"))
            found = Viewer(user.id, user.username, role)
            if renew:
                g.renewed_access = access_token_for(user, claims)
    g.viewer = found
    return found


def _cookie_claims(cookie_name: str, token_type: str) -> dict | None:
    encoded = request.cookies.get(cookie_name)
    if not encoded:
        return None
    try:
        claims = decode_token(encoded)
        if claims.get("type") != token_type:
            return None
        if token_revoked(claims):
            return None
    except (PyJWTError, JWTExtendedException, ApiError, KeyError, ValueError):
        return None
    return claims


def safe_next(target: str | None) -> str | None:
    """Only a plain path on this site, never another host (no open redirect): browsers drop tabs
    and newlines and read backslashes as slashes, so only these characters are let through."""
    if target and LOCAL_PATH.fullmatch(target) and not target.startswith("//"):
        return target
    return None


@bp.after_request
def _page_headers(response: Response) -> Response:
    renewed = g.pop("renewed_access", None)
    if renewed:
        set_session_cookies(response, renewed)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _page_context() -> dict[str, object]:
    return {"viewer": viewer(), "server_now_ms": int(time.time() * 1000)}


@bp.app_template_filter("money")
def money(price: str, currency: str) -> str:
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{price}" if symbol else f"{price} {currency}"


# --- the sale page ------------------------------------------------------------------------------


@bp.get("/")
def storefront() -> str:
    now = datetime.now(UTC)
    products = [p for p in list_products(db.session, with_seats=False) if not _ended(p, now)]
    shows = [
        event_answer(view).model_dump(mode="json")
        for view in list_events(db.session, include_drafts=False)
        if view.event.status == EventStatus.PUBLISHED
    ]
    end_read()
    available = available_units(products)
    return render_template(
        "storefront.html",
        products=[product_answer(p, available[p.id]).model_dump() for p in products],
        shows=shows,
        next_path=safe_next(request.args.get("next")),
    )


# --- event search ---------------------------------------------------------------------------------


@bp.get("/search")
def search_page() -> str:
    """The search box with its filters; the results come from GET /events/search (search.js),
    the page's address holding the search so it can be shared and reloaded."""
    categories = event_categories(db.session)
    end_read()
    return render_template("search.html", categories=categories)


# --- a sale's waiting room ------------------------------------------------------------------------


@bp.get("/waiting-room/<int:product_id>")
def waiting_room(product_id: int) -> tuple[str, int] | Response | str:
    """The queue in front of a sale: the place, a progress bar, the estimated wait; once
    admitted, the purchase, with no reload."""
    if viewer() is None:
        return redirect(url_for("pages.storefront", next=request.path))
    product = db.session.get(Product, product_id)
    end_read()
    if product is None or product.event_id is not None or product.section_id is not None:
        page = render_template("error.html", status=404, title="Not found", message="No such sale.")
        return page, 404
    shown = product_answer(product, available_units([product])[product.id]).model_dump()
    return render_template("waiting_room.html", product=shown)


# --- an event's seats ---------------------------------------------------------------------------


@bp.get("/events/<int:event_id>/seating")
def seating(event_id: int) -> tuple[str, int] | str:
    """The seat map: seats drawn and coloured live, chosen by a click or best available."""
    who = viewer()
    view = get_event(db.session, event_id, include_drafts=bool(who and who.is_admin))
    end_read()
    if view is None:
        page = render_template("error.html", status=404, title="Not found", message="No such show.")
        return page, 404
    return render_template(
        "seating.html",
        show=event_answer(view).model_dump(mode="json"),
        max_seats=MAX_SEATS_PER_PURCHASE,
        here=request.path,
    )


def _ended(product: Product, now: datetime) -> bool:
    ends = product.sale_ends_at
    if ends is None:
        return False
    if ends.tzinfo is None:
        ends = ends.replace(tzinfo=UTC)
    return ends <= now


CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


# --- entry tickets and the gate -------------------------------------------------------------------


@bp.get("/account/tickets")
def account_tickets() -> Response | str:
    """The buyer's tickets: each valid one as a QR code, redrawn every 15-second step."""
    who = viewer()
    if who is None:
        return redirect(url_for("pages.storefront", next=request.path))
    rows = list_tickets(db.session, who.id, TICKETS_SHOWN, 0)
    end_read()
    return render_template(
        "tickets.html", tickets=[ticket_view(row).model_dump(mode="json") for row in rows]
    )


@bp.get("/gate")
def gate_page() -> tuple[str, int] | Response | str:
    """Gate staff check codes: typed or pasted, or read by the camera where the browser can."""
    who = viewer()
    if who is None:
        return redirect(url_for("pages.storefront", next=request.path))
    if not who.is_gate:
        page = render_template(
            "error.html",
            status=403,
            title="Gate staff only",
            message="This page is for gate staff.",
        )
        return page, 403
    return render_template("gate.html")


# --- the buyer's orders ------------------------------------------------------------------------


@bp.get("/account/orders")
def account_orders() -> Response | str:
    who = viewer()
    if who is None:
        return redirect(url_for("pages.storefront", next=request.full_path.rstrip("?")))
    page = request.args.get("page", "1")
    page_number = int(page) if page.isdigit() and 1 <= int(page) <= MAX_PAGE else 1
    orders, total = list_orders(
        db.session, who.id, ORDERS_PER_PAGE, (page_number - 1) * ORDERS_PER_PAGE
    )
    product_ids = {o.product_id for o in orders}
    names: dict[int, str] = {}
    if product_ids:
        query = select(Product.id, Product.name).where(Product.id.in_(product_ids))
        names = {row.id: row.name for row in db.session.execute(query)}
    end_read()
    rows = [_order_row(order_view(o), names) for o in orders]
    pages = max(1, -(-total // ORDERS_PER_PAGE))
    return render_template("orders.html", orders=rows, total=total, page=page_number, pages=pages)


def _order_row(order: RecordedOrder, names: dict[int, str]) -> dict[str, object]:
    product = names.get(order.product_id, f"product {order.product_id}")
    return order.model_dump(mode="json") | {"product": product, "final": order.status.is_terminal}


# --- the operations page -----------------------------------------------------------------------


@bp.get("/admin")
def admin_page() -> tuple[str, int] | Response | str:
    who = viewer()
    if who is None:
        return redirect(url_for("pages.storefront", next="/admin"))
    if not who.is_admin:
        message = "This page is for admins only. You are signed in as a buyer."
        return render_template("error.html", status=403, title="Admins only", message=message), 403
    return render_template("admin.html", overview=overview_data().model_dump(mode="json"))
