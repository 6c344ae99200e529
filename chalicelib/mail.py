"""Outbound email: SES in production, one RFC 5322 .eml file per message in DATA_DIR/outbox locally."""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from chalicelib.settings import Settings, get_settings

log = logging.getLogger("crm.mail")


def new_message_id(domain: str = "crm.localhost") -> str:
    """A fresh, globally unique Message-ID without its angle brackets (the form the inbox stores and matches)."""
    return make_msgid(domain=domain)[1:-1]


def build_message(*, sender: str, to: str, subject: str, text: str, headers: dict[str, str] | None = None,
                  message_id: str | None = None) -> EmailMessage:
    """An RFC 5322 message; the stdlib refuses header injection (CR/LF in headers).

    `message_id` (without angle brackets) is the id the caller already recorded; a new one otherwise.
    """
    # Lines up to RFC 5322's 998 characters and no quoted-printable: the sign-in link stays one
    # readable, copyable line in the .eml file and in every mail client.
    message = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    # The id the caller stored, when it stored one: an answer quoting it (In-Reply-To) must find that record.
    message["Message-ID"] = f"<{message_id or new_message_id()}>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text, cte="7bit" if text.isascii() else "8bit")
    return message


def send_email(*, to: str, subject: str, text: str, settings: Settings | None = None, sender: str | None = None,
               headers: dict[str, str] | None = None, message_id: str | None = None) -> str:
    """Send one message; returns its outbox file name or SES message id (never logs the body)."""
    settings = settings or get_settings()
    message = build_message(sender=sender or settings.mail_from, to=to, subject=subject, text=text, headers=headers,
                            message_id=message_id)
    if settings.mail_backend == "ses":
        return _send_ses(message)
    return _write_outbox(message, settings.data_dir / "outbox")


def delivered_message_id(sent: str, message_id: str, settings: Settings | None = None) -> str:
    """The Message-ID recipients see (without angle brackets), given what send_email returned.

    The outbox keeps ours. SES replaces any Message-ID with one made of its own message id and its
    regional domain, so that one is what an answer's In-Reply-To will quote.
    """
    settings = settings or get_settings()
    if settings.mail_backend != "ses":
        return message_id
    # The region boto3 sends through (a Lambda always sets AWS_REGION): no session built per email.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"{sent}@{'email' if region == 'us-east-1' else region}.amazonses.com"


def _write_outbox(message: EmailMessage, outbox: Path) -> str:
    outbox.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
    temporary = outbox / f".{name}.tmp"
    # Written then renamed: a reader never sees half a message. 0600: it may hold a sign-in link.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(message.as_bytes())
    temporary.rename(outbox / name)
    # The file name only: the recipient and the body (with its link) stay out of the log.
    log.info("email written to outbox", extra={"fields": {"file": str(outbox / name)}})
    return name


def _send_ses(message: EmailMessage) -> str:
    import boto3  # lazily: cold start

    client = boto3.client("sesv2")
    response = client.send_email(Content={"Raw": {"Data": message.as_bytes()}})
    message_id = str(response.get("MessageId", ""))
    # "ses_id", not "ses_message_id": logsafe redacts every key containing "message", and the id is what
    # ties a bounce or complaint back to this line.
    log.info("email sent", extra={"fields": {"ses_id": message_id}})
    return message_id
