"""The event catalogue: every type a workspace can subscribe to, what its `data` is, and its JSON Schema.

Served at GET /webhook-event-types. A resource event's data is the resource as the API's GET returns it,
rendered here at delivery time from the row snapshot taken in the change's transaction.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from chalicelib.accounts.models import MemberRole
from chalicelib.crm import companies, contacts, leads, notes
from chalicelib.crm.api import Resource
from chalicelib.inbox.calls import CallOut
from chalicelib.inbox.conversations import ConversationOut, MessageOut
from chalicelib.outgoing.events import EVENT_TYPES


class Deleted(BaseModel):
    """What was deleted."""

    id: uuid.UUID


class StageChange(BaseModel):
    """A lead moved from one stage to another."""

    lead_id: uuid.UUID
    pipeline_id: uuid.UUID | None = None
    from_stage_id: uuid.UUID | None
    to_stage_id: uuid.UUID | None


class MessageEvent(MessageOut):
    """A message, with its conversation (and its body: the workspace owns its content)."""

    conversation_id: uuid.UUID


class MemberChange(BaseModel):
    """A member added to or removed from the workspace."""

    user_id: uuid.UUID
    role: MemberRole | None = None


class ProposalEvent(BaseModel):
    """A proposal sent for signature, signed, or paid (fetch it for its lines and PDFs)."""

    proposal_id: uuid.UUID
    lead_id: uuid.UUID
    status: str
    total_minor: int
    currency: str


class EndpointDisabled(BaseModel):
    """An endpoint of this workspace was disabled: gone (its receiver answered 410) or failing (5 days)."""

    endpoint_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class EventType:
    """One event type: what happened and the model of its data."""

    name: str
    description: str
    data: type[BaseModel]


def _crud(singular: str, model: type[BaseModel], what: str) -> list[EventType]:
    return [EventType(f"{singular}.created", f"A {what} was created", model),
            EventType(f"{singular}.updated", f"A {what} was changed (data: the {what} after the change)", model),
            EventType(f"{singular}.deleted", f"A {what} was deleted", Deleted)]


CATALOGUE: tuple[EventType, ...] = (
    *_crud("contact", contacts.ContactOut, "contact"),
    *_crud("company", companies.CompanyOut, "company"),
    *_crud("lead", leads.LeadOut, "lead"),
    EventType("lead.stage_changed", "A lead moved to another stage", StageChange),
    EventType("lead.won", "A lead's status became won", leads.LeadOut),
    EventType("lead.lost", "A lead's status became lost", leads.LeadOut),
    EventType("note.created", "A note was added", notes.NoteOut),
    EventType("conversation.created", "A conversation was opened in the inbox", ConversationOut),
    EventType("message.received", "A message arrived (WhatsApp, email)", MessageEvent),
    EventType("message.sent", "A reply was sent", MessageEvent),
    EventType("message.failed", "A reply could not be sent", MessageEvent),
    EventType("call.completed", "A call ended", CallOut),
    EventType("proposal.sent", "A proposal was sent for signature (SignNow)", ProposalEvent),
    EventType("proposal.signed", "A proposal was signed (SignNow)", ProposalEvent),
    EventType("proposal.paid", "A proposal was paid (Stripe); its lead was won with it (lead.won)", ProposalEvent),
    EventType("member.added", "A member joined the workspace", MemberChange),
    EventType("member.removed", "A member left or was removed", MemberChange),
    EventType("endpoint.disabled", "One of the workspace's webhook endpoints was disabled", EndpointDisabled),
)
BY_NAME: Mapping[str, EventType] = {event.name: event for event in CATALOGUE}
assert set(BY_NAME) == EVENT_TYPES, "events.EVENT_TYPES and the catalogue must list the same types"


def _crm(resource: Resource) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def render(snapshot: dict[str, Any]) -> dict[str, Any]:
        row = tuple(snapshot.get(column) for column in resource.table.columns)
        return resource.out_model.model_validate(resource.out(row)).model_dump(mode="json")
    return render


def _model(model: type[BaseModel]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda snapshot: model.model_validate(snapshot).model_dump(mode="json")


RENDERERS: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "contacts": _crm(contacts.RESOURCE), "companies": _crm(companies.RESOURCE), "leads": _crm(leads.RESOURCE),
    "notes": _crm(notes.RESOURCE), "conversations": _model(ConversationOut), "messages": _model(MessageEvent),
    "calls": _model(CallOut),
}


def render(resource: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """An event's `data` as delivered: a row snapshot rendered as the API shows it, or the data as stored."""
    return RENDERERS[resource](data) if resource is not None else data


class EventTypeOut(BaseModel):
    """One subscribable event type."""

    type: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema",
                                    description="JSON Schema of the event's `data`")


class EventTypeList(BaseModel):
    """Every event type; a delivery's body is {"type", "timestamp", "data"} (Standard Webhooks)."""

    data: list[EventTypeOut]


@functools.cache
def listing() -> EventTypeList:
    """The catalogue as served (built once per process: it never changes)."""
    return EventTypeList(data=[EventTypeOut(type=e.name, description=e.description, schema=e.data.model_json_schema())
                               for e in CATALOGUE])


def timestamp(value: datetime) -> str:
    """An event's timestamp as sent: ISO 8601 in UTC with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
