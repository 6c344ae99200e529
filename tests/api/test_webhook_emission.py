"""Outgoing webhooks: every CRM write emits its event, in the write's own transaction, with no round trip of its own.

The walk takes every unsafe route of the app's registry under /workspaces/{workspace_id} (the one the CSRF and
IDOR matrices walk), calls it successfully in a workspace with an endpoint subscribed to '*', and compares the
webhook_messages rows the call stored with EMITS, or with nothing for the routes NO_EVENT lists with a reason.
A new route fails the walk until it is in one of the two. The inbox's writes that no route makes (processing,
replies, calls, sign-in) are in test_webhook_emission_inbox.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.api import is_fallback_view
from chalicelib.auth.principal import UNSAFE_METHODS
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox import conversations
from chalicelib.outgoing import delivery, events
from tests.api.auth_helpers import Browser, Outbox, body_of, create_workspace, fresh_address, invite_and_join, sign_in
from tests.api.crm_helpers import Workspace, insert_rows, new_workspace, rows_of
from tests.conftest import RecordingTrigger, TestDatabase
from tests.fix_crm import installed, shared_app
from tests.pgtrace import round_trips, trace_lines

HOOK = "https://example.test/hook"


# ---- helpers (test_webhook_emission_inbox.py uses them too) ----


def subscribe(db: TestDatabase, workspace: str, event_types: tuple[str, ...] = ("*",), *,
              enabled: bool = True) -> str:
    """An endpoint of the workspace, inserted as the superuser (the endpoints API is not what is tested here)."""
    with db.admin() as conn:
        row = conn.execute("INSERT INTO webhook_endpoints (tenant_id, url, event_types, secret_ciphertext, enabled)"
                           " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                           (workspace, HOOK, list(event_types), b"\x00", enabled)).fetchone()
    assert row is not None
    return str(row[0])


def fan_out(db: TestDatabase, workspace: str) -> int:
    """Run the dispatcher's first step for the workspace: its stored events become deliveries."""
    jobs = Database(db.jobs_url, size=1, timeout=5.0, name="jobs")
    try:
        return delivery.fan_out(uuid.UUID(workspace), db=jobs)
    finally:
        jobs.close()


@dataclass(frozen=True)
class Message:
    """A stored event: its id, type and data."""

    id: str
    type: str
    data: Any


def stored(db: TestDatabase, workspace: str) -> list[Message]:
    """The workspace's webhook_messages, oldest first (read as the superuser)."""
    rows = rows_of(db, "SELECT id, type, data FROM webhook_messages WHERE tenant_id = %s ORDER BY created_at, id",
                   (workspace,))
    return [Message(str(r[0]), str(r[1]), r[2]) for r in rows]


def types_since(db: TestDatabase, workspace: str, before: list[Message]) -> list[str]:
    """The types of the events stored since `before` was read, in order."""
    seen = {m.id for m in before}
    return [m.type for m in stored(db, workspace) if m.id not in seen]


def snapshot(db: TestDatabase, table: str, record: str) -> dict[str, Any]:
    """A row as it is now, every column (to_jsonb of the whole row)."""
    from psycopg import sql

    with db.admin() as conn:
        row = conn.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE id = %s").format(sql.Identifier(table)),
                           (record,)).fetchone()
    assert row is not None
    return dict(row[0])


# Columns an event never copies, written out: what the API does not show (a call's transcript lives in the
# call or nowhere; a message's provider and mail ids are threading state).
WITHHELD = {"calls": {"transcript", "transcript_corrected_at"},
            "messages": {"provider_message_id", "email_message_id", "status_rank"}}


def assert_carries_row(data: dict[str, Any], db: TestDatabase, table: str, record: str) -> None:
    """An event's data is the row as it is now: every column but the withheld ones, with its value (a message
    adds its attachments)."""
    row = snapshot(db, table, record)
    withheld = WITHHELD.get(table, set())
    assert {key: data.get(key) for key in row if key not in withheld} == {
        key: value for key, value in row.items() if key not in withheld}
    assert not withheld & set(data)
    assert set(data) - set(row) <= ({"attachments"} if table == "messages" else set())


def default_stages(ws: Workspace) -> tuple[str, dict[str, str]]:
    """The default pipeline's id and its stage ids by name (New, Qualified, Proposal, Won, Lost)."""
    sales = next(p for p in body_of(ws.get("/pipelines"))["data"] if p["is_default"])
    return sales["id"], {s["name"]: s["id"] for s in sales["stages"]}


