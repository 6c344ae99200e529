"""Correction through the API: channels (names, settings, replaced secrets), API key names, call transcripts.

Each PATCH honours If-Match (412), is audited without the values it wrote, answers 404 for another
workspace's ids and 403 to a member where the neighbouring create/delete routes need an admin.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from chalice.test import Client

from chalicelib.inbox.queue import LocalQueue
from chalicelib.vault.envelope import credential_context
from chalicelib.vault.store import get_vault
from tests.api.auth_helpers import (
    ORIGIN,
    Browser,
    Outbox,
    body_of,
    call,
    create_key,
    create_workspace,
    fresh_address,
    invite_and_join,
    problem,
    sign_in,
)
from tests.api.test_telephony import TRANSCRIPT, _opt_in, _post, _sid, _status, _transcription, _workspace
from tests.conftest import TestDatabase
from tests.fix_inbox import (
    MAILGUN_KEY,
    WHATSAPP_SECRET,
    email_setup,
    mailgun_signed,
    post_mailgun_form,
    post_whatsapp,
    whatsapp_delivery,
    whatsapp_setup,
    whatsapp_text,
)


def _audit(db: TestDatabase, action: str) -> list[tuple[Any, ...]]:
    with db.admin() as conn:
        return conn.execute("SELECT target_id::text, details FROM audit_log WHERE action = %s ORDER BY occurred_at",
                            (action,)).fetchall()


def _raw(api: Client, method: str, path: str, browser: Browser, raw: bytes, content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> Any:
    sent = {"Content-Type": content_type, "Cookie": browser.cookie, "X-CSRF-Token": browser.csrf,
            "Origin": ORIGIN, **(headers or {})}
    return api.http.request(method, path, headers=sent, body=raw)


# ---- channels ----


def test_admin_renames_a_channel_and_replaces_a_secret_that_is_never_read_back(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    assert channel["name"] is None
    admin = invite_and_join(api, outbox, owner, workspace, fresh_address("admin"), "admin")
    path = f"/workspaces/{workspace}/channels/{channel['id']}"
    read = call(api, "GET", path, admin)
    assert read.status_code == 200 and body_of(read) == channel
    new_secret = f"CANARY-app-secret-{uuid.uuid4().hex}"
    response = call(api, "PATCH", path, admin, {"name": "Sales WhatsApp", "app_secret": new_secret,
                                                "display_phone_number": "+1 415 555 0123"},
                    headers={"If-Match": read.headers["ETag"]})
    assert response.status_code == 200, response.body
    changed = body_of(response)
    assert (changed["name"], changed["display_phone_number"]) == ("Sales WhatsApp", "+1 415 555 0123")
    assert changed["hints"]["app_secret"].endswith(new_secret[-4:]) and new_secret[:-4] not in response.body.decode()
    assert changed["hints"]["access_token"] == channel["hints"]["access_token"]  # untouched secrets keep theirs
    assert response.headers["ETag"] != read.headers["ETag"]
    assert call(api, "GET", path, owner).headers["ETag"] == response.headers["ETag"]
    # The webhook now verifies with the new secret only (no stale decryption from the cache).
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.C1")])
    problem(post_whatsapp(api, channel["id"], raw, secret=WHATSAPP_SECRET), 401)
    assert post_whatsapp(api, channel["id"], raw, secret=new_secret).status_code == 200
    # The other secrets survived the re-encryption.
    ok = api.http.get(f"/webhooks/whatsapp/{channel['id']}?hub.mode=subscribe&hub.challenge=42"
                      "&hub.verify_token=verify-me-please")
    assert ok.status_code == 200 and ok.body == b"42"
    # Audited with the field names; the secret is nowhere: answers, lists, audit, logs, stored text.
    ((target, details),) = _audit(fresh_db, "channel.updated")
    assert target == channel["id"] and details == {"fields": ["app_secret", "display_phone_number", "name"]}
    listing = call(api, "GET", f"/workspaces/{workspace}/channels", owner).body.decode()
    audit_page = call(api, "GET", f"/workspaces/{workspace}/audit-log", owner).body.decode()
    with fresh_db.admin() as conn:
        stored = json.dumps([str(r) for r in conn.execute("SELECT * FROM channels").fetchall()])
        events = json.dumps([str(r) for r in conn.execute("SELECT * FROM audit_log").fetchall()])
    for text in (listing, audit_page, stored, events, logs.getvalue()):
        assert new_secret not in text and new_secret[:-4] not in text


def test_secrets_replaced_by_another_process_are_not_served_from_this_ones_cache(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    _owner, workspace, channel = whatsapp_setup(api, outbox)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.K1")])
    assert post_whatsapp(api, channel["id"], raw).status_code == 200  # this process now caches the secrets
    # Another Lambda's PATCH: the row gets a new ciphertext; this process's cache was not told.
    new_secret = f"app-secret-{uuid.uuid4().hex}"
    plaintext = json.dumps({"access_token": "EAAG" + "x" * 20, "app_secret": new_secret,
                            "verify_token": "verify-me-please"}).encode()
    ciphertext = get_vault().encrypt(plaintext, credential_context(uuid.UUID(workspace), f"channel:{channel['id']}"))
    with fresh_db.admin() as conn:
        conn.execute("UPDATE channels SET secrets_ciphertext = %s WHERE id = %s", (ciphertext, channel["id"]))
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.K2")])
    problem(post_whatsapp(api, channel["id"], raw), 401)
    assert post_whatsapp(api, channel["id"], raw, secret=new_secret).status_code == 200


def test_email_channel_address_and_signing_key_change_and_a_name_is_cleared(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    path = f"/workspaces/{workspace}/channels/{channel}"
    new_key = f"key-CANARY-{uuid.uuid4().hex}"
    named = call(api, "PATCH", path, owner, {"name": "Support", "address": "help@acme.example",
                                             "signing_key": new_key})
    assert named.status_code == 200, named.body
    assert (body_of(named)["name"], body_of(named)["address"]) == ("Support", "help@acme.example")
    fields = {"sender": "Pat Doe <pat@customer.example>", "recipient": "help@acme.example", "subject": "Hi",
              "body-plain": "hello", "Message-Id": f"<{uuid.uuid4().hex}@customer.example>"}
    problem(post_mailgun_form(api, channel, mailgun_signed(fields, key=MAILGUN_KEY)), 401)
    assert post_mailgun_form(api, channel, mailgun_signed(fields, key=new_key)).status_code == 200
    cleared = call(api, "PATCH", path, owner, {"name": None})
    assert cleared.status_code == 200 and body_of(cleared)["name"] is None
    assert body_of(cleared)["address"] == "help@acme.example"
    # An empty PATCH changes nothing, writes no audit entry, and keeps the version.
    same = call(api, "PATCH", path, owner, {})
    assert same.status_code == 200 and same.headers["ETag"] == cleared.headers["ETag"]
    assert [d for _t, d in _audit(fresh_db, "channel.updated")] == [
        {"fields": ["address", "name", "signing_key"]}, {"fields": ["name"]}]
    assert new_key not in logs.getvalue() and new_key not in (named.body + cleared.body).decode()


def test_stale_if_match_on_a_channel_is_412_and_changes_nothing(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    path = f"/workspaces/{workspace}/channels/{channel['id']}"
    first = call(api, "GET", path, owner).headers["ETag"]
    assert call(api, "PATCH", path, owner, {"name": "One"}, headers={"If-Match": first}).status_code == 200
    problem(call(api, "PATCH", path, owner, {"name": "Two", "access_token": "EAAG-CANARY-stale-token"},
                 headers={"If-Match": first}), 412)
    problem(call(api, "PATCH", path, owner, {"name": "Two"}, headers={"If-Match": '"nope"'}), 412)
    assert body_of(call(api, "GET", path, owner))["name"] == "One"
    assert len(_audit(fresh_db, "channel.updated")) == 1


def test_member_gets_403_and_another_workspace_404_for_a_channel(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    member = invite_and_join(api, outbox, owner, workspace, fresh_address("member"), "member")
    member_key = create_key(api, owner, workspace, role="member")["key"]
    path = f"/workspaces/{workspace}/channels/{channel['id']}"
    problem(call(api, "PATCH", path, member, {"name": "mine"}), 403)
    problem(call(api, "PATCH", path, body={"name": "mine"}, bearer=member_key), 403)
    problem(call(api, "GET", path, member), 403)
    other_owner, other, other_channel = whatsapp_setup(api, outbox)
    # B's owner: A's channel under A's path, and under B's own path (RLS hides it); B's channel under A's path.
    problem(call(api, "PATCH", path, other_owner, {"name": "pwned"}), 404)
    problem(call(api, "PATCH", f"/workspaces/{other}/channels/{channel['id']}", other_owner, {"name": "pwned"}), 404)
    problem(call(api, "GET", f"/workspaces/{other}/channels/{channel['id']}", other_owner), 404)
    problem(call(api, "PATCH", f"/workspaces/{workspace}/channels/{other_channel['id']}", owner, {"name": "x"}), 404)
    problem(call(api, "PATCH", f"/workspaces/{workspace}/channels/not-an-id", owner, {"name": "x"}), 404)
    assert body_of(call(api, "GET", path, owner))["name"] is None
    assert _audit(fresh_db, "channel.updated") == []


def test_channel_patch_refuses_what_the_channel_is_null_secrets_and_malformed_bodies(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    path = f"/workspaces/{workspace}/channels/{channel['id']}"
    for body, field in (({"signing_key": "k" * 20}, "signing_key"), ({"address": "a@acme.example"}, "address"),
                        ({"access_token": None}, "access_token"), ({"app_secret": "short"}, "app_secret"),
                        ({"type": "email"}, "type"), ({"phone_number_id": "1234567"}, "phone_number_id"),
                        ({"name": ""}, "name"), ({"name": "n" * 101}, "name"), ({"name": 7}, "name"),
                        ({"display_phone_number": "9" * 33}, "display_phone_number")):
        found = problem(call(api, "PATCH", path, owner, body), 422)
        assert [e["field"] for e in found["errors"]] == [field], body
    problem(_raw(api, "PATCH", path, owner, b'{"name": '), 400)
    problem(_raw(api, "PATCH", path, owner, b'["name"]'), 422)
    problem(_raw(api, "PATCH", path, owner, b"name=x", "application/x-www-form-urlencoded"), 415)
    problem(call(api, "PATCH", path, owner, {"name": "nul\u0000"}), 422)
    assert body_of(call(api, "GET", path, owner)) == channel
    assert _audit(fresh_db, "channel.updated") == []


# ---- API keys ----


def test_admin_renames_an_api_key_that_keeps_working(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    admin = invite_and_join(api, outbox, owner, workspace, fresh_address("admin"), "admin")
    created = create_key(api, owner, workspace, role="member")
    path = f"/workspaces/{workspace}/api-keys/{created['id']}"
    read = call(api, "GET", path, admin)
    assert read.status_code == 200 and body_of(read)["name"] == "member key" and "key" not in body_of(read)
    renamed = call(api, "PATCH", path, admin, {"name": "Zapier (sales)"}, headers={"If-Match": read.headers["ETag"]})
    assert renamed.status_code == 200, renamed.body
    assert body_of(renamed)["name"] == "Zapier (sales)" and "key" not in body_of(renamed)
    assert created["key"] not in renamed.body.decode()
    assert renamed.headers["ETag"] != read.headers["ETag"]
    assert call(api, "GET", f"/workspaces/{workspace}", bearer=created["key"]).status_code == 200
    # Its use is bookkeeping, not a new version: the ETag still matches after the key was used.
    assert call(api, "GET", path, owner).headers["ETag"] == renamed.headers["ETag"]
    listed = body_of(call(api, "GET", f"/workspaces/{workspace}/api-keys", owner))["data"]
    assert [k["name"] for k in listed] == ["Zapier (sales)"]
    problem(call(api, "PATCH", path, admin, {"name": "stale"}, headers={"If-Match": read.headers["ETag"]}), 412)
    # A revoked key may still be renamed (it stays listed); revoking gives it a new version.
    assert call(api, "DELETE", path, owner).status_code == 204
    problem(call(api, "PATCH", path, owner, {"name": "x"}, headers={"If-Match": renamed.headers["ETag"]}), 412)
    assert call(api, "PATCH", path, owner, {"name": "Zapier (revoked)"}).status_code == 200
    assert [(str(t), d) for t, d in _audit(fresh_db, "api_key.renamed")] == [(created["id"], {})] * 2


def test_api_key_rename_is_for_admins_of_its_workspace_with_a_valid_name(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    member = invite_and_join(api, outbox, owner, workspace, fresh_address("member"), "member")
    created = create_key(api, owner, workspace, role="member")
    path = f"/workspaces/{workspace}/api-keys/{created['id']}"
    problem(call(api, "PATCH", path, member, {"name": "mine"}), 403)
    problem(call(api, "GET", path, member), 403)
    problem(call(api, "PATCH", path, body={"name": "mine"}, bearer=created["key"]), 403)
    other_owner = sign_in(api, fresh_address("other"), outbox)
    other = create_workspace(api, other_owner)["id"]
    problem(call(api, "PATCH", path, other_owner, {"name": "pwned"}), 404)
    problem(call(api, "PATCH", f"/workspaces/{other}/api-keys/{created['id']}", other_owner, {"name": "pwned"}), 404)
    problem(call(api, "GET", f"/workspaces/{other}/api-keys/{created['id']}", other_owner), 404)
    problem(call(api, "PATCH", f"/workspaces/{workspace}/api-keys/{uuid.uuid4()}", owner, {"name": "x"}), 404)
    for body in ({}, {"name": ""}, {"name": "n" * 101}, {"name": None}, {"name": "x", "role": "admin"},
                 {"name": "x", "expires_at": "2031-01-01T00:00:00Z"}):
        problem(call(api, "PATCH", path, owner, body), 422)
    problem(_raw(api, "PATCH", path, owner, b"{not json"), 400)
    listed = body_of(call(api, "GET", f"/workspaces/{workspace}/api-keys", owner))["data"]
    assert [(k["name"], k["role"]) for k in listed] == [("member key", "member")]
    assert _audit(fresh_db, "api_key.renamed") == []


# ---- call transcripts ----


def _call_with_transcript(api: Client, outbox: Outbox, worker: LocalQueue) -> tuple[Browser, str, str, str]:
    """A workspace that opted in to transcription, and a call with its transcript; (owner, ws, call id, sid)."""
    owner, workspace = _workspace(api, outbox)
    _opt_in(api, owner, workspace, recording=False, transcription=True)
    call_sid = _sid("CA")
    assert _post(api, workspace, "calls", _status(call_sid, "completed", duration="9")).status_code == 200
    assert _post(api, workspace, "transcriptions", _transcription(call_sid, _sid("TR"))).status_code == 204
    worker.drain()
    (found,) = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"]
    return owner, workspace, found["id"], call_sid


def test_a_member_corrects_a_transcript_which_a_later_callback_does_not_overwrite(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner, workspace, call_id, call_sid = _call_with_transcript(api, outbox, worker)
    member = invite_and_join(api, outbox, owner, workspace, fresh_address("member"), "member")
    path = f"/workspaces/{workspace}/calls/{call_id}"
    read = call(api, "GET", path, member)
    assert body_of(read)["transcript"] == TRANSCRIPT and body_of(read)["transcript_corrected_at"] is None
    corrected_text = f"CANARY-corrected-{uuid.uuid4().hex[:8]} please call me back tomorrow"
    response = call(api, "PATCH", path, member, {"transcript": corrected_text},
                    headers={"If-Match": read.headers["ETag"]})
    assert response.status_code == 200, response.body
    corrected = body_of(response)
    assert corrected["transcript"] == corrected_text and corrected["transcript_corrected_at"] is not None
    assert {k: v for k, v in corrected.items() if not k.startswith(("transcript", "updated_at"))} == {
        k: v for k, v in body_of(read).items() if not k.startswith(("transcript", "updated_at"))}
    assert response.headers["ETag"] != read.headers["ETag"]
    problem(call(api, "PATCH", path, owner, {"transcript": "stale"}, headers={"If-Match": read.headers["ETag"]}), 412)
    # A late transcription callback of the same call keeps the correction.
    assert _post(api, workspace, "transcriptions", _transcription(call_sid, _sid("TR"))).status_code == 204
    worker.drain()
    assert body_of(call(api, "GET", path, owner))["transcript"] == corrected_text
    # Kept with its audit entry: who and when, never the text (old or new).
    ((target, details),) = _audit(fresh_db, "call.transcript_corrected")
    assert target == call_id and details == {"length": len(corrected_text)}
    audit_page = call(api, "GET", f"/workspaces/{workspace}/audit-log", owner).body.decode()
    entry = next(e for e in body_of(call(api, "GET", f"/workspaces/{workspace}/audit-log", owner))["data"]
                 if e["action"] == "call.transcript_corrected")
    assert entry["actor_user_id"] == member.user_id
    for text in (audit_page, logs.getvalue()):
        assert corrected_text not in text and TRANSCRIPT not in text


def test_a_call_without_a_transcript_cannot_get_one(api: Client, outbox: Outbox, worker: LocalQueue,
                                                    fresh_db: TestDatabase) -> None:
    owner, workspace = _workspace(api, outbox)
    call_sid = _sid("CA")  # transcription not opted in: its transcript is dropped
    assert _post(api, workspace, "calls", _status(call_sid, "completed")).status_code == 200
    assert _post(api, workspace, "transcriptions", _transcription(call_sid, _sid("TR"))).status_code == 204
    _opt_in(api, owner, workspace, recording=False, transcription=True)
    waiting = _sid("CA")  # opted in, but no transcript arrived yet
    assert _post(api, workspace, "calls", _status(waiting, "in-progress")).status_code == 200
    worker.drain()
    for found in body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"]:
        problem(call(api, "PATCH", f"/workspaces/{workspace}/calls/{found['id']}", owner,
                     {"transcript": "invented"}), 409)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT transcript FROM calls").fetchall() == [(None,), (None,)]
    assert _audit(fresh_db, "call.transcript_corrected") == []


def test_transcript_correction_is_404_for_another_workspace_and_refuses_bad_bodies(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    owner, workspace, call_id, _unused_sid = _call_with_transcript(api, outbox, worker)
    other_owner = sign_in(api, fresh_address("other"), outbox)
    other = create_workspace(api, other_owner)["id"]
    problem(call(api, "PATCH", f"/workspaces/{workspace}/calls/{call_id}", other_owner, {"transcript": "x"}), 404)
    problem(call(api, "PATCH", f"/workspaces/{other}/calls/{call_id}", other_owner, {"transcript": "x"}), 404)
    path = f"/workspaces/{workspace}/calls/{call_id}"
    for body in ({}, {"transcript": ""}, {"transcript": None}, {"transcript": 5}, {"transcript": "x", "status": "busy"},
                 {"transcript": "t" * 100_001}, {"transcript": "a\u0000b"}):
        problem(call(api, "PATCH", path, owner, body), 422)
    problem(_raw(api, "PATCH", path, owner, b'{"transcript": "unterminated'), 400)
    assert body_of(call(api, "GET", path, owner))["transcript"] == TRANSCRIPT
    assert _audit(fresh_db, "call.transcript_corrected") == []
