"""The catalog guard passes on the migrated schema and names each broken object it is shown."""

from __future__ import annotations

import pytest

from chalicelib.db.guard import find_violations
from tests.conftest import TestDatabase

GOOD_TABLE = """
CREATE TABLE scratch.{name} (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                             email text, PRIMARY KEY (tenant_id, id));
"""

AS_SUPERUSER = "-- as superuser:\n"
BROKEN = {
    "no_rls": (GOOD_TABLE.format(name="no_rls"), "scratch.no_rls: row level security not enabled"),
    "not_forced": (GOOD_TABLE.format(name="not_forced")
                   + "ALTER TABLE scratch.not_forced ENABLE ROW LEVEL SECURITY;",
                   "scratch.not_forced: row level security not forced"),
    "no_guard": (GOOD_TABLE.format(name="no_guard")
                 + "ALTER TABLE scratch.no_guard ENABLE ROW LEVEL SECURITY;"
                 + "ALTER TABLE scratch.no_guard FORCE ROW LEVEL SECURITY;"
                 + "CREATE POLICY p ON scratch.no_guard TO crm_app USING (tenant_id = (SELECT app.current_tenant()))"
                 + " WITH CHECK (tenant_id = (SELECT app.current_tenant()));",
                 "scratch.no_guard: no RESTRICTIVE tenant guard"),
    "using_only": (GOOD_TABLE.format(name="using_only")
                   + "CALL app.secure_tenant_table('scratch.using_only');"
                   + "CREATE POLICY reader ON scratch.using_only FOR ALL TO crm_app"
                   + " USING (tenant_id = (SELECT app.current_tenant()));",
                   "scratch.using_only: policy reader lacks USING or WITH CHECK"),
    "select_true": (GOOD_TABLE.format(name="select_true")
                    + "CALL app.secure_tenant_table('scratch.select_true');"
                    + "CREATE POLICY reader ON scratch.select_true FOR SELECT TO crm_app USING (true);",
                    "scratch.select_true: policy reader is always true"),
    "widened_guard": (GOOD_TABLE.format(name="widened")
                      + "CALL app.secure_tenant_table('scratch.widened');"
                      + "ALTER POLICY tenant_guard ON scratch.widened USING (tenant_id = (SELECT app.current_tenant())"
                      + " OR email IS NOT NULL);",
                      "scratch.widened: no RESTRICTIVE tenant guard"),
    "always_true": (GOOD_TABLE.format(name="always_true")
                    + "CALL app.secure_tenant_table('scratch.always_true');"
                    + "CREATE POLICY wide ON scratch.always_true TO crm_app USING (true) WITH CHECK (true);",
                    "scratch.always_true: policy wide is always true"),
    "nullable_key": ("CREATE TABLE scratch.nullable_key (tenant_id uuid, id uuid PRIMARY KEY);"
                     "CALL app.secure_tenant_table('scratch.nullable_key');",
                     "scratch.nullable_key: tenant key column tenant_id missing or nullable"),
    "granted_global": ("CREATE TABLE scratch.granted_global (id int);"
                       "GRANT SELECT ON scratch.granted_global TO crm_app;",
                       "scratch.granted_global: row level security not enabled"),
    "unique_without_tenant": (GOOD_TABLE.format(name="uniq")
                              + "CALL app.secure_tenant_table('scratch.uniq');"
                              + "CREATE UNIQUE INDEX uniq_email ON scratch.uniq (email);",
                              "unique index scratch.uniq_email does not include tenant_id"),
    "fk_without_tenant": (GOOD_TABLE.format(name="parent") + "CALL app.secure_tenant_table('scratch.parent');"
                          + "ALTER TABLE scratch.parent ADD UNIQUE (tenant_id, id), ADD UNIQUE (id);"
                          + "CREATE TABLE scratch.child (tenant_id uuid NOT NULL, id uuid PRIMARY KEY,"
                          + " parent_id uuid REFERENCES scratch.parent (id));"
                          + "CALL app.secure_tenant_table('scratch.child');",
                          "scratch.child: foreign key child_parent_id_fkey to scratch.parent does not include"),
    "serial_id": ("CREATE TABLE scratch.serial_id (tenant_id uuid NOT NULL, id bigserial PRIMARY KEY);"
                  "CALL app.secure_tenant_table('scratch.serial_id');",
                  "scratch.serial_id: column id is a sequential id"),
    "view_definer": ("CREATE VIEW scratch.v AS SELECT id, name FROM public.workspaces;",
                     "view scratch.v lacks security_invoker"),
    "matview": ("CREATE MATERIALIZED VIEW scratch.mv AS SELECT id FROM public.workspaces;"
                "GRANT SELECT ON scratch.mv TO crm_app;",
                "materialized view scratch.mv is readable by crm_app"),
    "definer_no_path": ("CREATE FUNCTION scratch.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';",
                        "security definer function scratch.f() lacks a pinned search_path"),
    "definer_public": ("CREATE FUNCTION scratch.g() RETURNS int LANGUAGE sql SECURITY DEFINER"
                       " SET search_path = pg_catalog AS 'SELECT 1';",
                       "security definer function scratch.g() is executable by PUBLIC"),
    "app_creates": ("GRANT CREATE ON SCHEMA scratch TO crm_app;", "crm_app may CREATE in schema scratch"),
    "app_owns": ("CREATE TABLE scratch.owned (id int);" + AS_SUPERUSER + "ALTER TABLE scratch.owned OWNER TO crm_app;",
                 "role crm_app owns table scratch.owned"),
    # Account tables (migration 0020): RLS on, forced, guard pinned, no wide policy for the API role.
    "account_no_rls": ("ALTER TABLE public.sessions DISABLE ROW LEVEL SECURITY;",
                       "public.sessions: row level security not enabled"),
    "account_not_forced": ("ALTER TABLE public.users NO FORCE ROW LEVEL SECURITY;",
                           "public.users: row level security not forced"),
    "account_guard_widened": ("ALTER POLICY account_guard ON public.login_tokens USING (purpose <> 'login');",
                              "public.login_tokens: no RESTRICTIVE account guard"),
    "account_guard_dropped": ("DROP POLICY account_guard ON public.webhook_routes;",
                              "public.webhook_routes: no RESTRICTIVE account guard"),
    "account_wide_for_app": ("CREATE POLICY everyone ON public.account_audit_log FOR SELECT TO crm_app USING (true);",
                             "public.account_audit_log: policy everyone is always true"),
    "account_wide_for_other": ("CREATE POLICY reporting ON public.users FOR SELECT TO crm_jobs USING (true);",
                               "public.users: policy reporting for crm_jobs is not an allowed one"),
    "definer_table_granted": ("GRANT SELECT ON public.rate_limits TO crm_app;",
                              "public.rate_limits: crm_app has a privilege on a table only definer functions"),
    "owner_policy_on_tenant_table": ("CREATE POLICY definer_peek ON public.contacts FOR SELECT TO crm_owner"
                                     " USING (tenant_id IS NOT NULL);",
                                     "public.contacts: policy definer_peek for crm_owner is not an allowed one"),
    "app_truncates": (GOOD_TABLE.format(name="trunc") + "CALL app.secure_tenant_table('scratch.trunc');"
                      + "GRANT TRUNCATE ON scratch.trunc TO crm_app;",
                      "crm_app has TRUNCATE/REFERENCES/TRIGGER on scratch.trunc"),
}


def test_migrated_schema_passes_the_catalog_guard(fresh_db: TestDatabase) -> None:
    with fresh_db.admin() as conn:
        assert find_violations(conn) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_catalog_guard_names_a_deliberately_broken_object(fresh_db: TestDatabase, case: str) -> None:
    ddl, expected = BROKEN[case]
    with fresh_db.admin() as conn:
        conn.execute("CREATE SCHEMA scratch AUTHORIZATION crm_owner")
        as_owner, _, as_superuser = ddl.partition(AS_SUPERUSER)
        with conn.transaction():
            conn.execute("SET LOCAL ROLE crm_owner")
            conn.execute(as_owner.encode())
        if as_superuser:
            conn.execute(as_superuser.encode())
        found = find_violations(conn)
    assert any(expected in problem for problem in found), found


def test_app_role_is_no_superuser_and_rls_really_applies(fresh_db: TestDatabase) -> None:
    import psycopg

    with psycopg.connect(fresh_db.app_url) as conn:
        assert conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False, False)
        # row_security=off makes Postgres raise instead of filtering when a policy would apply:
        # the proof that the policies apply to this role.
        conn.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM workspaces LIMIT 1")
