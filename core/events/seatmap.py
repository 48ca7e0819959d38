"""A seat map: sections with a price, each either rows of named seats or a general-admission
capacity. Uploaded as JSON by an admin, validated here, stored in SQL (sections and seats).

A seat's id is `<section>-<row>-<number>` (names are letters and digits, so the dashes are
unambiguous). Its rank orders seats for "best available", lower first: the admin's, or, when a
row gives none, the section's place in the map, then the row's place in its section, then the
distance to the middle of the row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from core.models import Event, EventSection, Product, Seat, utcnow
from core.money import AmountError, to_minor

MAX_SEATS = 100_000
MAX_SECTIONS = 200
MAX_ROW_SEATS = 1_000
MAX_ROWS = 2_000
SECTION_SPAN = 10**9  # ranks a section leaves to the rows and seats inside it
ROW_SPAN = 10**4

Name = Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9]+$")]


class SeatMapRefused(ValueError):
    """A seat map that is well formed but cannot be stored (a price the currency cannot hold)."""


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    # A count (seats 1..n) or the seat numbers themselves, in the row's order.
    seats: (
        Annotated[int, Field(ge=1, le=MAX_ROW_SEATS)]
        | list[Annotated[int, Field(ge=1, le=100_000)]]
    )
    ranks: list[Annotated[int, Field(ge=0, le=10**12)]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RowSpec:
        numbers = self.numbers
        if not numbers or len(numbers) > MAX_ROW_SEATS:
            raise ValueError(f"row {self.name}: 1 to {MAX_ROW_SEATS} seats")
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"row {self.name}: a seat number appears twice")
        if self.ranks is not None and len(self.ranks) != len(numbers):
            raise ValueError(f"row {self.name}: one rank per seat")
        return self

    @property
    def numbers(self) -> list[int]:
        return list(range(1, self.seats + 1)) if isinstance(self.seats, int) else self.seats


class SectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    price: Decimal = Field(strict=False, gt=0, le=Decimal("1000000"))
    rows: list[RowSpec] | None = Field(default=None, max_length=MAX_ROWS)
    capacity: int | None = Field(default=None, ge=1, le=MAX_SEATS)  # general admission

    @model_validator(mode="after")
    def _one_kind(self) -> SectionSpec:
        if (self.rows is None) == (self.capacity is None):
            raise ValueError(f"section {self.name}: either rows (seated) or capacity (standing)")
        if self.rows is not None:
            if not self.rows:
                raise ValueError(f"section {self.name}: no rows")
            names = [row.name for row in self.rows]
            if len(set(names)) != len(names):
                raise ValueError(f"section {self.name}: a row name appears twice")
        return self

    @property
    def seat_count(self) -> int:
        return sum(len(row.numbers) for row in self.rows or [])


class SeatMapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sections: list[SectionSpec] = Field(min_length=1, max_length=MAX_SECTIONS)

    @model_validator(mode="after")
    def _sound(self) -> SeatMapSpec:
        names = [section.name for section in self.sections]
        if len(set(names)) != len(names):
            raise ValueError("a section name appears twice")
        seats = sum(section.seat_count for section in self.sections)
        if seats > MAX_SEATS:
            raise ValueError(f"{seats} seats: at most {MAX_SEATS}")
        return self


@dataclass(frozen=True)
class SeatMapSummary:
    sections: int
    seats: int
    standing: int
    dropped_products: list[int]  # standing sections' products the new map has no place for


def replace_seat_map(session: Session, event: Event, spec: SeatMapSpec) -> SeatMapSummary:
    """The event's sections and seats become the map's (the caller commits). A section keeps its
    row when its name stays; the product of a standing section that is gone (or now seated)
    goes with it: only while the event has no order (see check_seat_map_may_change)."""
    prices = [_price_minor(section, event.currency) for section in spec.sections]
    event.updated_at = utcnow()  # the map's version, for those who keep its layout
    event.price_min_minor, event.price_max_minor = min(prices), max(prices)
    session.execute(delete(Seat).where(Seat.event_id == event.id))
    existing = {
        s.name: s
        for s in session.scalars(select(EventSection).where(EventSection.event_id == event.id))
    }
    sections = []
    for position, (section, price) in enumerate(zip(spec.sections, prices, strict=True)):
        stored = existing.pop(section.name, None) or EventSection(
            event_id=event.id, name=section.name
        )
        stored.position, stored.price_minor = position, price
        stored.capacity, stored.seat_count = section.capacity, section.seat_count
        sections.append(stored)
    session.add_all(sections)
    no_place = [s.id for s in existing.values()] + [s.id for s in sections if s.capacity is None]
    dropped = list(session.scalars(select(Product.id).where(Product.section_id.in_(no_place))))
    if dropped:
        session.execute(delete(Product).where(Product.id.in_(dropped)))
    for gone in existing.values():
        session.delete(gone)
    session.flush()
    rows = [
        seat
        for position, (section, stored) in enumerate(zip(spec.sections, sections, strict=True))
        for seat in _seats(event.id, stored.id, position, section)
    ]
    if rows:
        session.execute(insert(Seat), rows)
    return SeatMapSummary(
        sections=len(sections),
        seats=len(rows),
        standing=sum(section.capacity or 0 for section in spec.sections),
        dropped_products=dropped,
    )


def longest_rows(seats: Iterable[tuple[int, str, int]]) -> dict[int, int]:
    """Each section's most seats side by side in one row (numbers in a row that follow one
    another; a missing number is an aisle), from its seats' (section, row, number)."""
    numbers: dict[tuple[int, str], set[int]] = defaultdict(set)
    for section, row, number in seats:
        numbers[section, row].add(number)
    longest: dict[int, int] = defaultdict(int)
    for (section, _), taken in numbers.items():
        for number in taken:
            if number - 1 not in taken:  # a run starts here
                end = number
                while end + 1 in taken:
                    end += 1
                longest[section] = max(longest[section], end - number + 1)
    return dict(longest)


