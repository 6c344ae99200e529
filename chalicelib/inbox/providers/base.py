"""What every inbound provider implements, and the refusals a delivery can meet.

A provider is one module under chalicelib/inbox/providers/ with a module-level PROVIDER object (in the
style of a persistence layer with one backend per module). The webhook side (chalicelib.inbox.ingest)
calls `verify` and then `events` inside the workspace's tenant transaction, stores the events once and
acknowledges; the worker side (chalicelib.inbox.processing) calls `process` for each stored event in its
own tenant transaction; the inbox's reply route calls `send_reply` of the provider that serves the
conversation's channel. Adding a provider is one new module here, its entry in PROVIDERS and its route.

Refusals are the exceptions of chalicelib.inbox.refusals (no HTTP there: chalicelib.http maps them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.db.types import Conn

if TYPE_CHECKING:
    from chalicelib.inbox.channels import ChannelOut, ChannelSecrets


@dataclass(frozen=True)
class Delivery:
    """One webhook POST as its route received it; nothing of it is trusted before `verify` passes."""

    # None when the URL names no workspace that could exist (the provider's screen refuses it).
    tenant: uuid.UUID | None
    # The channel the URL names (WhatsApp, email); None where the workspace is the route's scope (Twilio).
    channel: uuid.UUID | None
    raw: bytes = field(repr=False)
    # Header names in lower case.
    headers: Mapping[str, str] = field(repr=False)
    # The public URL the provider posted to (built from PUBLIC_BASE_URL, never from the Host header).
    url: str
    # The route's own segment where one provider has several (Twilio: calls, recordings, transcriptions).
    route: str = ""

    def header(self, name: str) -> str | None:
        """One header by its lower-case name."""
        return self.headers.get(name)

    @property
    def media_type(self) -> str:
        """The body's media type (Content-Type without parameters, lower case; empty when there is none)."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Event:
    """One event of a delivery: its kind, the provider's id for it (redeliveries repeat it), its payload."""

    kind: str
    event_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredEvent:
    """An event as the worker reads it back: stored once, processed in its tenant's transaction."""

    id: uuid.UUID
    tenant: uuid.UUID
    channel: uuid.UUID | None
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A reply recorded as queued on a conversation, with what its provider needs to send it."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    channel: ChannelOut
    secrets: ChannelSecrets = field(repr=False)
    # The number or address to answer (None: the conversation has none, and sending fails).
    to: str | None
    subject: str | None
    # Message-IDs of the conversation's emails, oldest first (threading headers).
    references: list[str]
    # The Message-ID this reply goes out with (email), stored before sending.
    email_message_id: str | None


@dataclass(frozen=True)
class Sent:
    """What the provider answered: its id for the message, and (email) the Message-ID it went out with."""

    provider_message_id: str | None
    email_message_id: str | None


class Provider(Protocol):
    """One inbound provider, complete: authentication, parsing, processing and (where it has one) replies."""

    # The name stored with each event (inbound_events.provider) and counted with each refusal.
    name: str
    # The channel type it serves (channels.type), or None for a workspace-level provider.
    channel_type: str | None

    def screen(self, delivery: Delivery) -> object:
        """Checks that need no secret and no database (media type, syntax); returns what `verify` needs."""

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> object:
        """Authenticate the delivery with the channel's or workspace's secret; returns what `events` needs.

        Raises a Refused subclass. Runs in the tenant transaction, before anything of the body is used.
        """

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """The events of an authenticated delivery (Malformed, ForeignSender when it is not acceptable)."""

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """After the new events are stored, in the same transaction (e.g. keep the delivery's files)."""

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """Turn one stored event into contacts, conversations, messages, calls (the event's tenant transaction)."""

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """Send a reply through the provider (NotImplementedError where the provider has no replies)."""
