"""CRM value types (E.164 phones, money, currencies, URLs), custom-field value rules, and the CSV reader
of the import — no database."""

from __future__ import annotations

import csv
import io
from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from chalicelib import errors
from chalicelib.crm import custom_fields
from chalicelib.crm.import_rows import custom_cell, parse_csv
from chalicelib.crm.values import CURRENCIES, MAX_MINOR, Money, Phone, check_currency, check_url, normalize_phone

# ---- phones -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "e164"), [
    ("+1 (415) 555-0123", "+14155550123"),
    ("+14155550123", "+14155550123"),
    ("+44 20 7183 8750", "+442071838750"),
    ("+49 30 901820", "+4930901820"),
    ("  +33 1 42 68 53 00 ", "+33142685300"),
])
def test_phones_are_normalized_to_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize("raw", ["4155550123", "+1 555", "+999 123 456 789", "phone", "", "+", "+1 415 555 01234 5"])
def test_invalid_phones_are_refused(raw: str) -> None:
    with pytest.raises(PydanticCustomError):
        normalize_phone(raw)


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(REGIONS))
def test_every_regions_example_number_normalizes_idempotently(region: str) -> None:
    example = phonenumbers.example_number(region)
    if example is None:
        return
    international = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    e164 = normalize_phone(international)
    assert e164.startswith("+") and e164[1:].isdigit() and len(e164) <= 16
    assert normalize_phone(e164) == e164


def test_phone_annotated_type_reports_the_field_without_the_value() -> None:
    class Holder(BaseModel):
        phone: Phone

    with pytest.raises(ValidationError) as caught:
        Holder(phone="+1 zyx 555")
    [problem] = caught.value.errors()
    assert problem["loc"] == ("phone",) and "zyx" not in problem["msg"]


# ---- money and currencies -----------------------------------------------------------------------


def test_money_is_integer_minor_units_and_an_iso_code() -> None:
    assert Money(amount_minor=1250, currency="EUR").model_dump() == {"amount_minor": 1250, "currency": "EUR"}
    assert Money.model_validate({"amount_minor": -5, "currency": "JPY"}).amount_minor == -5
    assert Money.model_validate({"amount_minor": MAX_MINOR, "currency": "USD"}).amount_minor == MAX_MINOR


@pytest.mark.parametrize("value", [
    {"amount_minor": 12.5, "currency": "EUR"},
    {"amount_minor": 12.0, "currency": "EUR"},
    {"amount_minor": "1250", "currency": "EUR"},
    {"amount_minor": True, "currency": "EUR"},
    {"amount_minor": MAX_MINOR + 1, "currency": "EUR"},
    {"amount_minor": 1, "currency": "eur"},
    {"amount_minor": 1, "currency": "ABC"},
    {"amount_minor": 1},
    {"amount_minor": 1, "currency": "EUR", "rate": 1},
])
def test_money_refuses_fractions_strings_unknown_currencies_and_extras(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate(value)


def test_currency_codes() -> None:
    assert {"EUR", "USD", "JPY", "GBP", "CHF"} <= CURRENCIES
    assert all(len(c) == 3 and c.isupper() for c in CURRENCIES)
    assert check_currency("EUR") == "EUR"
    for bad in ("eur", "EU", "EURO", "XYZ", ""):
        with pytest.raises(PydanticCustomError):
            check_currency(bad)


@pytest.mark.parametrize("url", ["https://example.com", "http://example.com/a?b=c#d", "https://127.0.0.1:8000/x"])
def test_urls_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url", ["ftp://example.com", "javascript:alert(1)", "example.com", "https://", "//x.com",
                                 "https://" + "a" * 2050 + ".com", "http://[abc", "https://[::1"])
def test_urls_refused(url: str) -> None:
    with pytest.raises(PydanticCustomError):
        check_url(url)


# ---- custom field values ------------------------------------------------------------------------


@pytest.mark.parametrize(("field_type", "options", "value", "normalized"), [
    ("text", [], "x", "x"),
    ("number", [], 10**30, 10**30),
    ("number", [], -1.5, -1.5),
    ("boolean", [], False, False),
    ("date", [], "2024-02-29", "2024-02-29"),
    ("datetime", [], "2024-02-29T23:59:59.5Z", "2024-02-29T23:59:59.5Z"),
    ("select", ["a"], "a", "a"),
    ("multi_select", ["a", "b"], ["b"], ["b"]),
    ("url", [], "https://x.example", "https://x.example"),
    ("email", [], " X@Y.Example ", "x@y.example"),
    ("phone", [], "+1 415 555 0123", "+14155550123"),
    ("currency", [], {"amount_minor": 1, "currency": "CHF"}, {"amount_minor": 1, "currency": "CHF"}),
])
def test_check_value_accepts_and_normalizes(field_type: str, options: list[str], value: Any, normalized: Any) -> None:
    assert custom_fields.check_value(field_type, options, value) == (normalized, None)