def seat_label(section: str, row: str, number: int) -> str:
    return f"{section}-{row}-{number}"


def _price_minor(section: SectionSpec, currency: str) -> int:
    try:
        return to_minor(section.price, currency)
    except AmountError as exc:
        raise SeatMapRefused(f"section {section.name}: {exc}") from None


def _seats(
    event_id: int, section_id: int, position: int, section: SectionSpec
) -> list[dict[str, object]]:
    seats: list[dict[str, object]] = []
    for row_position, row in enumerate(section.rows or []):
        numbers = row.numbers
        middle = (len(numbers) - 1) / 2
        for index, number in enumerate(numbers):
            if row.ranks is not None:
                rank = row.ranks[index]
            else:
                distance = int(abs(index - middle) * 2)
                rank = position * SECTION_SPAN + row_position * ROW_SPAN + distance
            seats.append(
                {
                    "event_id": event_id,
                    "section_id": section_id,
                    "label": seat_label(section.name, row.name, number),
                    "row": row.name,
                    "number": number,
                    "rank": rank,
                }
            )
    return seats


@dataclass(frozen=True)
class RowLayout:
    name: str
    numbers: tuple[int, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SectionLayout:
    name: str
    price_minor: int
    rows: tuple[RowLayout, ...]


def seated_layout(session: Session, event_id: int) -> list[SectionLayout]:
    """The seated sections, their rows and seats in the map's order (rows and seats as
    uploaded: a row's seats by number)."""
    sections = session.scalars(
        select(EventSection)
        .where(EventSection.event_id == event_id, EventSection.capacity.is_(None))
        .order_by(EventSection.position)
    ).all()
    rows: dict[int, dict[str, list[int]]] = {s.id: {} for s in sections}
    seats = session.execute(
        select(Seat.section_id, Seat.row, Seat.number)
        .where(Seat.event_id == event_id)
        .order_by(Seat.id)
    )
    for section_id, row, number in seats:
        rows[section_id].setdefault(row, []).append(number)
    return [
        SectionLayout(
            section.name,
            section.price_minor,
            tuple(
                RowLayout(
                    row,
                    tuple(sorted(numbers)),
                    tuple(seat_label(section.name, row, n) for n in sorted(numbers)),
                )
                for row, numbers in rows[section.id].items()
            ),
        )
        for section in sections
    ]
