"""`q` under row-level security is served by the search_terms btree (migration 0015), and the words of
one workspace never answer another's search."""

from __future__ import annotations

import re
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.crm import leads, store
from chalicelib.crm.listing import parse_list, search_words
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from tests.conftest import TestDatabase, make_tenant


def _plan(db: Database, tenant: uuid.UUID, q: str) -> str:
    statement, params = store.list_statement(leads.TABLE, parse_list(leads.TABLE.listing, {"q": q}, tenant=tenant))
    with tenant_tx(tenant, db=db) as conn:
        # Whether the index *can* serve the prefix under RLS (the planner may prefer a scan of a tiny table).
        conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.execute(b"EXPLAIN " + statement.as_string().encode(), params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def test_a_search_word_is_a_range_of_the_search_terms_index_under_rls(fresh_db: TestDatabase,
                                                                       app_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    with fresh_db.admin() as admin:
        # Many words, few of them starting with "zeph": the index range is what a planner should choose.
        admin.execute("INSERT INTO search_terms (tenant_id, object, term, record_id)"
                      " SELECT %s, 'lead', md5(g::text), gen_random_uuid() FROM generate_series(1, 5000) g", (tenant,))
        admin.execute("ANALYZE search_terms")
    plan = _plan(app_db, tenant, "Zeph")
    assert "search_terms_pkey" in plan, plan
    # The prefix became index bounds: ^@ is leakproof, so it is not held back behind the policies.
    assert "(term >= 'zeph'::text) AND (term < 'zepi'::text)" in plan, plan
    # The tenant is an index condition too: the policies' InitPlan value (evaluated once per statement).
    assert re.search(r"Index Cond: \(\(tenant_id = \(InitPlan \d\)\.col1\) AND \(object = 'lead'", plan), plan


def test_one_workspaces_words_never_answer_anothers_search(fresh_db: TestDatabase, app_db: Database) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    with fresh_db.admin() as admin:
        for tenant in (a, b):
            pipeline = admin.execute("INSERT INTO pipelines (tenant_id, name) VALUES (%s, 'P') RETURNING id",
                                     (tenant,)).fetchone()
            assert pipeline is not None
            stage = admin.execute("INSERT INTO stages (tenant_id, pipeline_id, name, position, kind)"
                                  " VALUES (%s, %s, 'S', 0, 'open') RETURNING id", (tenant, pipeline[0])).fetchone()
            assert stage is not None
            admin.execute("INSERT INTO leads (tenant_id, title, pipeline_id, stage_id, status)"
                          " VALUES (%s, %s, %s, %s, 'open')", (tenant, f"Zephyr {tenant}", pipeline[0], stage[0]))
        both = admin.execute("SELECT count(DISTINCT tenant_id) FROM search_terms WHERE term = 'zephyr'").fetchone()
        assert both == (2,)
    for tenant in (a, b):
        statement, params = store.list_statement(leads.TABLE, parse_list(leads.TABLE.listing, {"q": "zeph"},
                                                                         tenant=tenant))
        with tenant_tx(tenant, db=app_db) as conn:
            rows = conn.execute(statement, params).fetchall()
        assert [r[leads.TABLE.index("title")] for r in rows] == [f"Zephyr {tenant}"]


def test_a_workspace_deleted_by_cascade_leaves_no_words(fresh_db: TestDatabase) -> None:
    # search_terms has no foreign key (a check per word cost too much): the records' delete triggers,
    # which cascades fire too, take the words with them.
    tenant = make_tenant(fresh_db)
    with fresh_db.admin() as admin:
        admin.execute("INSERT INTO companies (tenant_id, name, domain) VALUES (%s, 'Zephyr Works', 'zephyr.example')",
                      (tenant,))
        words = admin.execute("SELECT count(*) FROM search_terms WHERE tenant_id = %s", (tenant,)).fetchone()
        assert words == (3,)  # zephyr, works, example
        admin.execute("DELETE FROM workspaces WHERE id = %s", (tenant,))
        assert admin.execute("SELECT count(*) FROM search_terms WHERE tenant_id = %s", (tenant,)).fetchone() == (0,)


SEPARATORS = (" \t\n.,;:@/-_'\"!?()[]{}#%&*+<=>|~`^$\\"
              "\u00a0\u00ab\u00bb\u2002\u200b\u2011\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u3000\u3001")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list(SEPARATORS) + list("aZéÜßçøИжΣσς中文٣0")), max_size=60)
       | st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40))
def test_the_query_and_the_stored_words_are_split_alike(fresh_db: TestDatabase, text: str) -> None:
    # The stored side: app.search_words(lower(search)). The query side: Python's split, then SQL's
    # left(lower(word), 100). They must give the same words, or a record would not be found by its own.
    with fresh_db.admin() as admin:
        stored = admin.execute("SELECT app.search_words(lower(%s))", (text,)).fetchone()
        queried = admin.execute("SELECT array(SELECT DISTINCT left(lower(w), 100) FROM unnest(%s::text[]) w)",
                                (search_words(text),)).fetchone()
    assert stored is not None and queried is not None
    assert sorted(stored[0]) == sorted(queried[0])
