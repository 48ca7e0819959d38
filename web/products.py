"""The catalogue: products with their live availability from Redis."""

from __future__ import annotations

from flask import Blueprint, Response
from redis.exceptions import RedisError

from core.catalog import create_product, list_products, terms_of
from core.models import Product
from core.money import AmountError, to_minor
from core.stock import setup_stock
from core.times import to_ms
from web.answers import Product as ProductAnswer
from web.answers import ProductList, answer
from web.apidoc import ADMIN_ERRORS, BODY_ERRORS, documented
from web.common import admin_required, available_units, check_id, end_read, parse_body, runtime
from web.errors import ApiError
from web.extensions import db, limiter
from web.mappers import product_answer
from web.schemas import ProductCreate, ProductUpdate

bp = Blueprint("products", __name__)
# The fields the reserve script enforces: changing one moves the product's terms version.
TERMS_FIELDS = {
    "max_per_user",
    "sale_starts_at",
    "sale_ends_at",
    "add_stock",
    "waiting_room",
    "admit_per_second",
}


def _reads_limit() -> str:
    return runtime().settings.ratelimit_product_reads


def _get_product(product_id: int) -> Product:
    product = db.session.get(Product, check_id(product_id))
    if product is None:
        raise ApiError(404, "not_found", "no such product")
    return product


@bp.get("/products")
@limiter.limit(_reads_limit)
@documented("products", {200: ProductList}, (429,))
def index() -> Response:
    """Products with their live availability (an event's seats are bought through the event)."""
    products = list_products(db.session, with_seats=False)
    end_read()
    available = available_units(products)
    return answer(ProductList(products=[product_answer(p, available[p.id]) for p in products]))


@bp.get("/products/<int:product_id>")
@limiter.limit(_reads_limit)
@documented("products", {200: ProductAnswer}, (404, 429))
def show(product_id: int) -> Response:
    """One product."""
    product = _get_product(product_id)
    end_read()
    return answer(product_answer(product, available_units([product])[product.id]))


@bp.post("/products")
@admin_required
@documented(
    "admin",
    {201: ProductAnswer},
    (*BODY_ERRORS, *ADMIN_ERRORS, 503),
    body=ProductCreate,
    bearer=True,
)
def create() -> Response:
    """Create a product and put its stock on sale (503: saved, its stock not on sale yet)."""
    body = parse_body(ProductCreate)
    rt = runtime()
    currency = body.currency or rt.settings.default_currency
    try:
        price_minor = to_minor(body.price, currency)
    except AmountError as exc:
        raise ApiError(400, "invalid_request", f"price: {exc}") from None
    product = create_product(
        db.session,
        name=body.name,
        price_minor=price_minor,
        currency=currency,
        stock=body.stock,
        max_per_user=body.max_per_user,
        sale_starts_at=body.sale_starts_at,
        sale_ends_at=body.sale_ends_at,
        buckets=body.buckets,
    )
    product.waiting_room, product.admit_per_second = body.waiting_room, body.admit_per_second
    db.session.commit()
    try:
        setup_stock(rt.inventory, product)  # with the room, if it has one
    except RedisError:
        # SQL has the product; the sweep builds its stock once Redis answers again.
        raise ApiError(
            503, "inventory_unavailable", "product saved, stock not yet on sale"
        ) from None
    return answer(product_answer(product, product.initial_stock), 201)


@bp.patch("/products/<int:product_id>")
@admin_required
@documented(
    "admin",
    {200: ProductAnswer},
    (*BODY_ERRORS, *ADMIN_ERRORS, 404, 503),
    body=ProductUpdate,
    bearer=True,
)
def update(product_id: int) -> Response:
    """Add stock, rename, change the per-user limit, move the sale window or set the room."""
    body = parse_body(ProductUpdate)
    product = _get_product(product_id)
    given = body.model_fields_set
    if "name" in given and body.name is not None:
        product.name = body.name
    if "max_per_user" in given and body.max_per_user is not None:
        product.max_per_user = body.max_per_user
    if "sale_starts_at" in given:
        product.sale_starts_at = body.sale_starts_at
    if "sale_ends_at" in given:
        product.sale_ends_at = body.sale_ends_at
    starts, ends = to_ms(product.sale_starts_at), to_ms(product.sale_ends_at)
    if starts and ends and ends <= starts:
        raise ApiError(400, "invalid_request", "sale_ends_at must be after sale_starts_at")
    if body.waiting_room is not None:
        product.waiting_room = body.waiting_room
    if body.admit_per_second is not None:
        product.admit_per_second = body.admit_per_second
    if product.waiting_room and not product.admit_per_second:
        raise ApiError(400, "invalid_request", "a waiting room needs admit_per_second")
    if body.add_stock:
        product.initial_stock = Product.initial_stock + body.add_stock  # atomic in SQL
    if given & TERMS_FIELDS:
        product.terms_version = Product.terms_version + 1
    db.session.commit()
    db.session.refresh(product)  # the terms and their version as committed, read together
    end_read()
    try:
        runtime().inventory.update_terms(terms_of(product))  # the room's settings too
    except RedisError:
        # SQL has the new terms; the sweep and reconciliation bring Redis to them.
        raise ApiError(503, "inventory_unavailable", "saved; Redis will follow shortly") from None
    return answer(product_answer(product, available_units([product])[product.id]))
