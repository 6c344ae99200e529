"""The `accounts` section of a workspace's access export: what the account tables hold about the workspace.

Its members' accounts (email, display name), its invitations (the invitee emails in login_tokens), the
account audit entries of its members that name it, and its webhook routes. These tables have no tenant_id,
so RLS does not scope them: each named query is scoped to the workspace by its own WHERE clause and reads
through the jobs role inside the export's tenant transaction (memberships, which decide who is a member,
are read under RLS there too).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import IO, Any

from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)


@dataclass(frozen=True)
class Section:
    """One list of the accounts section: the table it comes from, its query, the columns it withholds."""

    name: str
    source: str
    query: str
    withheld: dict[str, str]


# Each query names its columns one by one (never `*`): a column added to an account table stays out of the
# export until someone decides it belongs there, and the export tests name it until then. Tokens, codes and
# session secrets are stored only as HMACs; even those digests are withheld (`key-material`), and sessions
# (the members' own controller data) are not part of a workspace's export at all.
SECTIONS = (
    Section("members", "users", Q["accounts_members"], {}),
    Section("invitations", "login_tokens", Q["accounts_invitations"],
            {"token_hash": "key-material", "code_hash": "key-material"}),
    Section("account_audit_log", "account_audit_log", Q["accounts_audit_entries"], {"subject_hash": "key-material"}),
    Section("webhook_routes", "webhook_routes", Q["accounts_webhook_routes"], {}),
)


def write_accounts(conn: Conn, tenant_id: uuid.UUID, out: IO[bytes]) -> dict[str, dict[str, Any]]:
    """Write the sections as `"name": [rows]` pairs (comma-separated); returns their manifest entries."""
    entries: dict[str, dict[str, Any]] = {}
    for index, section in enumerate(SECTIONS):
        rows = [str(r[0]).encode() for r in conn.execute(section.query, {"tenant": tenant_id}).fetchall()]
        body = b",".join(rows)  # digested as the tables are: the rows' JSON text joined by commas
        out.write((b", " if index else b"") + json.dumps(section.name).encode() + b": [" + body + b"]")
        entries[section.name] = {"source": section.source, "rows": len(rows),
                                 "sha256": hashlib.sha256(body).hexdigest()}
        if section.withheld:
            entries[section.name]["excluded_columns"] = dict(sorted(section.withheld.items()))
    return entries
