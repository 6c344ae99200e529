"""The five routes every CRM resource has (list, create, read, update, delete), registered from a spec.

Routes stay thin: authenticate and scope (workspace_tx, workspace_read), parse, call the hooks, answer.
Reads carry ETag; PATCH/DELETE honour If-Match; POST honours Idempotency-Key; every write is audited
(ids only, never contents) and emits its outgoing-webhook event (`emit`) in the same round trip as the
write itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel

from chalicelib import audit, clock
from chalicelib.auth.principal import Principal, Role, parse_id, workspace_read, workspace_tx
from chalicelib.crm import custom_fields, store
from chalicelib.crm.listing import list_parameters, parse_list
from chalicelib.db.types import Conn
from chalicelib.http import endpoint, idempotent, json_response
from chalicelib.inputs import if_match, parse_body, query_params
from chalicelib.outgoing import events

T = TypeVar("T", bound=BaseModel)
Values = dict[str, Any]


class Page(BaseModel, Generic[T]):
    """One page of a list: `data` and the opaque cursor of the next page (null at the end)."""

    data: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Context:
    """What a hook gets: the tenant transaction, the workspace, the caller, the time."""

    conn: Conn
    tenant: uuid.UUID
    # The caller, or (workspace_tx) the function that reads it when first needed: hooks queue their reads
    # before they need the caller, so those share the authorization's round trip.
    caller: Principal | Callable[[], Principal]

    @property
    def principal(self) -> Principal:
        """The authenticated caller."""
        return self.caller if isinstance(self.caller, Principal) else self.caller()

    @property
    def now(self) -> Any:
        """The request's clock."""
        return clock.now()


@dataclass(frozen=True)
class Resource:
    """A CRM resource: its table, API models and the hooks that turn requests into column values."""

    path: str  # e.g. "/companies"
    singular: str  # e.g. "company" (audit actions, operation names)
    id_param: str  # e.g. "company_id"
    table: store.Table
    # Row to the API shape of out_model, as plain values (UUIDs, datetimes, dicts): pydantic-core
    # serializes them as it would the model, without building model instances (list pages are hot).
    out: Callable[[store.Row], dict[str, Any]]
    out_model: type[BaseModel]
    create_model: type[BaseModel]
    patch_model: type[BaseModel]
    prepare_create: Callable[[Context, Any], Values]
    prepare_patch: Callable[[Context, store.Row, Any], Values]
    after_write: Callable[[Context, uuid.UUID, Values, store.Row | None], None] | None = None
    before_delete: Callable[[Context, store.Row], None] | None = None
    write_role: Role = "member"
    tags: tuple[str, ...] = ("crm",)
    skip: frozenset[str] = frozenset()  # methods on the item path registered by hand (e.g. {"PATCH"})


CUSTOM_FILTERS = ("Besides the parameters below, `custom.<key>=<option>` filters by a select or multi_select "
                  "custom field of this object (a multi_select matches when the option is among its values).")


def _query_params(request: Request) -> dict[str, str]:
    return query_params(request)


