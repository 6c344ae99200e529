"""The scheduled expiry of proposals: a sent proposal whose `valid_until` has passed becomes `expired`
(a signed one is past needing it; a draft was never offered). Audited per proposal."""

from __future__ import annotations

import uuid
from datetime import datetime

from chalicelib import audit
from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.common import Outcome, each_workspace, live_workspaces, log_finished

Q = queries.load(__package__)
JOB = "expire_proposals"


def expire(db: Database, now: datetime) -> Outcome:
    """Expire every workspace's sent proposals valid until before `now`'s date (UTC), workspace by workspace."""

    def work(tenant: uuid.UUID) -> dict[str, int]:
        with tenant_tx(tenant, db=db) as conn:
            expired = [row[0] for row in conn.execute(Q["proposals_expire"],
                                                      {"now": now, "today": now.date()}).fetchall()]
            for proposal in expired:
                audit.record(conn, tenant_id=tenant, action="proposal.expired", actor=audit.SYSTEM,
                             target_type="proposal", target_id=proposal, details={"from": "sent"})
        return {"proposals": len(expired)}

    outcome = each_workspace(JOB, live_workspaces(db), work)
    log_finished(JOB, outcome)
    return outcome
