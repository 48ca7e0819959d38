"""What a request may carry, validated with pydantic: bodies (strict types: "2" is not a
quantity), query strings and headers. The OpenAPI document shows these models."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.keys import MAX_BUCKETS

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
MAX_SEATS_PER_PURCHASE = 10
MAX_PAGE, MAX_PER_PAGE = 100_000, 100

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=72)]
# One line of text: no control character (C0, DEL, C1) and no line or paragraph separator
# (U+2028, U+2029), which a mail header or a log line would read as a line break.
ONE_LINE_CHAR = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
Name = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=200, strip_whitespace=True, pattern=rf"^{ONE_LINE_CHAR}+$"
    ),
]
PaymentMethod = Annotated[
    str, StringConstraints(min_length=4, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
MAX_STOCK = 10_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date out of range") from None


class Credentials(Strict):
    username: Username
    password: Password

    @field_validator("password")
    @classmethod
    def _fits_bcrypt(cls, value: str) -> str:
        if len(value.encode()) > 72 or "\x00" in value:
            raise ValueError("password: at most 72 bytes, no NUL characters")
        return value


class Registration(Credentials):
    email: EmailStr | None = Field(default=None, description="where the buyer's mail goes")


class MeUpdate(Strict):
    email: EmailStr | None = Field(description="null: no more mail")


class LoginRequest(Strict):
    # No NUL: PostgreSQL refuses it in a query parameter (a 500); no username can hold one.
    username: Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[^\x00]+$")]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class LogoutRequest(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="the refresh token of the same login, revoked with the presented token"
    )


class SaleWindow(Strict):
    sale_starts_at: datetime | None = Field(default=None, strict=False)
    sale_ends_at: datetime | None = Field(default=None, strict=False)

    @field_validator("sale_starts_at", "sale_ends_at")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> SaleWindow:
        if self.sale_starts_at and self.sale_ends_at and self.sale_ends_at <= self.sale_starts_at:
            raise ValueError("sale_ends_at must be after sale_starts_at")
        return self


class RoomSettings(Strict):
    """A waiting room in front of the sale, admitting `admit_per_second` buyers a second."""

    waiting_room: bool = False
    admit_per_second: int = Field(default=0, ge=0, le=100_000)

    @model_validator(mode="after")
    def _has_a_rate(self) -> RoomSettings:
        if self.waiting_room and not self.admit_per_second:
            raise ValueError("a waiting room needs admit_per_second (1 or more)")
        return self


class ProductCreate(SaleWindow, RoomSettings):
    name: Name
    price: Decimal = Field(strict=False, gt=0, le=Decimal("1000000000"))
    currency: Currency | None = None
    stock: int = Field(ge=1, le=MAX_STOCK)
    max_per_user: int = Field(default=0, ge=0, le=1000)
    buckets: int = Field(
        default=1,
        ge=1,
        le=MAX_BUCKETS,
        description="a hot product's stock split across this many Redis hash tags, so that a "
        "Redis Cluster serves one product from several primaries; a purchase is served from "
        "one bucket (the buyer's own, or the next with units). Fixed at creation",
    )

    @field_validator("price", mode="before")
    @classmethod
    def _price_is_number_or_string(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("price must be a number or a decimal string")
        return str(value) if isinstance(value, float) else value


class ProductUpdate(SaleWindow):
    add_stock: int = Field(default=0, ge=0, le=MAX_STOCK)
    waiting_room: bool | None = None
    admit_per_second: int | None = Field(default=None, ge=0, le=100_000)
    max_per_user: int | None = Field(default=None, ge=0, le=1000)
    name: Name | None = None


Title = Name  # an event's title and venue
Text = Annotated[str, StringConstraints(max_length=5000, pattern=r"^[^\x00]*$")]
Label = Annotated[str, StringConstraints(max_length=200, pattern=rf"^{ONE_LINE_CHAR}*$")]
Category = Annotated[str, StringConstraints(max_length=50, pattern=rf"^{ONE_LINE_CHAR}*$")]
ImageUrl = Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://[^\s\x00]+$")]
Moment = Annotated[datetime, Field(strict=False)]


# Each of an event's products counts its own buyers (one Redis hash tag each, one script call a
# purchase): a per-event count would need a call across all of them.
EVENT_LIMIT = (
    "the most a buyer may hold or buy of each of the event's products, 0 for no limit: its "
    "seats (every seated section together) are one product, each standing section another "
    "(a limit of 1 lets a buyer have one seat and one place in each standing section)"
)


class EventFields(SaleWindow):
    """What an event says about itself, in both its creation and its changes."""

    @field_validator("starts_at", "ends_at", check_fields=False)
    @classmethod
    def _starts_as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _ends_after_start(self) -> EventFields:
        starts, ends = getattr(self, "starts_at", None), getattr(self, "ends_at", None)
        if starts and ends and ends <= starts:
            raise ValueError("ends_at must be after starts_at")
        return self


class EventCreate(EventFields):
    title: Title
    venue: Title
    starts_at: Moment
    ends_at: Moment | None = None
    description: Text = ""
    category: Category = ""
    location: Label = ""
    image_url: ImageUrl | None = None
    currency: Currency | None = None
    max_per_user: int = Field(default=0, ge=0, le=1000, description=EVENT_LIMIT)
    transfers_allowed: bool = Field(default=True, description="buyers may give their tickets")


class EventUpdate(EventFields):
    """Only the fields given change; null clears the optional ones."""

    title: Title | None = None
    venue: Title | None = None
    starts_at: Moment | None = None
    ends_at: Moment | None = None
    description: Text | None = None
    category: Category | None = None
    location: Label | None = None
    image_url: ImageUrl | None = None
    max_per_user: int | None = Field(default=None, ge=0, le=1000, description=EVENT_LIMIT)
    transfers_allowed: bool | None = None

    @model_validator(mode="after")
    def _required_stay(self) -> EventUpdate:
        for name in REQUIRED_EVENT_FIELDS & self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


REQUIRED_EVENT_FIELDS = {
    "title",
    "venue",
    "starts_at",
    "description",
    "category",
    "location",
    "max_per_user",
    "transfers_allowed",
}


SectionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,10}$")]
SeatId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,10}-[A-Za-z0-9]{1,10}-[0-9]{1,6}$")
]


class SeatPurchase(Strict):
    """Those exact `seats`, all or none; or the best available `quantity` of a `section`, side by
    side in one row when `together`."""

    seats: list[SeatId] | None = Field(
        default=None, min_length=1, max_length=MAX_SEATS_PER_PURCHASE
    )
    section: SectionName | None = None
    quantity: int | None = Field(default=None, ge=1, le=MAX_SEATS_PER_PURCHASE)
    together: bool = False
    payment_method: PaymentMethod

    @model_validator(mode="after")
    def _one_way(self) -> SeatPurchase:
        if self.seats is not None:
            if self.section is not None or self.quantity is not None or self.together:
                raise ValueError("either seats, or section and quantity (and together)")
            if len(set(self.seats)) != len(self.seats):
                raise ValueError("a seat appears twice")
        elif self.section is None or self.quantity is None:
            raise ValueError("seats, or section and quantity")
        return self


class PurchaseRequest(Strict):
    quantity: int = Field(ge=1, le=100)
    payment_method: PaymentMethod


class PurchaseHeaders(BaseModel):
    queue_pass: str | None = Field(
        default=None,
        alias="X-Queue-Pass",
        max_length=1000,
        description="the waiting room's pass, when the sale has a room (GET /queue/<id>/status)",
    )
    idempotency_key: Annotated[
        Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)] | None,
        WithJsonSchema({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}),
    ] = Field(
        default=None,
        alias="Idempotency-Key",
        description="a replay of the same key answers the first ticket again",
    )


def _digits(value: object) -> object:
    """A query number is written in ASCII digits ("+1", "1.0", "1_0" and "²" are not)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("a whole number in digits")
    return value


