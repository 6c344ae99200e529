"""API shapes of accounts, sessions, workspaces, members, keys and audit entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib.auth.addresses import EmailAddress

MemberRole = Literal["owner", "admin", "member"]
KeyRole = Literal["admin", "member"]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused (422), never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class MagicLinkRequest(Strict):
    email: EmailAddress
    next: str | None = Field(default=None, max_length=2048)


class SessionRequest(Strict):
    token: str | None = Field(default=None, min_length=20, max_length=200)
    email: EmailAddress | None = None
    code: str | None = Field(default=None, min_length=6, max_length=16)


class TokenBody(Strict):
    token: str = Field(min_length=20, max_length=200)


class MePatch(Strict):
    display_name: str | None = Field(default=None, max_length=100)


class EmailChangeRequest(Strict):
    new_email: EmailAddress


class WorkspaceCreate(Strict):
    name: str = Field(min_length=1, max_length=200)


class WorkspacePatch(Strict):
    """A new name, and/or whether Atlas may draft proposals from the workspace's data (off by default)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    atlas_enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> WorkspacePatch:
        if self.name is None and self.atlas_enabled is None:
            raise ValueError("send name or atlas_enabled")
        return self


class MemberPatch(Strict):
    role: MemberRole


class InvitationCreate(Strict):
    email: EmailAddress
    role: MemberRole = "member"


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    role: KeyRole = "member"
    expires_at: datetime | None = None


class Accepted(BaseModel):
    status: Literal["sent"]


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str | None
    created_at: datetime


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    role: MemberRole | None = None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    purge_after: datetime | None = None
    atlas_enabled: bool = False


class WorkspaceList(BaseModel):
    data: list[WorkspaceOut]


class Me(BaseModel):
    user: UserOut
    workspaces: list[WorkspaceOut]
    csrf_token: str | None = None
    next: str | None = None


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class SessionList(BaseModel):
    data: list[SessionOut]


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    display_name: str | None
    role: MemberRole
    created_at: datetime


class MemberList(BaseModel):
    data: list[MemberOut]


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    role: KeyRole
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; shown once, never again")


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]


class AuditEntry(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    action: str
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    target_type: str | None
    target_id: uuid.UUID | None
    ip: str | None
    user_agent: str | None
    details: dict[str, object]


class AuditPage(BaseModel):
    data: list[AuditEntry]
    next_cursor: str | None


class ExportedAccount(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str | None
    created_at: datetime
    updated_at: datetime


class ExportedMembership(BaseModel):
    workspace_id: uuid.UUID
    workspace_name: str
    role: MemberRole
    since: datetime
    workspace_deleted_at: datetime | None


class ExportedSession(BaseModel):
    """A session as its owner may see it: never its token hash, cookie value or CSRF token."""

    id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    ip: str | None
    user_agent: str | None
    current: bool


class ExportedAccountEvent(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    action: str
    ip: str | None
    user_agent: str | None
    details: dict[str, object]


class AccountExport(BaseModel):
    format: Literal["crm-account-export/1"] = "crm-account-export/1"
    exported_at: datetime
    account: ExportedAccount
    memberships: list[ExportedMembership]
    sessions: list[ExportedSession]
    account_audit_log: list[ExportedAccountEvent]