def email_conversation(db: TestDatabase, ws: Workspace, *, email: str | None = "pat@customer.example") -> str:
    """An email channel (through the API), and a conversation of it with a contact at `email` (None: a contact
    without address) inserted as the superuser; returns the conversation id."""
    channel = ws.create("/channels", {"type": "email", "signing_key": "key-" + uuid.uuid4().hex,
                                      "address": "sales@acme.example"})
    [contact] = insert_rows(db, "contacts", ws.id, [{"email": email, "first_name": "Pat"}])
    [conversation] = insert_rows(db, "conversations", ws.id, [{
        "channel_id": channel["id"], "contact_id": contact, "thread_key": f"<{uuid.uuid4().hex}@customer.example>",
        "subject": "Quote"}])
    return conversation


# ---- the walk over every write route ----

WS = "/workspaces/{workspace_id}"


def _workspace_writes() -> list[tuple[str, str]]:
    found = []
    for path, entries in app_module.app.routes.items():
        if "{workspace_id}" not in path:
            continue
        for method, entry in entries.items():
            if method in UNSAFE_METHODS and not is_fallback_view(entry.view_name):
                found.append((method, path))
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _workspace_writes()

# The events a route's call stores (all of them, and nothing else).
EMITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", WS + "/contacts"): ("contact.created",),
    ("PATCH", WS + "/contacts/{contact_id}"): ("contact.updated",),
    ("DELETE", WS + "/contacts/{contact_id}"): ("contact.deleted",),
    ("POST", WS + "/companies"): ("company.created",),
    ("PATCH", WS + "/companies/{company_id}"): ("company.updated",),
    ("DELETE", WS + "/companies/{company_id}"): ("company.deleted",),
    ("POST", WS + "/leads"): ("lead.created",),
    # Moved into the Won stage: the row, the move, and the status it now has.
    ("PATCH", WS + "/leads/{lead_id}"): ("lead.updated", "lead.stage_changed", "lead.won"),
    ("DELETE", WS + "/leads/{lead_id}"): ("lead.deleted",),
    ("POST", WS + "/notes"): ("note.created",),
    ("POST", WS + "/imports/{object}"): ("contact.created",),
    # Re-kinding a stage that holds a lead to "won": the lead's status changes with it.
    ("PATCH", WS + "/pipelines/{pipeline_id}/stages/{stage_id}"): ("lead.updated", "lead.won"),
    # Deleting a stage that holds a lead moves it to the target (a won stage).
    ("DELETE", WS + "/pipelines/{pipeline_id}/stages/{stage_id}"): ("lead.updated", "lead.stage_changed",
                                                                     "lead.won"),
    ("POST", WS + "/conversations/{conversation_id}/messages"): ("message.sent",),
    ("DELETE", WS + "/members/{user_id}"): ("member.removed",),
}

# Routes that by design store no event, each with why.
NO_EVENT: dict[tuple[str, str], str] = {
    ("PATCH", WS): "the workspace itself is not in the event catalogue",
    ("DELETE", WS): "the workspace itself is not in the event catalogue (its endpoints go with it)",
    ("POST", WS + "/restore"): "the workspace itself is not in the event catalogue",
    ("POST", WS + "/api-keys"): "API keys are credentials, not CRM data: no event type",
    ("PATCH", WS + "/api-keys/{key_id}"): "API keys are credentials, not CRM data: no event type",
    ("DELETE", WS + "/api-keys/{key_id}"): "API keys are credentials, not CRM data: no event type",
    ("PATCH", WS + "/calls/{call_id}"): "a transcript correction: the catalogue has call.completed only",
    ("POST", WS + "/channels"): "channels are inbox settings: no event type",
    ("PATCH", WS + "/channels/{channel_id}"): "channels are inbox settings: no event type",
    ("DELETE", WS + "/channels/{channel_id}"): "channels are inbox settings: no event type",
    ("PATCH", WS + "/conversations/{conversation_id}"): "closing or assigning: the catalogue has "
                                                        "conversation.created only",
    ("POST", WS + "/custom-fields"): "custom field definitions are not in the catalogue",
    ("PATCH", WS + "/custom-fields/{field_id}"): "custom field definitions are not in the catalogue",
    ("DELETE", WS + "/custom-fields/{field_id}"): "custom field definitions are not in the catalogue",
    ("PUT", WS + "/integrations/{provider}"): "provider credentials: no event type",
    ("DELETE", WS + "/integrations/{provider}"): "provider credentials: no event type",
    ("POST", WS + "/invitations"): "an invitation is no membership yet: member.added comes when it is "
                                   "accepted at sign-in (test_webhook_emission_inbox.py)",
    ("PATCH", WS + "/members/{user_id}"): "a role change: the catalogue has member.added/removed only",
    ("PATCH", WS + "/notes/{note_id}"): "the catalogue has note.created only",
    ("DELETE", WS + "/notes/{note_id}"): "the catalogue has note.created only",
    ("POST", WS + "/pipelines"): "pipelines and stages are not in the catalogue",
    ("PATCH", WS + "/pipelines/{pipeline_id}"): "pipelines are not in the catalogue (renaming one moves no lead)",
    ("DELETE", WS + "/pipelines/{pipeline_id}"): "pipelines are not in the catalogue (one with leads cannot go)",
    ("POST", WS + "/pipelines/{pipeline_id}/stages"): "a new stage holds no lead",
    ("PUT", WS + "/settings/telephony"): "the telephony opt-in is a setting: no event type",
}
# Routes matched by a part of their path, with why (not called: another change owns their bodies).
NO_EVENT_PATHS = {
    "webhook-endpoints": "managing the endpoints themselves (endpoint.disabled is the dispatcher's)",
    "/products": "the price book: the catalogue has no product events",
    "/proposals": "the catalogue has no proposal events; a signed or paid proposal moves its lead, which emits",
}


