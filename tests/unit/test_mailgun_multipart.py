"""Mailgun's multipart deliveries: only file parts are attachments (a recorded, real-shaped forward() POST)."""

from __future__ import annotations

import json

from chalicelib.inbox.providers import mailgun
from tests.fix_inbox import load_event


def _parse(raw: bytes) -> mailgun.Form:
    boundary = raw.split(b"\r\n", 1)[0].removeprefix(b"--").decode()
    return mailgun.parse(raw, f"multipart/form-data; boundary={boundary}")


def test_attachment_count_and_content_id_map_are_fields_and_only_the_two_files_are_attachments() -> None:
    raw = load_event("mailgun_forward.multipart")
    delivery = _parse(raw)
    assert [(f.filename, f.content_type) for f in delivery.files] == [
        ("signed-quote.pdf", "application/pdf"), ("logo.png", "image/png")]
    pdf, png = (f.data for f in delivery.files)
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n") and pdf in raw
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82") and png in raw
    assert delivery.fields["attachment-count"] == "2"
    assert json.loads(delivery.fields["content-id-map"]) == {"<ii_m3k7q0lo0>": "attachment-2"}
    assert delivery.message_id == "CAHx8ZqN3v5kY0pQm7rT2wL9sBdE4fGh1jK6uVxYz@mail.customer.example"
    assert delivery.fields["stripped-text"].endswith("Grüße,\r\nPat")


def test_a_field_named_like_an_attachment_but_without_a_filename_is_a_field() -> None:
    raw = (b'--b\r\nContent-Disposition: form-data; name="attachment-1"\r\n\r\nnot a file\r\n'
           b'--b\r\nContent-Disposition: form-data; name="attachment-count"\r\n\r\n1\r\n--b--\r\n')
    delivery = mailgun.parse(raw, "multipart/form-data; boundary=b")
    assert delivery.files == []
    assert delivery.fields == {"attachment-1": "not a file", "attachment-count": "1"}
