"""Mailgun inbound deliveries: form fields (urlencoded or multipart with attachment-N files) or body-mime.

In a multipart delivery only file parts (those with a filename) are attachments: Mailgun's own fields
beside them, such as attachment-count and content-id-map, are plain form fields.

Parsing uses the standard library's `email` package (multipart/form-data and RFC 5322 MIME alike);
only the fields Mailgun signs are needed before the signature check.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import parse_qs

MAX_ATTACHMENTS = 20


class MalformedDelivery(ValueError):
    """The body is not a Mailgun delivery."""


@dataclass(frozen=True)
class File:
    """An attached file."""

    filename: str | None
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class Delivery:
    """What one inbound email delivery carries."""

    fields: dict[str, str]
    files: list[File]

    @property
    def message_id(self) -> str | None:
        """The email's Message-Id (angle brackets removed)."""
        return _bare(self.fields.get("Message-Id") or self.fields.get("message-id"))

    def references(self) -> list[str]:
        """Message-Ids this email answers (In-Reply-To first, then References)."""
        ids = [_bare(self.fields.get("In-Reply-To"))]
        ids += [_bare(part) for part in (self.fields.get("References") or "").split()]
        return [i for i in dict.fromkeys(ids) if i]


def _bare(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip("<>").strip()[:998] or None


def parse(raw: bytes, content_type: str) -> Delivery:
    """Fields and files of a delivery (MalformedDelivery for anything else)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise MalformedDelivery("bad form") from None
        delivery = Delivery({k: v[0] for k, v in form.items()}, [])
    elif kind == "multipart/form-data":
        delivery = _multipart(raw, content_type)
    else:
        raise MalformedDelivery("unsupported content type")
    if "body-mime" in delivery.fields:
        _from_mime(delivery, delivery.fields["body-mime"].encode())
    if len(delivery.files) > MAX_ATTACHMENTS:
        raise MalformedDelivery("too many attachments")
    return delivery


def _multipart(raw: bytes, content_type: str) -> Delivery:
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode()
    message = email.message_from_bytes(head + raw, policy=email.policy.default)
    if not message.is_multipart():
        raise MalformedDelivery("not multipart")
    fields: dict[str, str] = {}
    files: list[File] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        # A file part, whatever its field name: "attachment-count" is a field, never a 1-byte text file.
        if filename is not None:
            files.append(File(filename, part.get_content_type(), data))
        else:
            fields[name] = data.decode(part.get_content_charset() or "utf-8", errors="replace")
    return Delivery(fields, files)


def _from_mime(delivery: Delivery, mime: bytes) -> None:
    """Fill subject, ids, text and attachments from a raw RFC 5322 message (body-mime)."""
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    for header in ("Message-Id", "In-Reply-To", "References", "Subject", "From"):
        if message[header] is not None:
            delivery.fields.setdefault(header, str(message[header]))
    delivery.fields.setdefault("subject", str(message["Subject"] or ""))
    delivery.fields.setdefault("sender", str(message["From"] or ""))
    body = message.get_body(preferencelist=("plain",))
    if body is not None and "body-plain" not in delivery.fields:
        delivery.fields["body-plain"] = body.get_content()
    for attachment in message.iter_attachments():
        payload = attachment.get_payload(decode=True)
        delivery.files.append(File(attachment.get_filename(), attachment.get_content_type(),
                                   payload if isinstance(payload, bytes) else b""))
