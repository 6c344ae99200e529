"""CRM routes: the generic five per resource, plus the custom-field PATCH with its dry run."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import audit, errors
from chalicelib.auth.principal import parse_id, workspace_scope
from chalicelib.crm import companies, contacts, fields_api, leads, notes, products, store
from chalicelib.crm.api import Context, register
from chalicelib.crm.custom_fields import TABLE as FIELDS
from chalicelib.crm.custom_fields import DryRunReport, FieldOut, FieldPatch, definition, failures, out
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import if_match, parse_body, query_params

bp = Blueprint(__name__)

for _resource in (companies.RESOURCE, contacts.RESOURCE, leads.RESOURCE, notes.RESOURCE, fields_api.RESOURCE,
                  products.RESOURCE):
    register(bp, _resource)


@endpoint(bp, "/workspaces/{workspace_id}/custom-fields/{field_id}", "PATCH",
          summary="Change a custom field (admin); ?dry_run=true reports the records that would not fit",
          request_model=FieldPatch, response_model=FieldOut, errors_=(401, 403, 404, 409, 412), tags=("crm",),
          etag=True, also=(DryRunReport,), parameters=[
              {"name": "dry_run", "in": "query", "description": "true: change nothing, answer a DryRunReport of the "
               "records that would not fit.", "schema": {"type": "boolean", "default": False}}])
def patch_custom_field(workspace_id: str, field_id: str) -> Response:
    """A type or options change is refused while stored values would break; the dry run lists them."""
    request = bp.current_request
    body = parse_body(request, FieldPatch)
    record = parse_id(field_id)
    dry_run = _flag(query_params(request), "dry_run")
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        existing = store.require_for_update(conn, FIELDS, record)
        store.check_version(if_match(request), existing, FIELDS)
        if dry_run:
            fields_api.checked_change(existing, body)
            return json_response(DryRunReport(dry_run=True, would_fail=failures(conn, definition(existing), body)))
        ctx = Context(conn, parse_id(workspace_id), principal)
        values = fields_api.prepare_patch(ctx, existing, body)
        row = store.update(conn, FIELDS, record, values, ctx.now) if values else existing
        if values:
            audit.record(conn, tenant_id=ctx.tenant, action="custom_field.updated", actor=principal.actor,
                         target_type="custom_field", target_id=record, details={"fields": sorted(values)})
    return json_response(out(row), headers={"ETag": store.etag(row, FIELDS)})


def _flag(query: dict[str, str], name: str) -> bool:
    # Anything but true/false is refused: a dry run misread as a real change cannot be undone.
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise errors.BadRequest(f"{name} must be true or false")
    return value == "true"
