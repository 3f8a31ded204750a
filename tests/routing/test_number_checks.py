"""Card numbers by issuer range and Luhn sum, IBANs by registered length and mod-97 sum."""

from __future__ import annotations

import pytest

from gateway.routing.number_checks import card_number_ok, iban_ok


@pytest.mark.parametrize("digits", [
    "4111111111111111",  # Visa
    "4222222222222",  # Visa, 13 digits
    "378282246310005",  # American Express
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard, 2-series
    "30569309025904",  # Diners Club, 14 digits
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "6200000000000005",  # UnionPay
])
def test_test_cards_of_every_major_scheme_pass(digits: str) -> None:
    assert card_number_ok(digits)


@pytest.mark.parametrize("digits", [
    "4111111111111112",  # Luhn fails
    "1111111111111117",  # no issuer starts with 1
    "3782822463100051",  # an American Express prefix at 16 digits
    "41111111111111",  # Visa at 14 digits
    "9111111111111119",
])
def test_numbers_of_no_issuer_or_a_bad_sum_fail(digits: str) -> None:
    assert not card_number_ok(digits)


@pytest.mark.parametrize("candidate", ["DE89370400440532013000", "GB82WEST12345698765432", "NO9386011117947"])
def test_registered_ibans_with_good_check_digits_pass(candidate: str) -> None:
    assert iban_ok(candidate)


@pytest.mark.parametrize("candidate", [
    "DE89370400440532013001",  # check digits wrong
    "DE8937040044053201300",  # a character short for Germany
    "XX89370400440532013000",  # no such country
    "GB82WEST1234569876543",
])
def test_ibans_of_the_wrong_length_country_or_sum_fail(candidate: str) -> None:
    assert not iban_ok(candidate)
