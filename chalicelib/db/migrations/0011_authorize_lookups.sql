-- app.authorize_session with three single-row lookups instead of a call to app.session_lookup.
--
-- The three-way join of session_lookup was planned as a hash join over whole (small) tables; three
-- lookups by unique key (the session's token hash, the membership's (tenant_id, user_id), the workspace's
-- id), each a plan PL/pgSQL keeps, cost the server about 45 us less per request (B9, B2). Same checks,
-- same errors, same touch as migration 0010.
CREATE OR REPLACE FUNCTION app.authorize_session(p_hash bytea, p_workspace uuid, p_now timestamptz,
                                                 p_idle_since timestamptz, p_touch_before timestamptz,
                                                 p_roles text[], p_allow_deleted boolean)
    RETURNS TABLE (sid uuid, uid uuid, member_role text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    found_session_id uuid;
    caller_id uuid;
    session_seen timestamptz;
    role_here text;
    workspace_deleted_at timestamptz;
BEGIN
    SELECT s.id, s.user_id, s.last_seen_at INTO found_session_id, caller_id, session_seen
      FROM public.sessions s
     WHERE s.token_hash = p_hash AND s.revoked_at IS NULL AND s.expires_at > p_now
       AND s.last_seen_at > p_idle_since;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the session has expired; sign in again' USING ERRCODE = 'CR401';
    END IF;
    -- Both under RLS: only the request's tenant (p_workspace is the tenant tenant_tx set) is visible.
    SELECT m.role INTO role_here FROM public.memberships m
     WHERE m.tenant_id = p_workspace AND m.user_id = caller_id;
    SELECT w.deleted_at INTO workspace_deleted_at FROM public.workspaces w WHERE w.id = p_workspace;
    IF role_here IS NULL OR (workspace_deleted_at IS NOT NULL AND NOT p_allow_deleted) THEN
        RAISE EXCEPTION 'not found' USING ERRCODE = 'CR404';
    END IF;
    IF NOT (role_here = ANY (p_roles)) THEN
        RAISE EXCEPTION 'role not allowed' USING ERRCODE = 'CR403';
    END IF;
    IF session_seen < p_touch_before THEN
        UPDATE public.sessions SET last_seen_at = p_now WHERE id = found_session_id;
    END IF;
    RETURN QUERY SELECT found_session_id, caller_id, role_here;
END
$$;
