"""Exact amounts: prices are kept as integers in the currency's minor unit."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated

from pydantic import WithJsonSchema

# ISO 4217 currencies without a minor unit (or with three decimals); the rest have two.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


# An amount in an answer: a decimal string, exact in its currency (`to_decimal_string`).
AmountText = Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"})]


class AmountError(ValueError):
    """An amount that cannot be represented exactly in its currency."""


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """Convert a decimal amount to minor units, refusing fractions the currency cannot hold."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation as exc:
        raise AmountError(f"not a number: {amount!r}") from exc
    if not value.is_finite():
        raise AmountError("amount must be finite")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{currency} has {exponent(currency)} decimal places")
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_decimal_string(minor: int, currency: str) -> str:
    exp = exponent(currency)
    value = Decimal(minor).scaleb(-exp)
    return f"{value:.{exp}f}"
