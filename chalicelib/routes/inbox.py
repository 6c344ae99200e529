"""Inbox API: channels (owner/admin), conversations and their messages."""

from __future__ import annotations

from chalice.app import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib import audit, clock
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.blobs import get_blobs
from chalicelib.crm import store
from chalicelib.crm.api import Page
from chalicelib.crm.common import patch_values
from chalicelib.crm.listing import list_parameters
from chalicelib.errors import NotFound
from chalicelib.http import endpoint, json_response
from chalicelib.inbox import attachments, channels, conversations, replies
from chalicelib.inputs import if_match, parse_body
from chalicelib.routes.lists import page_response
from chalicelib.settings import get_settings

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"
TAGS = ("inbox",)


class ChannelList(Page[channels.ChannelOut]):
    """Channels of the workspace."""


@endpoint(bp, WS + "/channels", "POST", summary="Connect a WhatsApp number or an inbound email route (owner/admin)",
          request_model=channels.ChannelIn, response_model=channels.ChannelOut, status=201,
          errors_=(401, 403, 404, 409), tags=TAGS)
def create_channel(workspace_id: str) -> Response:
    """Secrets go to the vault; the answer has the webhook URL and masked hints only."""
    request = bp.current_request
    body = parse_body(request, channels.ChannelIn)
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        created = channels.create(conn, tenant_id=tenant, spec=body.root, actor=principal.actor,
                                  base_url=get_settings().public_base_url)
    return json_response(created, 201, headers={"Location": f"/workspaces/{tenant}/channels/{created.id}"})


@endpoint(bp, WS + "/channels", "GET", summary="Channels of the workspace (owner/admin)", response_model=ChannelList,
          errors_=(401, 403, 404), tags=TAGS)
def list_channels(workspace_id: str) -> Response:
    """With webhook URLs and masked hints."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = channels.list_channels_pending(conn, base_url=get_settings().public_base_url)
    return json_response(ChannelList(data=found(), next_cursor=None))


@endpoint(bp, WS + "/channels/{channel_id}", "GET", summary="A channel (owner/admin)",
          response_model=channels.ChannelOut, errors_=(401, 403, 404), tags=TAGS, etag=True)
def get_channel(workspace_id: str, channel_id: str) -> Response:
    """With its webhook URL and masked hints; the ETag is what a PATCH's If-Match names."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = channels.get_pending(conn, parse_id(channel_id), base_url=get_settings().public_base_url)
    result = found()
    if result is None:
        raise NotFound("no such channel")
    return json_response(result[0], headers={"ETag": result[1]})


@endpoint(bp, WS + "/channels/{channel_id}", "PATCH", summary="Rename a channel, change its settings or replace its "
          "secrets (owner/admin)",
          description="WhatsApp: `name`, `display_phone_number`, `access_token`, `app_secret`, `verify_token`. "
                      "Email: `name`, `address`, `signing_key`. `type` and `phone_number_id` are what the channel is "
                      "(connect another channel instead). A secret is replaced, never read back: the answer shows "
                      "its masked hint. Honours If-Match; audited \"channel.updated\" with the field names.",
          request_model=channels.ChannelPatch, response_model=channels.ChannelOut,
          errors_=(400, 401, 403, 404, 412, 422), tags=TAGS, etag=True)
def patch_channel(workspace_id: str, channel_id: str) -> Response:
    """Replaced secrets take effect at the next delivery or reply."""
    request = bp.current_request
    body = parse_body(request, channels.ChannelPatch)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        changed, tag = channels.patch(conn, tenant_id=parse_id(workspace_id), channel_id=parse_id(channel_id),
                                      spec=body, expected=if_match(request), actor=principal.actor,
                                      base_url=get_settings().public_base_url)
    return json_response(changed, headers={"ETag": tag})


@endpoint(bp, WS + "/channels/{channel_id}", "DELETE", summary="Disconnect a channel (owner/admin)", status=204,
          errors_=(401, 403, 404), tags=TAGS)
def delete_channel(workspace_id: str, channel_id: str) -> Response:
    """Its webhook URL stops working at once."""
    with workspace_scope(bp.current_request, workspace_id, min_role="admin") as (conn, principal):
        channels.delete(conn, tenant_id=parse_id(workspace_id), channel_id=parse_id(channel_id), actor=principal.actor)
    return Response(body="", status_code=204)


@endpoint(bp, WS + "/conversations", "GET", summary="Conversations, most recent first",
          response_model=Page[conversations.ConversationOut], errors_=(400, 401, 404), tags=TAGS,
          parameters=list_parameters(conversations.TABLE.listing))