EMAIL_CHANNEL = {"type": "email", "signing_key": "key-walk-" + "k" * 20, "address": "walk@acme.example"}
FIELD = {"object": "contact", "key": "walk", "label": "Walk", "type": "text"}
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": "f" * 32}


@dataclass
class WalkWorld:
    """One database for the walk, its owner signed in; each test gets a workspace of its own."""

    db: TestDatabase
    app: Database
    data_dir: Any
    client: Client
    outbox: Outbox
    owner: Browser


@pytest.fixture(scope="module")
def walk_world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalkWorld]:
    with shared_app(pg_admin_url, template_db, tmp_path_factory.mktemp("emission")) as shared:
        owner = sign_in(shared.client, fresh_address("walker"), shared.outbox)
        yield WalkWorld(shared.db, shared.app, shared.data_dir, shared.client, shared.outbox, owner)


@dataclass
class Walker:
    """A fresh workspace of the walk's owner, with an endpoint subscribed to every event."""

    world: WalkWorld
    ws: Workspace

    @property
    def db(self) -> TestDatabase:
        return self.world.db

    def contact(self) -> str:
        return str(self.ws.create("/contacts", {"first_name": "Walk"})["id"])

    def company(self) -> str:
        return str(self.ws.create("/companies", {"name": "Walk Co"})["id"])

    def lead(self, **body: Any) -> dict[str, Any]:
        return self.ws.create("/leads", {"title": "Walk", **body})

    def pipeline(self) -> dict[str, Any]:
        """A pipeline "Walk" with stages Open (open) and Done (won)."""
        return self.ws.create("/pipelines", {"name": "Walk", "stages": [{"name": "Open"},
                                                                         {"name": "Done", "kind": "won"}]})

    def member(self) -> str:
        joined = invite_and_join(self.world.client, self.world.outbox, self.ws.browser, self.ws.id,
                                 fresh_address("member"))
        return joined.user_id

    def key(self) -> str:
        return str(self.ws.create("/api-keys", {"name": "walk", "role": "member"})["id"])

    def channel(self) -> str:
        return str(self.ws.create("/channels", EMAIL_CHANNEL)["id"])

    def field(self) -> str:
        return str(self.ws.create("/custom-fields", FIELD)["id"])

    def note(self) -> str:
        return str(self.ws.create("/notes", {"body": "walk", "contact_id": self.contact()})["id"])

    def pipeline_id(self) -> str:
        return str(self.pipeline()["id"])

    def lead_id(self) -> str:
        return str(self.lead()["id"])

    def conversation(self) -> str:
        return email_conversation(self.db, self.ws)


@pytest.fixture
def walker(walk_world: WalkWorld) -> Iterator[Walker]:
    with installed(walk_world.app, walk_world.data_dir):
        workspace = create_workspace(walk_world.client, walk_world.owner, "Walk")["id"]
        subscribe(walk_world.db, workspace)
        yield Walker(walk_world, Workspace(walk_world.client, walk_world.owner, workspace))


Call = Callable[[], Any]


def _walk_lead_patch(w: Walker) -> Call:
    _, stages = default_stages(w.ws)
    lead = w.lead_id()
    return lambda: w.ws.patch(f"/leads/{lead}", {"stage_id": stages["Won"]})


def _walk_stage_rekind(w: Walker) -> Call:
    pipeline = w.pipeline()
    opened = pipeline["stages"][0]["id"]
    w.lead(stage_id=opened)
    return lambda: w.ws.patch(f"/pipelines/{pipeline['id']}/stages/{opened}", {"kind": "won"})


def _walk_stage_delete(w: Walker) -> Call:
    pipeline = w.pipeline()
    opened, done = (s["id"] for s in pipeline["stages"])
    w.lead(stage_id=opened)
    return lambda: w.ws.delete(f"/pipelines/{pipeline['id']}/stages/{opened}?target_stage_id={done}")


def _walk_restore(w: Walker) -> Call:
    assert w.ws.delete("").status_code == 202
    return lambda: w.ws.post("/restore", None)


