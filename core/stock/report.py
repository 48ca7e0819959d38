"""A product's stock report: Redis' figures against SQL's books (a split product's buckets
added up). A report reads each side once: Redis in one atomic script (`Inventory.snapshot`),
SQL in one snapshot (`core.db.snapshot`), Redis before SQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.db import snapshot as sql_snapshot
from core.inventory import Inventory, ProductTerms, Snapshot, StockFigures
from core.models import Product
from core.orders import confirmed_quantity, statuses_of
from core.tickets import OrderStatus

log = logging.getLogger(__name__)


CONFIRMED = OrderStatus.CONFIRMED.value


REFUNDED = OrderStatus.REFUNDED.value


@dataclass(frozen=True)
class Books:
    """What SQL says of a product, read in one snapshot: its terms, its confirmed units, and
    the status of each ticket a Redis snapshot named."""

    terms: ProductTerms
    sold: int
    statuses: dict[str, str]


@dataclass(frozen=True)
class StockReport:
    """Redis' figures against SQL's: sold in Redis must be SQL's confirmed units, plus the holds
    Redis confirmed that SQL has not recorded yet, plus refunds whose units Redis still counts."""

    figures: StockFigures
    sold_in_db: int
    pending_in_db: int
    expected_sold: int
    expected_held: int
    terms_agree: bool
    buckets_agree: bool = True  # a split product's: every bucket on its own

    @property
    def consistent(self) -> bool:
        f = self.figures
        return (
            f.balanced
            and self.terms_agree
            and self.buckets_agree
            and f.sold == self.expected_sold
            and f.held == self.expected_held
        )


def read_books(
    sessions: sessionmaker[Session], product_id: int, tickets: list[str], bucket: int = 0
) -> Books | None:
    with sql_snapshot(sessions) as session:
        return books_in(session, product_id, tickets, bucket)


def books_in(
    session: Session, product_id: int, tickets: list[str], bucket: int = 0
) -> Books | None:
    """Books read in a session the caller holds (one snapshot: see core.db.snapshot); a split
    product's are one bucket's: its share of the units, its confirmed ones."""
    product = session.get(Product, product_id)
    if product is None:
        return None
    return Books(
        terms_of(product).of_bucket(bucket),
        confirmed_quantity(session, product_id, bucket),
        statuses_of(session, tickets),
    )


def report(snapshot: Snapshot, books: Books) -> StockReport:
    pending = sum(
        q for t, q in snapshot.confirmed_holds.items() if books.statuses.get(t) != CONFIRMED
    )
    returning = sum(q for t, q in snapshot.returning.items() if books.statuses.get(t) != CONFIRMED)
    return StockReport(
        figures=snapshot.figures,
        sold_in_db=books.sold,
        pending_in_db=pending,
        expected_sold=books.sold + pending + returning,
        expected_held=snapshot.open_quantity,
        terms_agree=snapshot.terms.enforced() == books.terms.enforced(),
    )


def product_report(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int
) -> tuple[Books | None, StockReport | None]:
    """The product's stock report (a split product's buckets added up) and its books (the
    first bucket's): books None for a product SQL does not know, the report None while a
    bucket's stock is missing in Redis."""
    reports: list[StockReport] = []
    first: Books | None = None
    for bucket in range(inventory.bucket_count(product_id)):
        snapshot = inventory.snapshot(product_id, bucket)
        tickets = tickets_named(snapshot) if snapshot else []
        books = read_books(sessions, product_id, tickets, bucket)
        first = first or books
        if books is None or snapshot is None:
            return first, None
        reports.append(report(snapshot, books))
    return first, sum_reports(reports)


def sum_reports(parts: list[StockReport]) -> StockReport:
    if len(parts) == 1:
        return parts[0]
    return StockReport(
        figures=sum_figures([p.figures for p in parts]),
        sold_in_db=sum(p.sold_in_db for p in parts),
        pending_in_db=sum(p.pending_in_db for p in parts),
        expected_sold=sum(p.expected_sold for p in parts),
        expected_held=sum(p.expected_held for p in parts),
        terms_agree=all(p.terms_agree for p in parts),
        buckets_agree=all(p.consistent for p in parts),
    )


def tickets_named(snapshot: Snapshot) -> list[str]:
    return [*snapshot.confirmed_holds, *snapshot.returning]


def sum_figures(parts: Sequence[StockFigures]) -> StockFigures:
    """A split product's figures: its buckets' added up (the version, the highest)."""
    return StockFigures(
        initial=sum(f.initial for f in parts),
        available=sum(f.available for f in parts),
        held=sum(f.held for f in parts),
        sold=sum(f.sold for f in parts),
        version=max(f.version for f in parts),
    )
