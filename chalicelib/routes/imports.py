"""CSV import: POST /workspaces/{workspace_id}/imports/{object} with a text/csv body (member role)."""

from __future__ import annotations

from chalice.app import Blueprint, Request, Response

from chalicelib import errors
from chalicelib.auth.principal import parse_id, workspace_scope
from chalicelib.crm import importer
from chalicelib.crm.api import Context
from chalicelib.crm.importer import ImportResult
from chalicelib.http import endpoint, idempotent, json_response
from chalicelib.inputs import raw_body

bp = Blueprint(__name__)
CSV = "text/csv"


def csv_body(request: Request) -> bytes:
    """The raw body of a `text/csv` (UTF-8) request; any other type is a 415."""
    # The charset must be UTF-8 (or unsaid, or ASCII, which is UTF-8): the bytes are decoded as UTF-8.
    media, *params = (request.headers.get("content-type") or "").lower().split(";")
    charset = next((p.split("=", 1)[1].strip().strip('"') for p in params if p.strip().startswith("charset=")),
                   "utf-8")
    if media.strip() != CSV or charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise errors.UnsupportedMediaType("send the file as text/csv in UTF-8")
    return raw_body(request)


# Registered for any content type (the default of a route without a JSON model) and checked by the view
# after authentication: Chalice's own 415 would come before it, so an outsider would learn something
# about a workspace route before the 404 every workspace route gives a non-member.
@endpoint(bp, "/workspaces/{workspace_id}/imports/{object}", "POST",
          summary="Import contacts, companies or leads from a text/csv body (UTF-8, header row, at most "
                  "10,000 rows)",
          response_model=ImportResult, errors_=(400, 401, 403, 404, 409, 413, 415, 422), tags=("crm",),
          body_media=(CSV,), idempotent=True, parameters=[
              {"name": "object", "in": "path", "required": True,
               "schema": {"type": "string", "enum": sorted(importer.OBJECTS)}}])
def import_csv(workspace_id: str, **params: str) -> Response:
    """200 with the counts and the refused rows; Idempotency-Key replays the first answer."""
    request = bp.current_request
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        object_name = params["object"]
        if object_name not in importer.OBJECTS:
            raise errors.NotFound("not found")
        raw = csv_body(request)
        sheet = importer.parse_csv(raw)
        ctx = Context(conn, tenant, principal)
        return idempotent(conn, request, tenant_id=tenant, route=f"POST /imports/{object_name}",
                          produce=lambda: json_response(importer.run(ctx, object_name=object_name, sheet=sheet)))
