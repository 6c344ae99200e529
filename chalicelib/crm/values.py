"""Value types of CRM records: E.164 phone numbers, money in minor units, http(s) URLs."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import PydanticCustomError

from chalicelib.auth.addresses import normalize_email

# ISO 4217 active codes (alphabetic), 2025 list. Data, not logic: updated when ISO updates it.
CURRENCIES = frozenset("""
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF
CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP
GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT
LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR
NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF
XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG
""".split())  # noqa: SIM905 - a pasted list reads best as text
# Amounts are bigint in the database.
MAX_MINOR = 2**63 - 1
# A price, a proposal line and a proposal's total: at most a hundred trillion minor units (the products' and
# proposals' CHECKs say the same).
MAX_PRICE_MINOR = 10**14


def normalize_phone(value: str) -> str:
    """The E.164 form of an international number (+ and country code required), else a 422."""
    import phonenumbers  # lazily: it is large, and only writes need it

    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise PydanticCustomError("phone_number",
                                  "must be a valid phone number with its country code, like +14155550123")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def check_currency(value: str) -> str:
    """An ISO 4217 code."""
    if value not in CURRENCIES:
        raise PydanticCustomError("currency", "must be an ISO 4217 currency code like EUR")
    return value


def check_url(value: str) -> str:
    """An absolute http(s) URL."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        raise PydanticCustomError("url", "must be an absolute http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 2048:
        raise PydanticCustomError("url", "must be an absolute http or https URL")
    return value


def check_email(value: str) -> str:
    """A record's email address: one plain recipient, normalized. Its refusal is a field error (422) like
    any other field's; only sign-in treats a confusing address as a malformed request (400)."""
    try:
        return normalize_email(value)
    except PydanticCustomError as exc:
        raise PydanticCustomError("email", exc.message()) from None


Email = Annotated[str, AfterValidator(check_email)]
Phone = Annotated[str, AfterValidator(normalize_phone)]
Currency = Annotated[str, AfterValidator(check_currency)]
Url = Annotated[str, AfterValidator(check_url)]


class Money(BaseModel):
    """An amount in integer minor units (cents) and its currency; never a float."""

    model_config = ConfigDict(extra="forbid")
    amount_minor: StrictInt = Field(ge=-MAX_MINOR, le=MAX_MINOR)
    currency: Currency
