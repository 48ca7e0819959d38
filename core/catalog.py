"""Users and products in SQL."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import bcrypt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.inventory import ProductTerms
from core.models import Product, User
from core.times import to_ms


class UsernameTaken(ValueError):
    pass


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def check_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:  # over bcrypt's 72 bytes, or a NUL: no stored password is like that
        return False


@cache
def dummy_hash(rounds: int) -> str:
    """What an unknown username's password is checked against: a hash of the same cost as the
    real ones, so a login takes as long whether or not the user exists."""
    return hash_password("not-a-password", rounds)


def create_user(
    session: Session, username: str, password: str, rounds: int, role: str = "buyer"
) -> User:
    user = User(username=username, password_hash=hash_password(password, rounds), role=role)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise UsernameTaken(username) from exc
    return user


def authenticate(session: Session, username: str, password: str, rounds: int) -> User | None:
    """The user these credentials are good for; `rounds` is the cost new hashes are made with."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password(password, dummy_hash(rounds))
        return None
    return user if check_password(password, user.password_hash) else None


def terms_of(product: Product) -> ProductTerms:
    return ProductTerms(
        product_id=product.id,
        initial_stock=product.initial_stock,
        max_per_user=product.max_per_user,
        starts_ms=to_ms(product.sale_starts_at),
        ends_ms=to_ms(product.sale_ends_at),
        price_minor=product.price_minor,
        currency=product.currency,
        terms_version=product.terms_version,
        waiting_room=bool(product.waiting_room),
        admit_per_second=product.admit_per_second or 0,
        buckets=product.buckets or 1,
    )


def create_product(
    session: Session,
    name: str,
    price_minor: int,
    currency: str,
    stock: int,
    max_per_user: int,
    sale_starts_at: datetime | None,
    sale_ends_at: datetime | None,
    buckets: int = 1,
) -> Product:
    product = Product(
        name=name,
        price_minor=price_minor,
        currency=currency,
        initial_stock=stock,
        max_per_user=max_per_user,
        sale_starts_at=sale_starts_at,
        sale_ends_at=sale_ends_at,
        buckets=buckets,
    )
    session.add(product)
    session.flush()
    return product


def list_products(session: Session, *, with_seats: bool = True) -> list[Product]:
    """Every product; without the ones selling an event's seats or standing places (bought
    through the event) when `with_seats` is False."""
    query = select(Product).order_by(Product.id)
    if not with_seats:
        query = query.where(Product.event_id.is_(None), Product.section_id.is_(None))
    return list(session.scalars(query))
