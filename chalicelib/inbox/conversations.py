"""Conversations and their messages: the contact and thread a new message joins, and what the inbox API shows.

What a new message creates emits its webhook event here, in the processing transaction, after the row is
written: contact.created (an unknown number or address), conversation.created (a thread's first message),
message.received (`received`, called by each provider once the message and its files are stored), and
message.sent / message.failed (`send_result`, where a reply's outcome is recorded).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from chalicelib.crm.listing import Filter, ListSpec, Sort, parse_choice, parse_uuid, time_sort
from chalicelib.crm.store import Row, Table
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.outgoing import events

Q = queries.load(__package__)

TABLE = Table(
    name="conversations",
    columns=("id", "channel_id", "contact_id", "status", "assignee_id", "subject", "last_message_at", "created_at",
             "updated_at"),
    listing=ListSpec(
        "conversations",
        {"last_message_at": Sort("coalesce(last_message_at, created_at)", True, **{
            "to_cursor": lambda v: v.isoformat(), "from_cursor": datetime.fromisoformat}),
         "created_at": time_sort("created_at")},
        "last_message_at",
        {"channel_id": Filter("channel_id", parse_uuid("channel_id")),
         "contact_id": Filter("contact_id", parse_uuid("contact_id")),
         "status": Filter("status", parse_choice("status", frozenset({"open", "closed"})))},
        search=False, custom_select_filters=False),
    references={"conversations_assignee_fk": "assignee_id"},
)


class ConversationOut(BaseModel):
    """A conversation."""

    id: uuid.UUID
    channel_id: uuid.UUID
    contact_id: uuid.UUID | None
    status: Literal["open", "closed"]
    assignee_id: uuid.UUID | None
    subject: str | None
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ConversationPatch(BaseModel):
    """Close or reopen; assign to a member (null unassigns)."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "closed"] | None = None
    assignee_id: uuid.UUID | None = None


class AttachmentOut(BaseModel):
    """An attachment's metadata, with the SHA-256 of its bytes (GET /attachments/{id} gives a download link)."""

    id: uuid.UUID
    filename: str | None
    content_type: str
    size: int
    sha256: str


class MessageOut(BaseModel):
    """A message of a conversation."""

    id: uuid.UUID
    direction: Literal["in", "out"]
    body: str | None
    sent_at: datetime
    status: str
    error: str | None
    attachments: list[AttachmentOut]


class MessageList(BaseModel):
    """Every message of a conversation, oldest first."""

    data: list[MessageOut]


def out(row: Row) -> ConversationOut:
    """Row to API shape."""
    # Rows come from our own typed columns: constructed without re-validation (list pages are hot).
    return ConversationOut.model_construct(**dict(zip(TABLE.columns, row, strict=True)))


def messages_pending(conn: Conn, conversation_id: uuid.UUID) -> Callable[[], MessageList]:
    """Queue the read of a conversation's messages with their attachments in order (two independent
    queries, not one per message); call the result for them."""
    message_rows = conn.execute(Q["conversation_messages"], (conversation_id,))
    attachment_rows = conn.execute(Q["conversation_attachments"], (conversation_id,))

    def result() -> MessageList:
        files: dict[Any, list[AttachmentOut]] = {}
        for a in attachment_rows.fetchall():
            files.setdefault(a[0], []).append(AttachmentOut(id=a[1], filename=a[2], content_type=a[3], size=a[4],
                                                            sha256=a[5]))
        return MessageList(data=[MessageOut(id=r[0], direction=r[1], body=r[2], sent_at=r[3], status=r[4],
                                            error=r[5], attachments=files.get(r[0], []))
                                 for r in message_rows.fetchall()])
    return result


def messages(conn: Conn, conversation_id: uuid.UUID) -> MessageList:
    """Messages with their attachments in order."""
    return messages_pending(conn, conversation_id)()


def contact_for_phone(conn: Conn, tenant_id: uuid.UUID, phone: str, name: str | None) -> uuid.UUID:
    """The workspace's contact with this E.164 number, created when unknown (one per number)."""
    # Two events from a new number at once must not create two contacts.
    conn.execute(Q["contact_phone_lock"], (f"{tenant_id}:{phone}",))
    found = conn.execute(Q["contact_by_phone"], (phone,)).fetchone()
    if found is not None:
        return uuid.UUID(str(found[0]))
    first, _, last = (name or "").partition(" ")
    row = conn.execute(Q["contact_insert_for_phone"], (tenant_id, first or None, last or None, phone)).fetchone()
    assert row is not None
    return _written(conn, tenant_id, (row[0], True), "contact.created", "contacts")


def contact_for_email(conn: Conn, tenant_id: uuid.UUID, email: str) -> uuid.UUID:
    """The workspace's contact with this address, created when unknown (one per address, any case)."""
    row = conn.execute(Q["contact_for_email"], (tenant_id, email)).fetchone()
    assert row is not None
    return _written(conn, tenant_id, row, "contact.created", "contacts")


def conversation_for(conn: Conn, tenant_id: uuid.UUID, channel_id: uuid.UUID, thread_key: str,
                     contact_id: uuid.UUID | None, at: datetime, subject: str | None = None) -> uuid.UUID:
    """The open-or-closed conversation of a thread, created on first message; last_message_at advanced."""
    row = conn.execute(Q["conversation_for_thread"],
                       (tenant_id, channel_id, thread_key, contact_id, subject, at)).fetchone()
    assert row is not None
    return _written(conn, tenant_id, row, "conversation.created", "conversations")


def received(conn: Conn, tenant_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Emit message.received for an inbound message, once it and its files are stored."""
    events.emit_row(conn, tenant_id=tenant_id, event_type="message.received", table="messages", record_id=message_id)


def send_result(conn: Conn, tenant_id: uuid.UUID, message_id: uuid.UUID, status: Literal["sent", "failed"]) -> None:
    """Emit message.sent or message.failed for an outbound message whose send result was just recorded."""
    events.emit_row(conn, tenant_id=tenant_id, event_type=f"message.{status}", table="messages", record_id=message_id)


def _written(conn: Conn, tenant_id: uuid.UUID, row: tuple[Any, ...], event_type: str, table: str) -> uuid.UUID:
    """The id of a row just found or created (`row`: id, created); a created one emits `event_type`, queued
    behind the statement that wrote it (so carrying a snapshot of it)."""
    record = uuid.UUID(str(row[0]))
    if row[1]:
        events.emit_row(conn, tenant_id=tenant_id, event_type=event_type, table=table, record_id=record)
    return record
