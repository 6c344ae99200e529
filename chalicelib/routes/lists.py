"""The one shape of a workspace list route outside the CRM resources: parse, authorize, page, answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice.app import Request, Response
from pydantic import BaseModel

from chalicelib.auth.principal import parse_id, workspace_read
from chalicelib.crm import store
from chalicelib.crm.listing import parse_list
from chalicelib.http import json_response
from chalicelib.inputs import query_params


def page_response(request: Request, workspace_id: str, table: store.Table,
                  out: Callable[[store.Row], BaseModel | dict[str, Any]]) -> Response:
    """One page of `table` with the CRM lists' semantics; the authorization, the page and the commit
    travel in one round trip."""
    query = parse_list(table.listing, query_params(request), tenant=parse_id(workspace_id))
    with workspace_read(request, workspace_id) as conn:
        page = store.list_pending(conn, table, query)
    rows, cursor = page()
    return json_response({"data": [out(r) for r in rows], "next_cursor": cursor})
