-- The scope helpers that every RLS policy calls, with SQL-standard bodies (RETURN ...).
-- Same definitions as 0001/0002; only the form changes. The planner inlines these functions into
-- every policy qual of every query; for a body given as text it parses and analyses that text each
-- time, for a SQL-standard body it reads the parse tree stored at CREATE time. Measured on the B2 list
-- query: about 10 us less server time per query, with the plans unchanged (same index conditions).
CREATE OR REPLACE FUNCTION app.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid;

CREATE OR REPLACE FUNCTION app.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.current_setting('app.user_id', true), '')::uuid;