QueryNumber = Annotated[int, BeforeValidator(_digits)]


class OrderPageQuery(BaseModel):
    page: QueryNumber = Field(default=1, ge=1, le=MAX_PAGE)
    per_page: QueryNumber = Field(default=20, ge=1, le=MAX_PER_PAGE)


class StripeHeaders(BaseModel):
    stripe_signature: str = Field(alias="Stripe-Signature", description="checked by Stripe's SDK")


class StripeEvent(BaseModel):
    """A Stripe event, read by Stripe's SDK once its signature verifies."""

    model_config = ConfigDict(extra="allow")


class TransferRequest(Strict):
    to: Username = Field(description="the buyer who receives the ticket")


class ScanRequest(Strict):
    code: str = Field(min_length=1, max_length=200, description="the ticket's code, as its QR")
    event_id: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="the event this gate admits to"
    )
    product_id: int | None = Field(
        default=None,
        ge=1,
        le=2_147_483_647,
        description="instead of an event: the drop (a product sold without an event) it admits to",
    )

    @model_validator(mode="after")
    def _one_gate(self) -> ScanRequest:
        if (self.event_id is None) == (self.product_id is None):
            raise ValueError("name the gate's event_id, or product_id for a drop without an event")
        return self


MAX_SEARCH_CHARS = 200
MAX_SEARCH_PAGE, MAX_SEARCH_PER_PAGE = 100, 50
_WHITESPACE_CONTROLS = "\t\n\r"
_NOT_TEXT = {"Cc", "Cs", "Co", "Cn"}  # controls, lone surrogates, private use, unassigned
_DAY_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _typed_text(value: str) -> str:
    """Text a person could have typed: no control characters (tabs and newlines count as spaces),
    no U+FFFD (bytes that were not UTF-8), no unassigned, private or surrogate code points."""
    for char in value:
        if char in _WHITESPACE_CONTROLS:
            continue
        if char == "\ufffd" or unicodedata.category(char) in _NOT_TEXT:
            raise ValueError(f"holds a character that is not text (U+{ord(char):04X})")
    return value


