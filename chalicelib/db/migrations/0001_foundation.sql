-- Foundation: the tenancy helper, the RLS template and the first tenant table.
-- Runs as crm_owner (the migrator does SET LOCAL ROLE crm_owner), so crm_owner owns every object.

CREATE SCHEMA app;
-- Nobody but the owner creates objects anywhere: the runtime roles are DML-only.
REVOKE ALL ON SCHEMA app FROM PUBLIC;
GRANT USAGE ON SCHEMA app TO crm_app, crm_jobs;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The tenant of the current transaction. NULLIF turns the '' that a finished transaction-local
-- set_config leaves behind into NULL, and `tenant_id = NULL` matches nothing: no tenant set means
-- no rows, never all rows. No SET clause (names are schema-qualified instead) so the planner can
-- inline it and use (tenant_id, ...) indexes.
CREATE FUNCTION app.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid $$;
REVOKE ALL ON FUNCTION app.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.current_tenant() TO crm_app, crm_jobs;

-- The RLS template of DESIGN section 3, in one place so a migration cannot get it half right:
-- ENABLE + FORCE, a permissive policy and a RESTRICTIVE guard (so a future permissive policy cannot
-- widen access), both with USING and WITH CHECK, for the runtime roles. Grants DML to crm_app.
-- Called only by migrations (as the owner); not executable by anyone else.
CREATE PROCEDURE app.secure_tenant_table(tbl regclass, key_column name DEFAULT 'tenant_id',
                                         app_privileges text DEFAULT 'SELECT, INSERT, UPDATE, DELETE')
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
DECLARE
    cond text := format('%I = app.current_tenant()', key_column);
BEGIN
    IF app_privileges !~ '^(SELECT|INSERT|UPDATE|DELETE)(, (SELECT|INSERT|UPDATE|DELETE))*$' THEN
        RAISE EXCEPTION 'bad privilege list %', app_privileges;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s AS PERMISSIVE FOR ALL TO crm_app, crm_jobs '
                   'USING (%s) WITH CHECK (%s)', tbl, cond, cond);
    EXECUTE format('CREATE POLICY tenant_guard ON %s AS RESTRICTIVE FOR ALL TO crm_app, crm_jobs '
                   'USING (%s) WITH CHECK (%s)', tbl, cond, cond);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', tbl);
    EXECUTE format('GRANT %s ON %s TO crm_app', app_privileges, tbl);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO crm_jobs', tbl);
END
$$;
REVOKE ALL ON PROCEDURE app.secure_tenant_table(regclass, name, text) FROM PUBLIC;

-- A workspace is a tenant: its own id is its tenant key.
CREATE TABLE public.workspaces (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
-- The API may create and rename workspaces but never delete one: deletion is a privacy job.
CALL app.secure_tenant_table('public.workspaces', 'id', 'SELECT, INSERT, UPDATE');
