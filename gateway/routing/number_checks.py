"""Checks on a candidate's characters: card issuer ranges and the Luhn sum, IBAN lengths and the mod-97 sum."""

from __future__ import annotations

import re

__all__ = ["card_number_ok", "iban_ok"]

_DIGIT = ord("0")
_LETTER = re.compile("[A-Z]")
# Country code followed by total IBAN length, from the SWIFT IBAN registry.
_IBAN_FORMATS = frozenset(
    {"AD24", "AE23", "AL28", "AT20", "AZ28", "BA20", "BE16", "BG22", "BH22", "BI27", "BR29", "BY28", "CH21", "CR22",
     "CY28", "CZ24", "DE22", "DJ27", "DK18", "DO28", "EE20", "EG29", "ES24", "FI18", "FK18", "FO18", "FR27", "GB22",
     "GE22", "GI23", "GL18", "GR27", "GT28", "HR21", "HU28", "IE22", "IL23", "IQ23", "IS26", "IT27", "JO30", "KW30",
     "KZ20", "LB28", "LC32", "LI21", "LT20", "LU20", "LV21", "LY25", "MC27", "MD24", "ME22", "MK19", "MN20", "MR27",
     "MT31", "MU30", "NI28", "NL18", "NO15", "OM23", "PK24", "PL28", "PS29", "QA29", "RO24", "RS22", "RU33", "SA24",
     "SC31", "SD18", "SE24", "SI19", "SK24", "SM27", "SO23", "ST25", "SV28", "TL23", "TN24", "TR26", "UA29", "VA22",
     "VG24", "XK20", "YE30"}
)


def iban_ok(candidate: str) -> bool:
    """True when an upper-case candidate has its country's registered length and valid check digits."""
    return f"{candidate[:2]}{len(candidate)}" in _IBAN_FORMATS and _mod97(candidate) == 1


def card_number_ok(digits: str) -> bool:
    """True when digits are a card number from a known issuer that passes the Luhn check."""
    return _known_issuer(digits) and _luhn(digits)


def _known_issuer(digits: str) -> bool:
    """True when a card number's prefix and length belong to a major card scheme."""
    if digits[0] not in "23456":
        return False
    length, two, three, four = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return length in (13, 16, 19)  # Visa
    if two in (34, 37):
        return length == 15  # American Express
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return length == 16  # Mastercard
    if length < 14:
        return False
    if 300 <= three <= 305 or two in (36, 38, 39) or four == 3095:
        return True  # Diners Club
    if length < 16:
        return False
    return (
        four == 6011 or two in (62, 65) or 644 <= three <= 649  # Discover, UnionPay
        or 3528 <= four <= 3589  # JCB
        or 2200 <= four <= 2204  # Mir
        or two in (50, 56, 57, 58, 67)  # Maestro
    )


def _luhn(digits: str) -> bool:
    """True when digits pass the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - _DIGIT
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mod97(iban: str) -> int:
    """The ISO 7064 mod-97 remainder of an upper-case IBAN, 1 for a valid one."""
    return int(_LETTER.sub(_letter_value, iban[4:] + iban[:4])) % 97


def _letter_value(match: re.Match[str]) -> str:
    """The digits an IBAN letter stands for: A is 10, Z is 35."""
    return str(ord(match[0]) - 55)