def _through_the_day(value: object) -> object:
    """`to=2026-12-06` takes in the whole day."""
    if isinstance(value, str) and _DAY_ONLY.match(value):
        day = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return day + timedelta(days=1) - timedelta(microseconds=1)
    return value


def _query_price(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"\d{1,10}(\.\d{1,4})?", value):
        raise ValueError("a price in digits, as 50 or 49.99")
    return value


SearchText = Annotated[
    str, StringConstraints(max_length=MAX_SEARCH_CHARS), AfterValidator(_typed_text)
]
SearchLabel = Annotated[str, StringConstraints(max_length=200), AfterValidator(_typed_text)]
QueryMoment = Annotated[datetime, Field(strict=False), AfterValidator(_utc)]
QueryPrice = Annotated[Decimal, BeforeValidator(_query_price), Field(strict=False, ge=0)]


class EventSearchQuery(BaseModel):
    """`q` is matched against title, description, venue and location (misspellings, word
    beginnings, any two characters of a Korean, Japanese or Chinese word); empty, events are
    listed by date. Filters: `from`/`to` bound the start (`to` as a day takes the whole day;
    `from` defaults to now), `category` and `venue` are exact (any case), `min_price`/`max_price`
    keep events with a ticket in that range in `currency` (the default currency unless given).
    Admins may ask for other statuses than published."""

    q: SearchText = ""
    category: SearchLabel | None = None
    venue: SearchLabel | None = None
    starts_from: QueryMoment | None = Field(default=None, alias="from")
    to: Annotated[QueryMoment | None, BeforeValidator(_through_the_day)] = None
    min_price: QueryPrice | None = None
    max_price: QueryPrice | None = None
    currency: Currency | None = None
    sort: Literal["relevance", "date", "price"] = "relevance"
    status: Literal["published", "draft", "cancelled", "all"] = "published"
    page: QueryNumber = Field(default=1, ge=1, le=MAX_SEARCH_PAGE)
    per_page: QueryNumber = Field(default=20, ge=1, le=MAX_SEARCH_PER_PAGE)

    @model_validator(mode="after")
    def _ranges_in_order(self) -> EventSearchQuery:
        if self.starts_from and self.to and self.to < self.starts_from:
            raise ValueError("to is before from")
        low, high = self.min_price, self.max_price
        if low is not None and high is not None and high < low:
            raise ValueError("max_price is below min_price")
        return self


class SuggestQuery(BaseModel):
    """The words typed so far: titles with a word beginning as each."""

    q: SearchText = ""
