-- Authorization of a workspace request, as one statement that fails when the caller may not act.
--
-- tenant_tx queues BEGIN, set_config and then one of these functions; a route queues its own statements
-- behind it. When the function raises, PostgreSQL aborts the transaction and skips every later statement
-- of the pipeline: a caller who may not read the workspace cannot make its queries run (not even to time
-- them), so reads can travel with their authorization in one round trip. SECURITY INVOKER: they run as
-- crm_app, under RLS, inside the request's tenant transaction.
--
-- Errors (SQLSTATE class CR, mapped to HTTP by chalicelib/auth/principal.py):
--   CR401  no live session (expired, idle, revoked or unknown)
--   CR404  not a member, no such workspace, a deleted workspace, or no such key in this workspace
--   CR403  a member whose role is not among p_roles
-- p_roles lists the roles allowed (the ranking lives in one place, the Python caller). Each function also
-- touches last_seen_at / last_used_at at most once per p_touch_before window, as the callers did.

CREATE FUNCTION app.authorize_session(p_hash bytea, p_workspace uuid, p_now timestamptz,
                                      p_idle_since timestamptz, p_touch_before timestamptz,
                                      p_roles text[], p_allow_deleted boolean)
    RETURNS TABLE (sid uuid, uid uuid, member_role text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    found_session record;
BEGIN
    SELECT * INTO found_session FROM app.session_lookup(p_hash, p_workspace, p_now, p_idle_since);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the session has expired; sign in again' USING ERRCODE = 'CR401';
    END IF;
    IF found_session.role IS NULL OR (found_session.deleted_at IS NOT NULL AND NOT p_allow_deleted) THEN
        RAISE EXCEPTION 'not found' USING ERRCODE = 'CR404';
    END IF;
    IF NOT (found_session.role = ANY (p_roles)) THEN
        RAISE EXCEPTION 'role not allowed' USING ERRCODE = 'CR403';
    END IF;
    IF found_session.last_seen_at < p_touch_before THEN
        UPDATE public.sessions SET last_seen_at = p_now WHERE id = found_session.session_id;
    END IF;
    RETURN QUERY SELECT found_session.session_id, found_session.user_id, found_session.role;
END
$$;
REVOKE ALL ON FUNCTION app.authorize_session(bytea, uuid, timestamptz, timestamptz, timestamptz, text[], boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.authorize_session(bytea, uuid, timestamptz, timestamptz, timestamptz, text[], boolean)
    TO crm_app;

-- An API key is looked up under the request's tenant (RLS): another workspace's key is simply not there.
CREATE FUNCTION app.authorize_api_key(p_hash bytea, p_now timestamptz, p_touch_before timestamptz,
                                      p_roles text[], p_allow_deleted boolean)
    RETURNS TABLE (key_id uuid, key_role text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    found_key record;
    workspace_deleted_at timestamptz;
BEGIN
    SELECT k.id, k.role, k.last_used_at INTO found_key FROM public.api_keys k
     WHERE k.key_hash = p_hash AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > p_now);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not found' USING ERRCODE = 'CR404';
    END IF;
    SELECT w.deleted_at INTO workspace_deleted_at FROM public.workspaces w WHERE w.id = app.current_tenant();
    IF NOT FOUND OR (workspace_deleted_at IS NOT NULL AND NOT p_allow_deleted) THEN
        RAISE EXCEPTION 'not found' USING ERRCODE = 'CR404';
    END IF;
    IF NOT (found_key.role = ANY (p_roles)) THEN
        RAISE EXCEPTION 'role not allowed' USING ERRCODE = 'CR403';
    END IF;
    IF found_key.last_used_at IS NULL OR found_key.last_used_at < p_touch_before THEN
        UPDATE public.api_keys SET last_used_at = p_now
         WHERE tenant_id = app.current_tenant() AND id = found_key.id;
    END IF;
    RETURN QUERY SELECT found_key.id, found_key.role;
END
$$;
REVOKE ALL ON FUNCTION app.authorize_api_key(bytea, timestamptz, timestamptz, text[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.authorize_api_key(bytea, timestamptz, timestamptz, text[], boolean) TO crm_app;