def list_conversations(workspace_id: str) -> Response:
    """Filters channel_id, status, contact_id; paged like the CRM lists."""
    return page_response(bp.current_request, workspace_id, conversations.TABLE, conversations.out)


@endpoint(bp, WS + "/conversations/{conversation_id}", "GET", summary="A conversation",
          response_model=conversations.ConversationOut, errors_=(401, 404), tags=TAGS)
def get_conversation(workspace_id: str, conversation_id: str) -> Response:
    """With ETag."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = store.get_pending(conn, conversations.TABLE, parse_id(conversation_id))
    row = store.found(found())
    return json_response(conversations.out(row), headers={"ETag": store.etag(row, conversations.TABLE)})


@endpoint(bp, WS + "/conversations/{conversation_id}", "PATCH", summary="Close, reopen or assign a conversation",
          request_model=conversations.ConversationPatch, response_model=conversations.ConversationOut,
          errors_=(401, 404, 412, 422), tags=TAGS)
def patch_conversation(workspace_id: str, conversation_id: str) -> Response:
    """Honours If-Match; the assignee must be a member."""
    request = bp.current_request
    body = parse_body(request, conversations.ConversationPatch)
    record = parse_id(conversation_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        existing = store.require(conn, conversations.TABLE, record)
        store.check_version(if_match(request), existing, conversations.TABLE)
        values = patch_values(body, required=("status",))
        row = store.update(conn, conversations.TABLE, record, values, clock.now()) if values else existing
        audit.record(conn, tenant_id=parse_id(workspace_id), action="conversation.updated", actor=principal.actor,
                     target_type="conversation", target_id=record, details={"fields": sorted(values)})
    return json_response(conversations.out(row), headers={"ETag": store.etag(row, conversations.TABLE)})


@endpoint(bp, WS + "/conversations/{conversation_id}/messages", "GET", summary="Messages of a conversation in order",
          response_model=conversations.MessageList, errors_=(401, 404), tags=TAGS)
def list_messages(workspace_id: str, conversation_id: str) -> Response:
    """Direction, body, time, status and attachment metadata."""
    record = parse_id(conversation_id)
    with workspace_read(bp.current_request, workspace_id) as conn:
        conversation = store.get_pending(conn, conversations.TABLE, record)
        result = conversations.messages_pending(conn, record)
    store.found(conversation())
    return json_response(result())


@endpoint(bp, WS + "/attachments/{attachment_id}", "GET",
          summary="A short-lived download link to an attachment or a call recording (members of its workspace)",
          description="200 with the file's `sha256`, `size`, `content_type` and `filename`, and a `url` that fetches "
                      "it without other credentials until `expires_at` (DOWNLOAD_URL_TTL_S): an S3 presigned GET in "
                      "production, a signed `GET /downloads` link locally. The file always comes as a download.",
          response_model=attachments.DownloadOut, errors_=(401, 404), tags=TAGS)
def download_attachment(workspace_id: str, attachment_id: str) -> Response:
    """A link, not the bytes: a file may exceed what a Lambda response carries (6 MB)."""
    tenant = parse_id(workspace_id)
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = attachments.stored_pending(conn, attachment_id=parse_id(attachment_id))
    # Read only after the block, once the caller's authorization has arrived: a refused caller gets no link.
    stored = found()
    if stored is None:
        raise NotFound("no such attachment")
    return json_response(attachments.download(get_blobs(), tenant_id=tenant, stored=stored))


class ReplyIn(BaseModel):
    """A reply's text."""

    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=4096)


@endpoint(bp, WS + "/conversations/{conversation_id}/messages", "POST",
          summary="Reply (WhatsApp via the Graph API, email via SES); failures are recorded on the message",
          request_model=ReplyIn, response_model=conversations.MessageOut, status=201, errors_=(401, 403, 404),
          tags=TAGS)
def reply(workspace_id: str, conversation_id: str) -> Response:
    """201 with the message and its status (sent, or failed with the reason)."""
    request = bp.current_request
    body = parse_body(request, ReplyIn)
    tenant, record = parse_id(workspace_id), parse_id(conversation_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        store.require(conn, conversations.TABLE, record)
    pending = replies.record(tenant, record, body.body, principal.user_id)
    replies.send(tenant, pending, body.body)
    with workspace_scope(request, workspace_id) as (conn, _principal):
        sent = next(m for m in conversations.messages(conn, record).data if m.id == pending.message_id)
    return json_response(sent, 201)
