"""Currencies and their minor units. Amounts are always integers in minor units."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.domain.errors import InvalidRequest

# ISO 4217 minor-unit exponents of the currencies the service knows.
ISO_4217_EXPONENTS: dict[str, int] = {
    "AED": 2,
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "UGX": 0,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

MAX_AMOUNT_MINOR_UNITS = 10**15


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int

    @classmethod
    def of(cls, code: str) -> Currency:
        exponent = ISO_4217_EXPONENTS.get(code)
        if exponent is None:
            raise InvalidRequest(f"unknown or unsupported currency code {code!r}", code="unknown_currency")
        return cls(code=code, exponent=exponent)