@pytest.mark.parametrize(("field_type", "options", "value"), [
    ("text", [], 1), ("number", [], float("inf")), ("number", [], float("nan")), ("number", [], True),
    ("number", [], "1"), ("boolean", [], "yes"), ("date", [], "2023-02-29"), ("date", [], "2024-2-1"),
    ("datetime", [], "2024-02-29T10:00"), ("select", ["a"], "b"), ("multi_select", ["a"], ["a", "a"]),
    ("multi_select", ["a"], "a"), ("url", [], 5), ("email", [], "two@a.example,b@c.example"), ("phone", [], "12"),
    ("currency", [], {"amount_minor": 1.5, "currency": "EUR"}), ("currency", [], "1 EUR"),
])
def test_check_value_refuses_with_a_reason(field_type: str, options: list[str], value: Any) -> None:
    normalized, problem = custom_fields.check_value(field_type, options, value)
    assert normalized is None and problem


def test_check_refuses_unknown_keys_requires_required_ones_and_drops_nulls() -> None:
    fields = {"tier": ("select", ["gold"], True), "note": ("text", [], False)}
    assert custom_fields.check(fields, {"tier": "gold", "note": None}) == {"tier": "gold"}
    with pytest.raises(errors.ValidationFailed) as caught:
        custom_fields.check(fields, {"colour": "red", "note": 5})
    assert sorted(e.field for e in caught.value.errors) == ["custom.colour", "custom.note", "custom.tier"]


# ---- CSV cells and files ------------------------------------------------------------------------


@pytest.mark.parametrize(("field_type", "text", "value"), [
    ("number", "12", 12), ("number", "-12.5", -12.5), ("number", "1e3", 1000.0),
    ("boolean", "Yes", True), ("boolean", "0", False), ("boolean", "FALSE", False),
    ("multi_select", "a; b ;;c", ["a", "b", "c"]),
    ("currency", "12500 eur", {"amount_minor": 12500, "currency": "EUR"}),
    ("text", "as is", "as is"), ("date", "2030-01-01", "2030-01-01"),
])
def test_custom_cells_are_read_by_type(field_type: str, text: str, value: Any) -> None:
    assert custom_cell(field_type, text) == value


@pytest.mark.parametrize(("field_type", "text"), [
    ("number", "twelve"), ("number", "1,5"), ("number", "nan"), ("number", "inf"), ("boolean", "maybe"),
    ("currency", "12.50 EUR"), ("currency", "EUR 12"), ("currency", "12"),
])
def test_unreadable_custom_cells(field_type: str, text: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        custom_cell(field_type, text)


def test_parse_csv_handles_bom_crlf_quotes_and_trims() -> None:
    sheet = parse_csv('\ufeff First_Name ,Email\r\n"Ann, Jr",  a@x.example \r\n"Multi\nLine",\r\n'.encode())
    assert sheet.columns == ("first_name", "email")
    assert sheet.rows == [(1, {"first_name": "Ann, Jr", "email": "a@x.example"}), (2, {"first_name": "Multi\nLine"})]
    assert sheet.errors == []


def test_parse_csv_refuses_what_is_not_a_csv() -> None:
    for raw in (b"", b"\n", b" , \n", b"a,a\n", b"a,,b\n", b"a\n\xff\n", b"a\nx\x00y\n", b'a\n"open\n'):
        with pytest.raises(errors.BadRequest):
            parse_csv(raw)


def test_parse_csv_counts_rows_against_the_limit_without_blank_ones() -> None:
    assert len(parse_csv(b"a\n" + b"x\n\n" * 3, max_rows=3).rows) == 3
    with pytest.raises(errors.PayloadTooLarge):
        parse_csv(b"a\n" + b"x\n" * 4, max_rows=3)


cells = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r"), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(cells, min_size=3, max_size=3), max_size=12))
def test_parse_csv_reads_back_what_a_csv_writer_wrote(rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows)
    sheet = parse_csv(buffer.getvalue().encode())
    expected = [(i, {k: v.strip() for k, v in zip("abc", row, strict=True) if v.strip()})
                for i, row in enumerate(rows, start=1) if any(v.strip() for v in row)]
    assert sheet.rows == expected