def _walk_transcript(w: Walker) -> Call:
    [call_id] = insert_rows(w.db, "calls", w.ws.id, [{
        "call_sid": "CA" + uuid.uuid4().hex, "status": "completed", "recording_enabled": False,
        "transcription_enabled": True, "transcript": "hello"}])
    return lambda: w.ws.patch(f"/calls/{call_id}", {"transcript": "hello, corrected"})


def _walk_integration_delete(w: Walker) -> Call:
    assert w.ws.call("PUT", "/integrations/twilio", TWILIO).status_code == 200
    return lambda: w.ws.delete("/integrations/twilio")


def _new_note(w: Walker) -> Call:
    contact = w.contact()
    return lambda: w.ws.post("/notes", {"body": "walk", "contact_id": contact})


def _on_new(make: Callable[[Walker], str], method: str, path: str, body: dict[str, Any] | None = None
            ) -> Callable[[Walker], Call]:
    """Create a record with `make`, then call `method` on `path` with its id."""
    def setup(w: Walker) -> Call:
        record = make(w)
        return lambda: w.ws.call(method, path.format(record), body)
    return setup


def _plain(method: str, path: str, body: dict[str, Any] | None = None) -> Callable[[Walker], Call]:
    return lambda w: lambda: w.ws.call(method, path, body)


# How to call each route successfully: a setup (run before the events are counted) returning the call.
CALLS: dict[tuple[str, str], Callable[[Walker], Call]] = {
    ("PATCH", WS): _plain("PATCH", "", {"name": "Walked"}),
    ("DELETE", WS): _plain("DELETE", ""),
    ("POST", WS + "/restore"): _walk_restore,
    ("POST", WS + "/api-keys"): _plain("POST", "/api-keys", {"name": "walk", "role": "member"}),
    ("PATCH", WS + "/api-keys/{key_id}"): _on_new(Walker.key, "PATCH", "/api-keys/{}", {"name": "walked"}),
    ("DELETE", WS + "/api-keys/{key_id}"): _on_new(Walker.key, "DELETE", "/api-keys/{}"),
    ("PATCH", WS + "/calls/{call_id}"): _walk_transcript,
    ("POST", WS + "/channels"): _plain("POST", "/channels", EMAIL_CHANNEL),
    ("PATCH", WS + "/channels/{channel_id}"): _on_new(Walker.channel, "PATCH", "/channels/{}", {"name": "Sales"}),
    ("DELETE", WS + "/channels/{channel_id}"): _on_new(Walker.channel, "DELETE", "/channels/{}"),
    ("POST", WS + "/companies"): _plain("POST", "/companies", {"name": "Walk Co"}),
    ("PATCH", WS + "/companies/{company_id}"): _on_new(Walker.company, "PATCH", "/companies/{}",
                                                       {"domain": "walk.test"}),
    ("DELETE", WS + "/companies/{company_id}"): _on_new(Walker.company, "DELETE", "/companies/{}"),
    ("POST", WS + "/contacts"): _plain("POST", "/contacts", {"first_name": "Walk"}),
    ("PATCH", WS + "/contacts/{contact_id}"): _on_new(Walker.contact, "PATCH", "/contacts/{}", {"last_name": "Er"}),
    ("DELETE", WS + "/contacts/{contact_id}"): _on_new(Walker.contact, "DELETE", "/contacts/{}"),
    ("PATCH", WS + "/conversations/{conversation_id}"): _on_new(Walker.conversation, "PATCH", "/conversations/{}",
                                                                {"status": "closed"}),
    ("POST", WS + "/conversations/{conversation_id}/messages"): _on_new(
        Walker.conversation, "POST", "/conversations/{}/messages", {"body": "Here you are"}),
    ("POST", WS + "/custom-fields"): _plain("POST", "/custom-fields", FIELD),
    ("PATCH", WS + "/custom-fields/{field_id}"): _on_new(Walker.field, "PATCH", "/custom-fields/{}",
                                                         {"label": "Walked"}),
    ("DELETE", WS + "/custom-fields/{field_id}"): _on_new(Walker.field, "DELETE", "/custom-fields/{}"),
    ("POST", WS + "/imports/{object}"): lambda w: lambda: w.ws.post_csv(
        w.ws.client, "/imports/contacts", "first_name,email\nWalk,walk-import@example.test\n"),
    ("PUT", WS + "/integrations/{provider}"): _plain("PUT", "/integrations/twilio", TWILIO),
    ("DELETE", WS + "/integrations/{provider}"): _walk_integration_delete,
    ("POST", WS + "/invitations"): lambda w: lambda: w.ws.post("/invitations", {"email": fresh_address("invitee")}),
    ("POST", WS + "/leads"): _plain("POST", "/leads", {"title": "Walk"}),
    ("PATCH", WS + "/leads/{lead_id}"): _walk_lead_patch,
    ("DELETE", WS + "/leads/{lead_id}"): _on_new(Walker.lead_id, "DELETE", "/leads/{}"),
    ("PATCH", WS + "/members/{user_id}"): _on_new(Walker.member, "PATCH", "/members/{}", {"role": "admin"}),
    ("DELETE", WS + "/members/{user_id}"): _on_new(Walker.member, "DELETE", "/members/{}"),
    ("POST", WS + "/notes"): _new_note,
    ("PATCH", WS + "/notes/{note_id}"): _on_new(Walker.note, "PATCH", "/notes/{}", {"body": "walked"}),
    ("DELETE", WS + "/notes/{note_id}"): _on_new(Walker.note, "DELETE", "/notes/{}"),
    ("POST", WS + "/pipelines"): _plain("POST", "/pipelines", {"name": "Walk"}),
    ("PATCH", WS + "/pipelines/{pipeline_id}"): _on_new(Walker.pipeline_id, "PATCH", "/pipelines/{}",
                                                        {"name": "Walked"}),
    ("DELETE", WS + "/pipelines/{pipeline_id}"): _on_new(Walker.pipeline_id, "DELETE", "/pipelines/{}"),
    ("POST", WS + "/pipelines/{pipeline_id}/stages"): _on_new(Walker.pipeline_id, "POST", "/pipelines/{}/stages",
                                                              {"name": "Later"}),
    ("PATCH", WS + "/pipelines/{pipeline_id}/stages/{stage_id}"): _walk_stage_rekind,
    ("DELETE", WS + "/pipelines/{pipeline_id}/stages/{stage_id}"): _walk_stage_delete,
    ("PUT", WS + "/settings/telephony"): _plain("PUT", "/settings/telephony", {"recording_enabled": False,
                                                                               "transcription_enabled": True}),
}