def _with_etag(resource: Resource, row: store.Row, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    return json_response(resource.out(row), status, headers={"ETag": store.etag(row, resource.table), **(extra or {})})


def register(bp: Blueprint, resource: Resource) -> None:
    """Register list/create/read/update/delete routes of `resource` on `bp`."""
    base = "/workspaces/{workspace_id}" + resource.path
    item = base + "/{" + resource.id_param + "}"
    name = resource.table.name
    page_model = Page[resource.out_model]  # type: ignore[name-defined]

    def list_view(workspace_id: str) -> Response:
        request = bp.current_request
        tenant = parse_id(workspace_id)
        params = _query_params(request)
        query = parse_list(resource.table.listing, params, tenant=tenant)
        custom = any(name.startswith("custom.") for name in params)
        with workspace_read(request, workspace_id) as conn:
            page = store.list_pending(conn, resource.table, query)
            fields = custom_fields.definitions_pending(conn, resource.singular) if custom else None
        # Read after the block: the authorization, the page and the commit travelled in one round trip.
        if fields is not None:
            custom_fields.check_filters(params, fields())
        rows, cursor = page()
        return json_response({"data": [resource.out(r) for r in rows], "next_cursor": cursor})

    def create_view(workspace_id: str) -> Response:
        request = bp.current_request
        body = parse_body(request, resource.create_model)
        tenant = parse_id(workspace_id)
        # Errors of the queued writes may surface only when the transaction ends (see _create).
        with store.db_errors(resource.table):
            with workspace_tx(request, workspace_id, min_role=resource.write_role) as (conn, caller):
                ctx = Context(conn, tenant, caller)
                if request.headers.get("idempotency-key") is not None:
                    # The stored response needs the row before the transaction ends: one more round trip.
                    return idempotent(conn, request, tenant_id=tenant, route=f"POST {resource.path}",
                                      produce=lambda: _create(ctx, resource, body, workspace_id)())
                respond = _create(ctx, resource, body, workspace_id)
            return respond()

    def read_view(workspace_id: str, **ids: str) -> Response:
        record = parse_id(ids[resource.id_param])
        with workspace_read(bp.current_request, workspace_id) as conn:
            found = store.get_pending(conn, resource.table, record)
        return _with_etag(resource, store.found(found()))

    def patch_view(workspace_id: str, **ids: str) -> Response:
        request = bp.current_request
        body = parse_body(request, resource.patch_model)
        record = parse_id(ids[resource.id_param])
        with workspace_tx(request, workspace_id, min_role=resource.write_role) as (conn, caller):
            ctx = Context(conn, parse_id(workspace_id), caller)
            existing = store.require_for_update(conn, resource.table, record)
            store.check_version(if_match(request), existing, resource.table)
            values = resource.prepare_patch(ctx, existing, body)
            row = store.update(conn, resource.table, record, values, ctx.now) if values else existing
            if values:
                _after(ctx, resource, record, values, existing, "updated")
        return _with_etag(resource, row)

    def delete_view(workspace_id: str, **ids: str) -> Response:
        request = bp.current_request
        record = parse_id(ids[resource.id_param])
        with workspace_tx(request, workspace_id, min_role=resource.write_role) as (conn, caller):
            ctx = Context(conn, parse_id(workspace_id), caller)
            existing = store.require_for_update(conn, resource.table, record)
            store.check_version(if_match(request), existing, resource.table)
            if resource.before_delete is not None:
                resource.before_delete(ctx, existing)
            store.delete(conn, resource.table, record)
            emit(ctx, resource, "deleted", [record])
            audit.record(conn, tenant_id=ctx.tenant, action=f"{resource.singular}.deleted", actor=ctx.principal.actor,
                         target_type=resource.singular, target_id=record)
        return Response(body="", status_code=204)

    spec = resource.table.listing
    views: list[tuple[str, str, Callable[..., Response], dict[str, Any]]] = [
        (base, "GET", list_view, {"summary": f"List {name}", "response_model": page_model, "errors_": (400, 401, 404),
                                  "parameters": list_parameters(spec),
                                  "description": CUSTOM_FILTERS if spec.custom_select_filters else None}),
        (base, "POST", create_view, {"summary": f"Create a {resource.singular}", "request_model": resource.create_model,
                                     "response_model": resource.out_model, "status": 201,
                                     "errors_": (401, 403, 404, 409), "idempotent": True, "etag": True}),
        (item, "GET", read_view, {"summary": f"Read a {resource.singular}", "response_model": resource.out_model,
                                  "errors_": (401, 404), "etag": True}),
        (item, "PATCH", patch_view, {"summary": f"Update a {resource.singular}", "request_model": resource.patch_model,
                                     "response_model": resource.out_model, "errors_": (401, 403, 404, 409, 412),
                                     "etag": True}),
        (item, "DELETE", delete_view, {"summary": f"Delete a {resource.singular}", "status": 204,
                                       "errors_": (401, 403, 404, 409, 412)}),
    ]
    for path, method, view, doc in views:
        if path == item and method in resource.skip:
            continue
        view.__name__ = f"{method.lower()}_{name}_{'item' if path == item else 'collection'}"
        endpoint(bp, path, method, tags=resource.tags, **doc)(view)


def _create(ctx: Context, resource: Resource, body: Any, workspace_id: str) -> Callable[[], Response]:
    """Validate and queue the writes; the result builds the 201 once the row has arrived.

    Queued, not awaited: the row, its follow-ups, the audit entry and (when the caller calls the result
    after the transaction block) the Sync that commits travel in one round trip. In pipeline mode the
    INSERT's error (a duplicate, a missing reference) may surface on any later statement of the batch or
    at the commit, so callers map database errors around the whole transaction too.
    """
    values = resource.prepare_create(ctx, body)
    record = values.setdefault("id", uuid.uuid4())
    values["tenant_id"] = ctx.tenant
    with store.db_errors(resource.table):
        pending = store.insert_pending(ctx.conn, resource.table, values)
        _after(ctx, resource, record, values, None, "created")
    location = f"/workspaces/{workspace_id}{resource.path}/{record}"

    def respond() -> Response:
        with store.db_errors(resource.table):
            row = pending()
        return _with_etag(resource, row, 201, {"Location": location})

    return respond


def emit(ctx: Context, resource: Resource, verb: str, record_ids: Sequence[uuid.UUID]) -> None:
    """Queue the webhook event "<singular>.<verb>" of records just written, in the write's own transaction.

    Queue it after the statements that write the rows: each event carries its row as it then stands (a
    deleted record's event carries its id). Queued, not awaited: no round trip of its own, and a write that
    fails or rolls back takes its event with it. A type outside the catalogue (a custom field's events, a
    note's update or deletion) is no event at all.
    """
    event_type = f"{resource.singular}.{verb}"
    if event_type not in events.EVENT_TYPES or not record_ids:
        return
    if verb == "deleted":
        for record in record_ids:
            events.emit_deleted(ctx.conn, tenant_id=ctx.tenant, event_type=event_type, record_id=record)
    elif len(record_ids) == 1:
        events.emit_row(ctx.conn, tenant_id=ctx.tenant, event_type=event_type, table=resource.table.name,
                        record_id=record_ids[0])
    else:
        # Many rows (a CSV import, a stage's leads): one statement.
        events.emit_rows(ctx.conn, tenant_id=ctx.tenant, event_type=event_type, table=resource.table.name,
                         record_ids=list(record_ids))


def _after(ctx: Context, resource: Resource, record: uuid.UUID, values: Values, existing: store.Row | None,
           verb: str) -> None:
    # The resource's own event first (its row is written), then the hook's follow-ups (a lead's stage events).
    emit(ctx, resource, verb, [record])
    if resource.after_write is not None:
        resource.after_write(ctx, record, values, existing)
    changed = sorted(k for k in values if k not in ("id", "tenant_id"))
    audit.record(ctx.conn, tenant_id=ctx.tenant, action=f"{resource.singular}.{verb}", actor=ctx.principal.actor,
                 target_type=resource.singular, target_id=record, details={"fields": changed})
