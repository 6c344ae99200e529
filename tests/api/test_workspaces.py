"""Workspaces (create, read, rename, soft delete, restore), members and invitations."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from chalice.test import Client

from chalicelib.settings import SettingsError, get_settings, load_settings
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
    post_json,
    problem,
    session_from,
    sign_in,
)

T0 = datetime(2030, 1, 7, 12, 3, tzinfo=UTC)


def _ws(workspace_id: str, rest: str = "") -> str:
    return f"/workspaces/{workspace_id}{rest}"


def _role_of(api: Client, browser: Browser, workspace_id: str) -> str | None:
    workspaces = body_of(call(api, "GET", "/auth/me", browser))["workspaces"]
    return next((w["role"] for w in workspaces if w["id"] == workspace_id), None)


# ---- create, read, rename ----------------------------------------------------------------------


def test_create_workspace_answers_201_with_location_etag_and_owner_role(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "founder@example.test", outbox)
    response = call(api, "POST", "/workspaces", owner, {"name": "Acme"})
    assert response.status_code == 201
    created = body_of(response)
    assert created["name"] == "Acme" and created["role"] == "owner" and created["deleted_at"] is None
    uuid.UUID(created["id"])
    assert response.headers["Location"] == f"/workspaces/{created['id']}"
    assert response.headers["ETag"].startswith('"')
    listed = body_of(call(api, "GET", "/workspaces", owner))["data"]
    assert [(w["id"], w["role"]) for w in listed] == [(created["id"], "owner")]
    assert _role_of(api, owner, created["id"]) == "owner"


def test_create_workspace_needs_a_session_not_an_api_key(api: Client, outbox: Outbox) -> None:
    problem(post_json(api, "/workspaces", {"name": "x"}, {"Origin": ORIGIN}), 401)
    owner = sign_in(api, "keyholder@example.test", outbox)
    workspace = create_workspace(api, owner)
    key = create_key(api, owner, workspace["id"], role="admin")["key"]
    problem(call(api, "POST", "/workspaces", body={"name": "x"}, bearer=key), 401)
    problem(call(api, "POST", "/workspaces", owner, {"name": ""}), 422)


def test_get_workspace_with_etag_and_patch_honours_if_match(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "renamer@example.test", outbox)
    workspace = create_workspace(api, owner, "Old name")
    read = call(api, "GET", _ws(workspace["id"]), owner)
    assert read.status_code == 200 and body_of(read)["name"] == "Old name"
    etag = read.headers["ETag"]
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=5)):
        renamed = call(api, "PATCH", _ws(workspace["id"]), owner, {"name": "New name"},
                       headers={"If-Match": etag})
    assert renamed.status_code == 200 and body_of(renamed)["name"] == "New name"
    assert renamed.headers["ETag"] != etag
    stale = call(api, "PATCH", _ws(workspace["id"]), owner, {"name": "Lost update"}, headers={"If-Match": etag})
    problem(stale, 412)
    assert body_of(call(api, "GET", _ws(workspace["id"]), owner))["name"] == "New name"
    # Without If-Match the write is unconditional.
    assert call(api, "PATCH", _ws(workspace["id"]), owner, {"name": "Third"}).status_code == 200


def test_missing_or_malformed_workspace_ids_are_404(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "prober@example.test", outbox)
    problem(call(api, "GET", _ws(str(uuid.uuid4())), owner), 404)
    problem(call(api, "GET", _ws("not-a-uuid"), owner), 404)
    problem(call(api, "GET", _ws("' OR 1=1 --"), owner), 404)


def test_workspace_routes_need_authentication(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "authn@example.test", outbox)
    workspace = create_workspace(api, owner)
    problem(api.http.get(_ws(workspace["id"])), 401)
    problem(api.http.get(_ws(workspace["id"], "/members")), 401)
    problem(call(api, "GET", _ws(workspace["id"]), bearer="crm_aaaaaaaa_" + "b" * 43), 404)


# ---- delete and restore ------------------------------------------------------------------------


def _grace() -> timedelta:
    return timedelta(days=get_settings().workspace_purge_grace_days)


def test_only_an_owner_deletes_and_gets_202_with_purge_after_the_grace_period(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "deleter@example.test", outbox)
    workspace = create_workspace(api, owner)
    admin = invite_and_join(api, outbox, owner, workspace["id"], "admin-del@example.test", "admin")
    member = invite_and_join(api, outbox, owner, workspace["id"], "member-del@example.test", "member")
    problem(call(api, "DELETE", _ws(workspace["id"]), admin), 403)
    problem(call(api, "DELETE", _ws(workspace["id"]), member), 403)

    response = call(api, "DELETE", _ws(workspace["id"]), owner)
    assert response.status_code == 202
    deleted = body_of(response)
    deleted_at = datetime.fromisoformat(deleted["deleted_at"])
    purge_after = datetime.fromisoformat(deleted["purge_after"])
    assert purge_after - deleted_at == _grace()
    # The privacy policy: deleted workspaces are purged from active databases within 7 days.
    assert purge_after - deleted_at < timedelta(days=7)
    assert abs(deleted_at - datetime.now(UTC)) < timedelta(minutes=5)

    for browser in (owner, admin, member):
        problem(call(api, "GET", _ws(workspace["id"]), browser), 404)
        problem(call(api, "GET", _ws(workspace["id"], "/members"), browser), 404)
    problem(call(api, "DELETE", _ws(workspace["id"]), owner), 404)
    listed = body_of(call(api, "GET", "/workspaces", owner))["data"]
    assert listed[0]["deleted_at"] is not None  # still listed while restorable


def test_purge_grace_is_configurable_and_never_a_week(env: Any) -> None:
    env(workspace_purge_grace_days=5)
    assert _grace() == timedelta(days=5)
    with pytest.raises(SettingsError):
        load_settings(workspace_purge_grace_days=7)


def test_delete_with_a_stale_if_match_is_412(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "careful@example.test", outbox)
    workspace = create_workspace(api, owner)
    etag = call(api, "GET", _ws(workspace["id"]), owner).headers["ETag"]
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=5)):
        call(api, "PATCH", _ws(workspace["id"]), owner, {"name": "changed"})
    problem(call(api, "DELETE", _ws(workspace["id"]), owner, headers={"If-Match": etag}), 412)
    assert call(api, "GET", _ws(workspace["id"]), owner).status_code == 200


def test_restore_works_within_the_grace_period(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        owner = sign_in(api, "regretful@example.test", outbox)
        workspace = create_workspace(api, owner)
        member = invite_and_join(api, outbox, owner, workspace["id"], "bystander@example.test")
        assert call(api, "DELETE", _ws(workspace["id"]), owner).status_code == 202
        traveller.shift(_grace() - timedelta(hours=1))
        problem(call(api, "POST", _ws(workspace["id"], "/restore"), member), 403)
        restored = call(api, "POST", _ws(workspace["id"], "/restore"), owner)
        assert restored.status_code == 200
        assert body_of(restored)["deleted_at"] is None and body_of(restored)["purge_after"] is None
        assert call(api, "GET", _ws(workspace["id"]), member).status_code == 200
        problem(call(api, "POST", _ws(workspace["id"], "/restore"), owner), 409)  # not deleted


def test_restore_is_refused_after_the_grace_period(api: Client, outbox: Outbox, env: Any) -> None:
    env(session_idle_timeout_s=30 * 86400)
    with time_machine.travel(T0, tick=False) as traveller:
        owner = sign_in(api, "too-late@example.test", outbox)
        workspace = create_workspace(api, owner)
        assert call(api, "DELETE", _ws(workspace["id"]), owner).status_code == 202
        traveller.shift(_grace() + timedelta(hours=1))
        problem(call(api, "POST", _ws(workspace["id"], "/restore"), owner), 409)
        traveller.shift(timedelta(days=8))
        problem(call(api, "POST", _ws(workspace["id"], "/restore"), owner), 409)
        problem(call(api, "GET", _ws(workspace["id"]), owner), 404)


# ---- members and invitations -------------------------------------------------------------------


def test_invitation_email_signs_in_with_the_invited_role(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "inviter@example.test", outbox)
    workspace = create_workspace(api, owner, "Team")
    response = call(api, "POST", _ws(workspace["id"], "/invitations"), owner,
                    {"email": "Invitee@Example.test", "role": "admin"})
    assert response.status_code == 202 and body_of(response) == {"status": "sent"}
    mail = outbox.newest(to="invitee@example.test")
    assert "Team" in mail.text and mail.subject == "You are invited to a CRM workspace"
    invitee = session_from(post_json(api, "/auth/session", {"token": mail.token}, {"Origin": ORIGIN}))
    assert [(w["id"], w["role"]) for w in invitee.body["workspaces"]] == [(workspace["id"], "admin")]
    members = body_of(call(api, "GET", _ws(workspace["id"], "/members"), invitee))["data"]
    assert [(m["email"], m["role"]) for m in members] == [("inviter@example.test", "owner"),
                                                          ("invitee@example.test", "admin")]


def test_invitation_code_works_too_and_an_existing_user_keeps_one_account(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "inviter2@example.test", outbox)
    existing = sign_in(api, "already-here@example.test", outbox)
    workspace = create_workspace(api, owner)
    call(api, "POST", _ws(workspace["id"], "/invitations"), owner, {"email": "already-here@example.test"})
    code = outbox.newest(to="already-here@example.test").code
    joined = session_from(post_json(api, "/auth/session", {"email": "already-here@example.test", "code": code}))
    assert joined.user_id == existing.user_id
    assert _role_of(api, joined, workspace["id"]) == "member"


def test_only_admins_invite_and_only_owners_invite_owners(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "boss@example.test", outbox)
    workspace = create_workspace(api, owner)
    admin = invite_and_join(api, outbox, owner, workspace["id"], "deputy@example.test", "admin")
    member = invite_and_join(api, outbox, owner, workspace["id"], "worker@example.test", "member")
    sent = outbox.count()
    problem(call(api, "POST", _ws(workspace["id"], "/invitations"), member, {"email": "x@example.test"}), 403)
    problem(call(api, "POST", _ws(workspace["id"], "/invitations"), admin,
                 {"email": "x@example.test", "role": "owner"}), 403)
    assert outbox.count() == sent
    assert call(api, "POST", _ws(workspace["id"], "/invitations"), admin,
                {"email": "x@example.test", "role": "admin"}).status_code == 202
    assert call(api, "POST", _ws(workspace["id"], "/invitations"), owner,
                {"email": "y@example.test", "role": "owner"}).status_code == 202


def test_role_changes_admin_cannot_grant_or_take_ownership(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "chief@example.test", outbox)
    workspace = create_workspace(api, owner)
    admin = invite_and_join(api, outbox, owner, workspace["id"], "lieutenant@example.test", "admin")
    member = invite_and_join(api, outbox, owner, workspace["id"], "private@example.test", "member")
    members = _ws(workspace["id"], "/members/")
    problem(call(api, "PATCH", members + member.user_id, admin, {"role": "owner"}), 403)
    problem(call(api, "PATCH", members + owner.user_id, admin, {"role": "member"}), 403)
    problem(call(api, "PATCH", members + admin.user_id, member, {"role": "member"}), 403)
    problem(call(api, "PATCH", members + member.user_id, admin, {"role": "superuser"}), 422)
    assert call(api, "PATCH", members + member.user_id, admin, {"role": "admin"}).status_code == 204
    assert _role_of(api, member, workspace["id"]) == "admin"
    assert call(api, "PATCH", members + member.user_id, owner, {"role": "owner"}).status_code == 204
    assert _role_of(api, member, workspace["id"]) == "owner"
    problem(call(api, "PATCH", members + str(uuid.uuid4()), owner, {"role": "admin"}), 404)


def test_last_owner_cannot_leave_or_be_demoted(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "captain@example.test", outbox)
    workspace = create_workspace(api, owner)
    members = _ws(workspace["id"], "/members/")
    problem(call(api, "PATCH", members + owner.user_id, owner, {"role": "admin"}), 409)
    problem(call(api, "DELETE", members + owner.user_id, owner), 409)
    assert _role_of(api, owner, workspace["id"]) == "owner"
    # With a second owner, the first may step down.
    second = invite_and_join(api, outbox, owner, workspace["id"], "first-mate@example.test", "owner")
    assert call(api, "PATCH", members + owner.user_id, owner, {"role": "admin"}).status_code == 204
    problem(call(api, "DELETE", members + second.user_id, second), 409)
    assert call(api, "DELETE", members + owner.user_id, owner).status_code == 204
    problem(call(api, "GET", _ws(workspace["id"]), owner), 404)


def test_members_remove_others_only_as_admin_and_owners_only_as_owner(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "keeper@example.test", outbox)
    workspace = create_workspace(api, owner)
    admin = invite_and_join(api, outbox, owner, workspace["id"], "warden@example.test", "admin")
    member = invite_and_join(api, outbox, owner, workspace["id"], "tenant@example.test", "member")
    other = invite_and_join(api, outbox, owner, workspace["id"], "neighbour@example.test", "member")
    members = _ws(workspace["id"], "/members/")
    problem(call(api, "DELETE", members + other.user_id, member), 403)
    problem(call(api, "DELETE", members + owner.user_id, admin), 403)
    assert call(api, "DELETE", members + other.user_id, admin).status_code == 204
    assert call(api, "DELETE", members + member.user_id, member).status_code == 204  # leaving
    problem(call(api, "GET", _ws(workspace["id"]), member), 404)


def test_removed_member_loses_access_on_the_very_next_request(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "remover@example.test", outbox)
    workspace = create_workspace(api, owner)
    member = invite_and_join(api, outbox, owner, workspace["id"], "removed@example.test", "admin")
    assert call(api, "GET", _ws(workspace["id"]), member).status_code == 200
    assert call(api, "DELETE", _ws(workspace["id"], f"/members/{member.user_id}"), owner).status_code == 204
    # Same cookie, next request: the membership is read from the database, not from the session.
    problem(call(api, "GET", _ws(workspace["id"]), member), 404)
    problem(call(api, "GET", _ws(workspace["id"], "/members"), member), 404)
    problem(call(api, "POST", _ws(workspace["id"], "/invitations"), member, {"email": "z@example.test"}), 404)
    assert _role_of(api, member, workspace["id"]) is None
    assert call(api, "GET", "/auth/me", member).status_code == 200  # still signed in, just not a member


def test_demoted_admin_loses_admin_rights_on_the_next_request(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "demoter@example.test", outbox)
    workspace = create_workspace(api, owner)
    admin = invite_and_join(api, outbox, owner, workspace["id"], "demoted@example.test", "admin")
    assert call(api, "GET", _ws(workspace["id"], "/api-keys"), admin).status_code == 200
    call(api, "PATCH", _ws(workspace["id"], f"/members/{admin.user_id}"), owner, {"role": "member"})
    problem(call(api, "GET", _ws(workspace["id"], "/api-keys"), admin), 403)


def test_invitations_and_email_changes_are_rate_limited(api: Client, outbox: Outbox,
                                                       env: Callable[..., None]) -> None:
    env(magic_link_limit_per_email=2, magic_link_limit_per_ip=3)
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    target = fresh_address("invitee")
    statuses = [call(api, "POST", f"/workspaces/{workspace}/invitations", owner, {"email": target}).status_code
                for _ in range(3)]
    assert statuses == [202, 202, 429]
    changes = [call(api, "POST", "/auth/email-change", owner, {"new_email": fresh_address("new")}).status_code
               for _ in range(3)]
    assert changes == [202, 202, 429]