def _listed_by_path(route: tuple[str, str]) -> bool:
    return any(part in route[1] for part in NO_EVENT_PATHS)


WALKED = [r for r in ROUTES if r in CALLS and not _listed_by_path(r)]


def test_every_workspace_write_route_is_walked_and_either_emits_or_is_listed_with_a_reason() -> None:
    for route in ROUTES:
        if _listed_by_path(route):
            continue
        assert route in CALLS, f"{route}: add how to call it to CALLS"
        assert (route in EMITS) != (route in NO_EVENT), (
            f"{route}: list its events in EMITS, or why it emits none in NO_EVENT (not both)")
    # No stale entries, and a reason for every route that emits nothing.
    assert set(CALLS) <= set(ROUTES) and set(EMITS) | set(NO_EVENT) == set(CALLS)
    assert all(reason.strip() for reason in [*NO_EVENT.values(), *NO_EVENT_PATHS.values()])
    assert all(t in events.EVENT_TYPES for types in EMITS.values() for t in types)
    assert len(WALKED) > 35


@pytest.mark.parametrize(("method", "path"), WALKED, ids=[f"{m} {p}" for m, p in WALKED])
def test_each_write_route_stores_its_events_and_the_listed_ones_none(walker: Walker, method: str, path: str) -> None:
    send = CALLS[(method, path)](walker)
    fan_out(walker.db, walker.ws.id)  # what setting up stored
    before = stored(walker.db, walker.ws.id)
    response = send()
    assert 200 <= response.status_code < 300, (method, path, response.status_code, response.body)
    found = types_since(walker.db, walker.ws.id, before)
    expected = EMITS.get((method, path), ())
    assert sorted(found) == sorted(expected), (method, path, found, NO_EVENT.get((method, path)))
    # One message per event (a lead's three events are three messages); fanned out, one delivery per message.
    assert fan_out(walker.db, walker.ws.id) == len(found)
    deliveries = rows_of(walker.db, "SELECT count(*) FROM webhook_deliveries d JOIN webhook_messages m"
                                    " ON m.tenant_id = d.tenant_id AND m.id = d.message_id WHERE d.tenant_id = %s",
                         (walker.ws.id,))
    assert deliveries == [(len(stored(walker.db, walker.ws.id)),)]


# ---- what an event carries ----


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox)


