"""Per-workspace integration credentials: set (owner/admin), list masked, delete. Never returned in clear."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response
from pydantic import BaseModel, RootModel

from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import parse_body
from chalicelib.vault import store
from chalicelib.vault.providers import model_for

bp = Blueprint(__name__)
ONE = "/workspaces/{workspace_id}/integrations/{provider}"
TAGS = ("integrations",)


class CredentialsBody(RootModel[dict[str, Any]]):
    """The provider's fields: twilio {account_sid, auth_token}; stripe {secret_key, webhook_secret?};
    signnow {api_token, sender_email}; whatsapp {phone_number_id, access_token, app_secret, verify_token}."""


class IntegrationList(BaseModel):
    """Every provider: configured or not, masked hints, last change."""

    data: list[store.CredentialSummary]


@endpoint(bp, ONE, "PUT", summary="Set a provider's credentials (owner/admin); answers masked hints only",
          request_model=CredentialsBody, response_model=store.CredentialSummary, errors_=(401, 403, 404),
          tags=TAGS)
def put_integration(workspace_id: str, provider: str) -> Response:
    """Validated per provider, envelope-encrypted, stored; the secret never comes back."""
    request = bp.current_request
    model_for(provider)  # an unknown provider is a 404 before anything is parsed
    body = parse_body(request, CredentialsBody)
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        summary = store.put_credentials(conn, tenant_id=tenant, provider=provider, data=body.root,
                                        actor=principal.actor)
    return json_response(summary)


@endpoint(bp, "/workspaces/{workspace_id}/integrations", "GET", summary="Providers with configured flag and hints",
          response_model=IntegrationList, errors_=(401, 404), tags=TAGS)
def list_integrations(workspace_id: str) -> Response:
    """Masked hints only."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        summaries = store.list_credentials_pending(conn, tenant_id=parse_id(workspace_id))
    return json_response(IntegrationList(data=summaries()))


@endpoint(bp, ONE, "DELETE", summary="Delete a provider's credentials (owner/admin)", status=204,
          errors_=(401, 403, 404), tags=TAGS)
def delete_integration(workspace_id: str, provider: str) -> Response:
    """Removes the row and the cached copy."""
    request = bp.current_request
    model_for(provider)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        store.delete_credentials(conn, tenant_id=parse_id(workspace_id), provider=provider, actor=principal.actor)
    return Response(body="", status_code=204)
