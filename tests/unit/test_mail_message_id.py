"""The Message-ID a message goes out with is the one its sender recorded (replies thread by it)."""

from __future__ import annotations

import pytest

from chalicelib.mail import build_message, delivered_message_id, new_message_id
from chalicelib.settings import load_settings


def test_a_message_goes_out_with_the_id_its_sender_recorded() -> None:
    recorded = new_message_id("acme.example")
    assert recorded.endswith("@acme.example") and "<" not in recorded
    message = build_message(sender="sales@acme.example", to="pat@customer.example", subject="Re: Quote", text="ok",
                            headers={"In-Reply-To": "<q1@customer.example>"}, message_id=recorded)
    assert message.get_all("Message-ID") == [f"<{recorded}>"]


def test_a_message_without_a_recorded_id_gets_a_fresh_one_each_time() -> None:
    ids = {str(build_message(sender="a@x.example", to="b@x.example", subject="s", text="t")["Message-ID"])
           for _ in range(3)}
    assert len(ids) == 3


def test_the_id_recipients_see_is_ours_from_the_outbox_and_sess_own_through_ses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert delivered_message_id("20251202T1.eml", "r1@acme.example", load_settings()) == "r1@acme.example"
    ses = load_settings(mail_backend="ses")
    # SES replaces any Message-ID with <its message id @ its regional domain>.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert delivered_message_id("0102abc-000000", "r1@acme.example", ses) == "0102abc-000000@eu-west-1.amazonses.com"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert delivered_message_id("0100abc-000000", "r1@acme.example", ses) == "0100abc-000000@email.amazonses.com"