def test_contact_created_carries_the_row_as_written_custom_fields_included(ws: Workspace,
                                                                           fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    ws.create("/custom-fields", {"object": "contact", "key": "tier", "label": "Tier", "type": "select",
                                 "options": ["gold", "silver"]})
    contact = ws.create("/contacts", {"first_name": "Ada", "email": "ada@example.test", "custom": {"tier": "gold"}})
    [message] = [m for m in stored(fresh_db, ws.id) if m.type == "contact.created"]
    assert_carries_row(message.data, fresh_db, "contacts", contact["id"])
    assert message.data["custom"] == {"tier": "gold"} and message.data["email"] == "ada@example.test"
    assert message.data["id"] == contact["id"] and message.data["tenant_id"] == ws.id
    [resource] = rows_of(fresh_db, "SELECT resource FROM webhook_messages WHERE id = %s", (message.id,))
    assert resource == ("contacts",)


def test_an_update_carries_the_row_after_the_change(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    contact = ws.create("/contacts", {"first_name": "Ada"})
    assert ws.patch(f"/contacts/{contact['id']}", {"last_name": "Lovelace"}).status_code == 200
    [message] = [m for m in stored(fresh_db, ws.id) if m.type == "contact.updated"]
    assert_carries_row(message.data, fresh_db, "contacts", contact["id"])
    assert message.data["last_name"] == "Lovelace"


def test_a_deleted_event_carries_the_id(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    contact = ws.create("/contacts", {"first_name": "Gone"})
    lead = ws.create("/leads", {"title": "Gone"})
    assert ws.delete(f"/contacts/{contact['id']}").status_code == 204
    assert ws.delete(f"/leads/{lead['id']}").status_code == 204
    deleted = [(m.type, m.data) for m in stored(fresh_db, ws.id) if m.type.endswith(".deleted")]
    assert deleted == [("contact.deleted", {"id": contact["id"]}), ("lead.deleted", {"id": lead["id"]})]


def test_a_stage_move_carries_from_and_to_and_a_close_emits_won_or_lost(ws: Workspace,
                                                                         fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    pipeline, stages = default_stages(ws)
    lead = ws.create("/leads", {"title": "Deal"})
    assert ws.patch(f"/leads/{lead['id']}", {"stage_id": stages["Qualified"]}).status_code == 200
    assert ws.patch(f"/leads/{lead['id']}", {"stage_id": stages["Lost"]}).status_code == 200
    assert ws.patch(f"/leads/{lead['id']}", {"title": "Renamed"}).status_code == 200
    messages = stored(fresh_db, ws.id)
    assert [m.type for m in messages] == ["lead.created", "lead.updated", "lead.stage_changed", "lead.updated",
                                          "lead.stage_changed", "lead.lost", "lead.updated"]
    moves = [m.data for m in messages if m.type == "lead.stage_changed"]
    assert moves == [
        {"lead_id": lead["id"], "from_stage_id": stages["New"], "to_stage_id": stages["Qualified"],
         "pipeline_id": pipeline},
        {"lead_id": lead["id"], "from_stage_id": stages["Qualified"], "to_stage_id": stages["Lost"],
         "pipeline_id": pipeline}]
    [lost] = [m.data for m in messages if m.type == "lead.lost"]
    assert (lost["id"], lost["status"], lost["stage_id"]) == (lead["id"], "lost", stages["Lost"])
    # Created straight into a won stage: won from the start.
    ws.create("/leads", {"title": "Closed", "stage_id": stages["Won"]})
    assert [m.type for m in stored(fresh_db, ws.id)][-2:] == ["lead.created", "lead.won"]


def test_deleting_a_stage_emits_each_moved_leads_move(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    pipeline, stages = default_stages(ws)
    leads = [ws.create("/leads", {"title": f"Deal {n}", "stage_id": stages["Proposal"]})["id"] for n in range(3)]
    before = stored(fresh_db, ws.id)
    response = ws.delete(f"/pipelines/{pipeline}/stages/{stages['Proposal']}?target_stage_id={stages['Lost']}")
    assert response.status_code == 204, response.body
    new = [m for m in stored(fresh_db, ws.id) if m.id not in {b.id for b in before}]
    assert sorted(m.data["lead_id"] for m in new if m.type == "lead.stage_changed") == sorted(leads)
    assert all(m.data["from_stage_id"] == stages["Proposal"] and m.data["to_stage_id"] == stages["Lost"]
               for m in new if m.type == "lead.stage_changed")
    assert sorted(m.data["id"] for m in new if m.type == "lead.updated") == sorted(leads)
    assert sorted(m.data["id"] for m in new if m.type == "lead.lost") == sorted(leads)
    assert len(new) == 9


def test_a_csv_import_emits_one_event_per_record_created_or_updated(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    existing = ws.create("/contacts", {"first_name": "Old", "email": "old@example.test"})
    before = stored(fresh_db, ws.id)
    text = "first_name,email\nNew,new@example.test\nOther,other@example.test\nRenamed,old@example.test\n"
    response = ws.post_csv(ws.client, "/imports/contacts", text)
    assert response.status_code == 200, response.body
    assert (body_of(response)["created"], body_of(response)["updated"]) == (2, 1)
    new = [m for m in stored(fresh_db, ws.id) if m.id not in {b.id for b in before}]
    assert sorted((m.type, m.data["email"]) for m in new) == [
        ("contact.created", "new@example.test"), ("contact.created", "other@example.test"),
        ("contact.updated", "old@example.test")]
    [updated] = [m.data for m in new if m.type == "contact.updated"]
    assert_carries_row(updated, fresh_db, "contacts", existing["id"])
    assert updated["first_name"] == "Renamed"
    _, stages = default_stages(ws)
    leads = ws.post_csv(ws.client, "/imports/leads", f"title,stage_id\nA,{stages['Won']}\nB,\n")
    assert leads.status_code == 200, leads.body
    assert sorted(m.type for m in stored(fresh_db, ws.id)[len(before) + 3:]) == ["lead.created", "lead.created",
                                                                                "lead.won"]
    companies = ws.post_csv(ws.client, "/imports/companies", "name\nAcme\nGlobex\n")
    assert companies.status_code == 200, companies.body
    assert [m.type for m in stored(fresh_db, ws.id)][-2:] == ["company.created", "company.created"]


# ---- isolation, subscriptions ----


def test_another_workspaces_endpoint_never_gets_these_events(api: Client, outbox: Outbox, fresh_db: TestDatabase,
                                                             webhook_trigger: RecordingTrigger) -> None:
    a, b = new_workspace(api, outbox, "alpha"), new_workspace(api, outbox, "beta")
    a_hook, b_hook = subscribe(fresh_db, a.id), subscribe(fresh_db, b.id)
    contact = a.create("/contacts", {"first_name": "Ada"})
    a.create("/leads", {"title": "Deal", "contact_id": contact["id"]})
    assert a.delete(f"/contacts/{contact['id']}").status_code == 204
    assert stored(fresh_db, b.id) == []
    assert len(stored(fresh_db, a.id)) == 3
    assert (fan_out(fresh_db, a.id), fan_out(fresh_db, b.id)) == (3, 0)
    deliveries = rows_of(fresh_db, "SELECT tenant_id::text, endpoint_id::text, count(*) FROM webhook_deliveries"
                                   " GROUP BY 1, 2")
    assert deliveries == [(a.id, a_hook, 3)] and b_hook != a_hook
    assert {tenant for tenant, _ in webhook_trigger.woken} == {uuid.UUID(a.id)}


def test_a_forged_tenant_or_another_workspaces_row_stores_nothing(api: Client, outbox: Outbox,
                                                                   fresh_db: TestDatabase) -> None:
    """Emission runs under RLS: in B's transaction neither A's endpoints nor A's rows can be seen."""
    a, b = new_workspace(api, outbox, "alpha"), new_workspace(api, outbox, "beta")
    subscribe(fresh_db, a.id)
    contact = a.create("/contacts", {"first_name": "Ada"})["id"]
    before = stored(fresh_db, a.id)
    with tenant_tx(b.id) as conn:
        events.emit(conn, tenant_id=uuid.UUID(a.id), event_type="contact.deleted", data={"id": contact})
        events.emit_row(conn, tenant_id=uuid.UUID(a.id), event_type="contact.updated", table="contacts",
                        record_id=uuid.UUID(contact))
    subscribe(fresh_db, b.id)
    with tenant_tx(b.id) as conn:
        events.emit_row(conn, tenant_id=uuid.UUID(b.id), event_type="contact.updated", table="contacts",
                        record_id=uuid.UUID(contact))
    events.discard_emitted()
    assert stored(fresh_db, a.id) == before and stored(fresh_db, b.id) == []


def test_without_a_subscriber_nothing_is_stored(api: Client, outbox: Outbox, fresh_db: TestDatabase,
                                                webhook_trigger: RecordingTrigger) -> None:
    ws = new_workspace(api, outbox)
    other = new_workspace(api, outbox, "other")
    subscribe(fresh_db, other.id, enabled=False)  # a disabled endpoint subscribes to nothing
    for workspace in (ws, other):
        _, stages = default_stages(workspace)
        contact = workspace.create("/contacts", {"first_name": "Ada"})
        lead = workspace.create("/leads", {"title": "Deal", "contact_id": contact["id"]})
        workspace.patch(f"/leads/{lead['id']}", {"stage_id": stages["Won"]})
        workspace.create("/notes", {"body": "hi", "lead_id": lead["id"]})
        workspace.post_csv(workspace.client, "/imports/contacts", "email\nbulk@example.test\n")
        assert workspace.delete(f"/contacts/{contact['id']}").status_code == 204
    member = ws.as_member(outbox)
    assert ws.delete(f"/members/{member.user_id}").status_code == 204
    assert rows_of(fresh_db, "SELECT count(*) FROM webhook_messages") == [(0,)]
    assert rows_of(fresh_db, "SELECT count(*) FROM webhook_deliveries") == [(0,)]
    assert webhook_trigger.woken == []  # and nobody is woken for nothing


def test_only_the_subscribed_types_are_stored(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id, ("lead.won", "note.created"))
    _, stages = default_stages(ws)
    lead = ws.create("/leads", {"title": "Deal"})
    ws.patch(f"/leads/{lead['id']}", {"stage_id": stages["Won"]})
    ws.create("/contacts", {"first_name": "Ada"})
    assert [m.type for m in stored(fresh_db, ws.id)] == ["lead.won"]


# ---- atomicity ----


def test_a_write_that_fails_leaves_no_event(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    contact = ws.create("/contacts", {"first_name": "Ada", "email": "ada@example.test"})
    before = stored(fresh_db, ws.id)
    # The duplicate's INSERT fails after its event was queued behind it: the same transaction rolls back both.
    assert ws.post("/contacts", {"first_name": "Twin", "email": "ADA@example.test"}).status_code == 409
    assert ws.post("/leads", {"title": "x", "contact_id": str(uuid.uuid4())}).status_code == 422
    stale = ws.patch(f"/contacts/{contact['id']}", {"last_name": "x"}, headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    assert stored(fresh_db, ws.id) == before
    pipeline, stages = default_stages(ws)
    held = ws.create("/leads", {"title": "Held", "stage_id": stages["Proposal"]})
    before = stored(fresh_db, ws.id)
    # A stage holding a lead needs a target: 409, and its lead's move is not announced.
    assert ws.delete(f"/pipelines/{pipeline}/stages/{stages['Proposal']}").status_code == 409
    assert stored(fresh_db, ws.id) == before
    assert rows_of(fresh_db, "SELECT stage_id::text FROM leads WHERE id = %s", (held["id"],)) == [
        (stages["Proposal"],)]


def test_a_rolled_back_transaction_takes_its_events_with_it(ws: Workspace, fresh_db: TestDatabase) -> None:
    subscribe(fresh_db, ws.id)
    channel = ws.create("/channels", {"type": "email", "signing_key": "key-" + "r" * 20})["id"]
    tenant = uuid.UUID(ws.id)
    with pytest.raises(RuntimeError), tenant_tx(tenant) as conn:
        # What processing a new email does, then a failure before the end of the event's transaction.
        contact = conversations.contact_for_email(conn, tenant, "pat@customer.example")
        conversations.conversation_for(conn, tenant, uuid.UUID(channel), "<t@customer.example>", contact,
                                       datetime.now(UTC))
        raise RuntimeError("processing failed")
    events.discard_emitted()
    assert stored(fresh_db, ws.id) == []
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(0,)]


# ---- round trips (the B3 write, traced) ----


def _trips(app_db: Database, action: Callable[[], None]) -> tuple[int, list[str]]:
    """How many round trips a request took, from the one setting the tenant to the answer of the Sync that
    commits, and the statements of the last one."""
    lines = trace_lines(app_db, action)
    start = next(i for i, line in enumerate(lines) if line.startswith("F") and "set_config('app.tenant_id'" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("B") and "ReadyForQuery" in lines[i])
    batches = round_trips(lines[start:end])
    return len(batches), batches[-1]


@pytest.mark.parametrize("path", ["/contacts", "/leads"])
def test_a_subscribed_workspace_creates_in_as_many_round_trips_as_one_without(
        api: Client, outbox: Outbox, fresh_db: TestDatabase, app_db: Database, path: str) -> None:
    quiet, loud = new_workspace(api, outbox, "quiet"), new_workspace(api, outbox, "loud")
    subscribe(fresh_db, loud.id)
    body = {"first_name": "Ada"} if path == "/contacts" else {"title": "Deal"}
    counts = {}
    for name, workspace in (("quiet", quiet), ("loud", loud)):
        workspace.create(path, body)  # warm: both measured in the same state

        def create(workspace: Workspace = workspace) -> None:
            workspace.create(path, body)

        counts[name], last = _trips(app_db, create)
        # The emission travels with the INSERT, the audit row and the Sync that commits them.
        assert any("emit_webhook_row" in line for line in last), last
        assert any("\tSync" in line for line in last), last
    assert counts["quiet"] == counts["loud"] == 2
    assert [m.type for m in stored(fresh_db, loud.id)] == [f"{path[1:-1]}.created"] * 2
    assert stored(fresh_db, quiet.id) == []


def test_a_subscribed_import_takes_as_many_round_trips_as_one_without(
        api: Client, outbox: Outbox, fresh_db: TestDatabase, app_db: Database) -> None:
    quiet, loud = new_workspace(api, outbox, "quiet"), new_workspace(api, outbox, "loud")
    subscribe(fresh_db, loud.id)
    counts = {}
    for name, workspace in (("quiet", quiet), ("loud", loud)):
        def load(workspace: Workspace = workspace) -> None:
            text = "first_name,email\n" + "".join(f"P{n},p{n}-{uuid.uuid4().hex[:6]}@example.test\n" for n in range(5))
            assert workspace.post_csv(workspace.client, "/imports/contacts", text).status_code == 200

        counts[name], _ = _trips(app_db, load)
    assert counts["quiet"] == counts["loud"]
    assert [m.type for m in stored(fresh_db, loud.id)] == ["contact.created"] * 5
