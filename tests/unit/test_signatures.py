"""Provider signature checks: documented vectors, port variants, tampering, replay windows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.inbox.providers.mailgun import signature_valid as mailgun_valid
from chalicelib.inbox.providers.signnow import signature_valid as signnow_valid
from chalicelib.inbox.providers.stripe import signature_valid as stripe_valid
from chalicelib.inbox.providers.twilio import signature as twilio_signature
from chalicelib.inbox.providers.twilio import signature_valid as twilio_valid
from chalicelib.inbox.providers.whatsapp import signature_valid as whatsapp_valid
from chalicelib.inbox.refusals import Replayed

# twilio-ruby's request validator spec: a real Voice webhook and its signature.
TWILIO_TOKEN = "2bd9e9638872de601313dc77410d3b23"
TWILIO_URL = "http://twiliotests.heroku.com/validate/voice"
TWILIO_PARAMS = {
    "ToState": "California", "CalledState": "California", "Direction": "inbound", "FromState": "CA",
    "AccountSid": "ACba8bc05eacf94afdae398e642c9cc32d", "Caller": "+14153595711", "CallerZip": "94108",
    "CallerCountry": "US", "From": "+14153595711", "FromCity": "SAN FRANCISCO", "CallerCity": "SAN FRANCISCO",
    "To": "+14157669926", "FromZip": "94108", "FromCountry": "US", "ToCity": "", "CallStatus": "ringing",
    "CalledCity": "", "CallerState": "CA", "CalledZip": "", "ToZip": "", "ToCountry": "US",
    "CallSid": "CA136d09cd59a3c0ec8dbff44da5c03f31", "CalledCountry": "US", "Called": "+14157669926",
    "ApiVersion": "2010-04-01", "ApplicationSid": "AP44efecad51364e80b133bb7c07eb8204",
}
TWILIO_SIGNATURE = "oVb2kXoVy8GEfwBDjR8bk/ZZ6eA="


def test_twilio_documented_vector_is_accepted() -> None:
    assert twilio_signature(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS.items()) == TWILIO_SIGNATURE
    assert twilio_valid(TWILIO_TOKEN, TWILIO_URL, {k: [v] for k, v in TWILIO_PARAMS.items()}, TWILIO_SIGNATURE)


def test_twilio_tampered_param_url_or_token_is_refused() -> None:
    params = {k: [v] for k, v in TWILIO_PARAMS.items()}
    assert not twilio_valid(TWILIO_TOKEN, TWILIO_URL, {**params, "To": ["+15550000000"]}, TWILIO_SIGNATURE)
    assert not twilio_valid(TWILIO_TOKEN, TWILIO_URL + "x", params, TWILIO_SIGNATURE)
    assert not twilio_valid("0" * 32, TWILIO_URL, params, TWILIO_SIGNATURE)
    assert not twilio_valid(TWILIO_TOKEN, TWILIO_URL, params, None)


def test_twilio_signature_made_with_or_without_the_default_port_validates() -> None:
    url = "https://crm.example/webhooks/twilio/w/calls"
    params = [("CallSid", "CA" + "1" * 32), ("CallStatus", "completed")]
    for signed_url in ("https://crm.example:443/webhooks/twilio/w/calls", url):
        signature = twilio_signature("token", signed_url, params)
        assert twilio_valid("token", url, params, signature)
        assert twilio_valid("token", "https://crm.example:443/webhooks/twilio/w/calls", params, signature)


def test_whatsapp_signature_is_over_the_raw_bytes() -> None:
    raw = json.dumps({"text": "héllo 👋", "quote": "\u2019"}, ensure_ascii=False).encode()
    header = "sha256=" + hmac.new(b"app-secret", raw, hashlib.sha256).hexdigest()
    assert whatsapp_valid("app-secret", raw, header)
    # The same document re-serialized (escaped unicode) is different bytes: refused.
    reserialized = json.dumps(json.loads(raw)).encode()
    assert reserialized != raw
    assert not whatsapp_valid("app-secret", reserialized, header)
    assert not whatsapp_valid("app-secret", raw, None)
    assert not whatsapp_valid("app-secret", raw, header.replace("sha256=", "sha1="))
    assert not whatsapp_valid("other-secret", raw, header)


def test_mailgun_signature_window_and_tampering() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    timestamp, token = str(int(now.timestamp()) - 60), "a" * 50
    signature = hmac.new(b"key-1", (timestamp + token).encode(), hashlib.sha256).hexdigest()
    assert mailgun_valid("key-1", timestamp, token, signature, now)
    assert not mailgun_valid("key-1", timestamp, token + "b", signature, now)
    assert not mailgun_valid("key-2", timestamp, token, signature, now)
    old = str(int(now.timestamp()) - 301)
    old_signature = hmac.new(b"key-1", (old + token).encode(), hashlib.sha256).hexdigest()
    assert not mailgun_valid("key-1", old, token, old_signature, now)
    assert not mailgun_valid("key-1", "not-a-number", token, signature, now)
    for odd in ("\u00b2", "\u0663" * 10, "1" * 5000):  # isdigit() but not int()-able, or past int()'s digit limit
        assert not mailgun_valid("key-1", odd, token, signature, now)


@given(body=st.binary(max_size=256), secret=st.text(min_size=1, max_size=32), header=st.text(max_size=80))
def test_random_whatsapp_headers_are_never_accepted_unless_exact(body: bytes, secret: str, header: str) -> None:
    exact = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if whatsapp_valid(secret, body, header):
        assert header.strip().lower() == exact
    assert whatsapp_valid(secret, body, exact)


# ---- SignNow (X-SignNow-Signature) and Stripe (Stripe-Signature) ----


def test_signnow_signature_is_over_the_raw_bytes_in_base64_or_lower_case_hex() -> None:
    raw = json.dumps({"meta": {"event": "document.complete"}, "content": {"document_name": "Offre ✓"}},
                     ensure_ascii=False).encode()
    mac = hmac.new(b"sub-secret", raw, hashlib.sha256).digest()
    assert signnow_valid("sub-secret", raw, base64.b64encode(mac).decode())
    assert signnow_valid("sub-secret", raw, mac.hex())
    for bad in (mac.hex().upper(), "sha256=" + mac.hex(), base64.b64encode(mac).decode()[:-4], "", None,
                base64.b64encode(mac[:16]).decode()):
        assert not signnow_valid("sub-secret", raw, bad), bad
    assert not signnow_valid("sub-secret", json.dumps(json.loads(raw)).encode(), base64.b64encode(mac).decode())


def test_stripe_signature_follows_stripes_scheme() -> None:
    raw, now = b'{"id": "evt_1", "type": "checkout.session.completed"}', 1_800_000_000
    v1 = hmac.new(b"whsec_test", b"%d." % now + raw, hashlib.sha256).hexdigest()
    assert stripe_valid("whsec_test", raw, f"t={now},v1={v1}", now)
    assert stripe_valid("whsec_test", raw, f"t={now},v0=abc,v1={'0' * 64},v1={v1}", now + 300)  # any v1
    for bad in (f"t={now},v1={v1.upper()}", f"t={now},v0={v1}", f"v1={v1}", f"t={now}", f"t={now},t={now},v1={v1}",
                f"t={now + 1},v1={v1}", ""):
        assert not stripe_valid("whsec_test", raw, bad, now), bad
    for late in (now + 301, now - 301):
        with pytest.raises(Replayed):
            stripe_valid("whsec_test", raw, f"t={now},v1={v1}", late)


@given(body=st.binary(max_size=300), secret=st.text(min_size=1, max_size=40), header=st.text(max_size=300))
def test_a_guessed_signature_is_never_accepted_and_parsing_never_raises(body: bytes, secret: str,
                                                                        header: str) -> None:
    assert not signnow_valid(secret, body, header)
    try:
        accepted = stripe_valid(secret, body, header, 1_800_000_000)
    except Replayed:  # the one declared refusal, and only for a genuine MAC: never for a guess
        raise AssertionError("a guessed header reached the timestamp check") from None
    assert not accepted
