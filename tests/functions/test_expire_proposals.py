"""The hourly expiry of proposals: only sent ones past valid_until expire, audited, in every workspace,
once per slot."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from chalicelib.db.pool import Database
from functions import expire_proposals
from tests.conftest import TestDatabase, make_tenant

NOW = datetime(2027, 2, 1, 10, 0, tzinfo=UTC)


def proposal(db: TestDatabase, tenant: uuid.UUID, status: str, valid_until: date) -> uuid.UUID:
    with db.admin() as conn:
        row = conn.execute("SELECT id FROM leads WHERE tenant_id = %s LIMIT 1", (tenant,)).fetchone()
        if row is None:
            pipeline, stage, lead = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            conn.execute("INSERT INTO pipelines (tenant_id, id, name, is_default) VALUES (%s, %s, 'P', true)",
                         (tenant, pipeline))
            conn.execute("INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind)"
                         " VALUES (%s, %s, %s, 'New', 0, 'open')", (tenant, stage, pipeline))
            conn.execute("INSERT INTO leads (tenant_id, id, title, pipeline_id, stage_id, status)"
                         " VALUES (%s, %s, 'Deal', %s, %s, 'open')", (tenant, lead, pipeline, stage))
        else:
            lead = row[0]
        found = conn.execute("INSERT INTO proposals (tenant_id, lead_id, status, title, valid_until, currency,"
                             " subtotal_minor, tax_minor, total_minor) VALUES (%s, %s, %s, 'P', %s, 'EUR', 0, 0, 0)"
                             " RETURNING id", (tenant, lead, status, valid_until)).fetchone()
    assert found is not None
    return uuid.UUID(str(found[0]))


def statuses(db: TestDatabase) -> dict[uuid.UUID, str]:
    with db.admin() as conn:
        return {uuid.UUID(str(r[0])): r[1] for r in conn.execute("SELECT id, status FROM proposals").fetchall()}


def test_only_sent_proposals_past_their_validity_expire_in_every_workspace(fresh_db: TestDatabase,
                                                                          jobs_db: Database) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    past, today = date(2027, 1, 31), date(2027, 2, 1)
    due_a, due_b = proposal(fresh_db, a, "sent", past), proposal(fresh_db, b, "sent", past)
    kept = {proposal(fresh_db, a, "sent", today): "sent", proposal(fresh_db, a, "draft", past): "draft",
            proposal(fresh_db, a, "signed", past): "signed", proposal(fresh_db, b, "void", past): "void"}
    outcome = expire_proposals.run(jobs_db, NOW)
    assert outcome is not None and outcome.counts == {"proposals": 2} and outcome.failed == []
    assert statuses(fresh_db) == {due_a: "expired", due_b: "expired", **kept}
    with fresh_db.admin() as conn:
        audited = conn.execute("SELECT tenant_id, target_id FROM audit_log WHERE action = 'proposal.expired'"
                               " ORDER BY 1").fetchall()
    assert sorted(audited) == sorted([(a, due_a), (b, due_b)])
    with fresh_db.admin() as conn:
        history = conn.execute("SELECT tenant_id, proposal_id, from_status, to_status, actor_user_id"
                               " FROM proposal_status_history").fetchall()
    assert sorted(history) == sorted([(a, due_a, "sent", "expired", None), (b, due_b, "sent", "expired", None)])
    assert expire_proposals.run(jobs_db, NOW) is None  # the same hour's slot runs once
