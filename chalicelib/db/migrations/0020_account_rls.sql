-- Row-level security on the account tables (users, sessions, login_tokens, account_audit_log, rate_limits
-- and the three webhook tables). Until now only application code kept one workspace's invitations, members
-- and sessions out of another's queries; now the database does, as it does for tenant tables.
--
-- What the API role (crm_app) sees of each, through a permissive policy and a RESTRICTIVE guard that repeats
-- the union of the permissive ones (so a future wide policy cannot widen it; chalicelib/db/guard.py pins
-- every guard):
--   users              its own account (app.user_id, bound after a session or token is verified), and the
--                      accounts of the current workspace's members (read only: the members list);
--   sessions           the bound user's own sessions;
--   login_tokens       nothing readable; may insert a sign-in request (purpose login, bound to nobody),
--                      an invitation of the current workspace, an email change of the bound user;
--   account_audit_log  the bound user's own entries; may append those and anonymous ones (user_id NULL);
--   webhook_routes     the current workspace's routes;
--   rate_limits, webhook_replay_tokens, webhook_rejections: no privilege at all (functions below).
--
-- What must happen before any user or workspace is known goes through the narrow SECURITY DEFINER functions
-- below (owned by crm_owner, search_path pinned, executable by crm_app only): look a session up by its
-- hash, end the session of a presented cookie, redeem a sign-in token or code, find the workspace of an
-- invitation, count a rate-limit hit, route a webhook, record a replay token, count a refused delivery.
-- They run as the owner, which FORCE ROW LEVEL SECURITY subjects to policies too: each account table has
-- one policy for crm_owner (definer_access), and none of the tenant tables has one, so a definer function
-- cannot see workspace content even by mistake.
--
-- The jobs role (separate Lambdas, no HTTP) purges expired sessions, tokens, counters and audit entries
-- across all accounts and exports a workspace's members: it keeps the whole tables (jobs_all).

CREATE PROCEDURE app.secure_account_table(tbl regclass)
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY definer_access ON %s AS PERMISSIVE FOR ALL TO crm_owner '
                   'USING (true) WITH CHECK (true)', tbl);
    EXECUTE format('CREATE POLICY jobs_all ON %s AS PERMISSIVE FOR ALL TO crm_jobs '
                   'USING (true) WITH CHECK (true)', tbl);
    EXECUTE format('REVOKE ALL ON %s FROM crm_app', tbl);
END
$$;
REVOKE ALL ON PROCEDURE app.secure_account_table(regclass) FROM PUBLIC;

CALL app.secure_account_table('public.users');
CALL app.secure_account_table('public.sessions');
CALL app.secure_account_table('public.login_tokens');
CALL app.secure_account_table('public.account_audit_log');
CALL app.secure_account_table('public.rate_limits');
CALL app.secure_account_table('public.webhook_routes');
CALL app.secure_account_table('public.webhook_replay_tokens');
CALL app.secure_account_table('public.webhook_rejections');

-- users ---------------------------------------------------------------------------------------------------
-- Created only by a redeemed sign-in token or code (app.redeem_login_*): no INSERT for the API role.
GRANT SELECT, UPDATE ON public.users TO crm_app;
CREATE POLICY own_account ON public.users AS PERMISSIVE FOR ALL TO crm_app
    USING (id = (SELECT app.current_user_id())) WITH CHECK (id = (SELECT app.current_user_id()));
CREATE POLICY workspace_members_read ON public.users AS PERMISSIVE FOR SELECT TO crm_app
    USING (id IN (SELECT m.user_id FROM public.memberships m WHERE m.tenant_id = (SELECT app.current_tenant())));
CREATE POLICY account_guard ON public.users AS RESTRICTIVE FOR ALL TO crm_app
    USING (id = (SELECT app.current_user_id())
           OR id IN (SELECT m.user_id FROM public.memberships m WHERE m.tenant_id = (SELECT app.current_tenant())))
    WITH CHECK (id = (SELECT app.current_user_id()));

-- sessions ------------------------------------------------------------------------------------------------
GRANT SELECT, INSERT, UPDATE ON public.sessions TO crm_app;
CREATE POLICY own_sessions ON public.sessions AS PERMISSIVE FOR ALL TO crm_app
    USING (user_id = (SELECT app.current_user_id())) WITH CHECK (user_id = (SELECT app.current_user_id()));
CREATE POLICY account_guard ON public.sessions AS RESTRICTIVE FOR ALL TO crm_app
    USING (user_id = (SELECT app.current_user_id())) WITH CHECK (user_id = (SELECT app.current_user_id()));

-- login_tokens --------------------------------------------------------------------------------------------
-- Insert only: tokens are redeemed through the definer functions, which alone read them.
GRANT INSERT ON public.login_tokens TO crm_app;
CREATE POLICY sign_in_requests ON public.login_tokens AS PERMISSIVE FOR INSERT TO crm_app
    WITH CHECK (purpose = 'login' AND user_id IS NULL AND workspace_id IS NULL AND role IS NULL);
CREATE POLICY workspace_invitations ON public.login_tokens AS PERMISSIVE FOR ALL TO crm_app
    USING (purpose = 'invitation' AND workspace_id = (SELECT app.current_tenant()))
    WITH CHECK (purpose = 'invitation' AND workspace_id = (SELECT app.current_tenant()));
CREATE POLICY own_email_changes ON public.login_tokens AS PERMISSIVE FOR ALL TO crm_app
    USING (purpose = 'email_change' AND user_id = (SELECT app.current_user_id()))
    WITH CHECK (purpose = 'email_change' AND user_id = (SELECT app.current_user_id()));
CREATE POLICY account_guard ON public.login_tokens AS RESTRICTIVE FOR ALL TO crm_app
    USING ((purpose = 'invitation' AND workspace_id = (SELECT app.current_tenant()))
           OR (purpose = 'email_change' AND user_id = (SELECT app.current_user_id())))
    WITH CHECK ((purpose = 'login' AND user_id IS NULL AND workspace_id IS NULL AND role IS NULL)
                OR (purpose = 'invitation' AND workspace_id = (SELECT app.current_tenant()))
                OR (purpose = 'email_change' AND user_id = (SELECT app.current_user_id())));

-- account_audit_log ---------------------------------------------------------------------------------------
-- Append-only for the API, as before.
GRANT SELECT, INSERT ON public.account_audit_log TO crm_app;
CREATE POLICY own_events ON public.account_audit_log AS PERMISSIVE FOR ALL TO crm_app
    USING (user_id = (SELECT app.current_user_id())) WITH CHECK (user_id = (SELECT app.current_user_id()));
CREATE POLICY anonymous_events ON public.account_audit_log AS PERMISSIVE FOR INSERT TO crm_app
    WITH CHECK (user_id IS NULL);
CREATE POLICY account_guard ON public.account_audit_log AS RESTRICTIVE FOR ALL TO crm_app
    USING (user_id = (SELECT app.current_user_id()))
    WITH CHECK (user_id IS NULL OR user_id = (SELECT app.current_user_id()));

-- webhook_routes ------------------------------------------------------------------------------------------
-- Written when a channel is created or deleted (its workspace's transaction); read by channel id through
-- app.webhook_route_workspace before the tenant is known.
GRANT SELECT, INSERT, DELETE ON public.webhook_routes TO crm_app;
CREATE POLICY workspace_routes ON public.webhook_routes AS PERMISSIVE FOR ALL TO crm_app
    USING (workspace_id = (SELECT app.current_tenant())) WITH CHECK (workspace_id = (SELECT app.current_tenant()));
CREATE POLICY account_guard ON public.webhook_routes AS RESTRICTIVE FOR ALL TO crm_app
    USING (workspace_id = (SELECT app.current_tenant())) WITH CHECK (workspace_id = (SELECT app.current_tenant()));

-- The definer functions ------------------------------------------------------------------------------------

-- The user of an address, created at its first sign-in. Not executable by crm_app: called only by the
-- redeem functions, after a token or code for that address was spent.
CREATE FUNCTION app.user_by_email(p_email text, p_now timestamptz) RETURNS uuid
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.users (email, created_at, updated_at) VALUES (p_email, p_now, p_now)
    ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
    RETURNING id
$$;
REVOKE ALL ON FUNCTION app.user_by_email(text, timestamptz) FROM PUBLIC;

-- Spend a live sign-in token of one of p_purposes, once (one atomic UPDATE: of N concurrent attempts exactly
-- one wins). Returns what it grants; user_id is the account it signs in to (created for a new address) or,
-- for an email change, the account whose address changes.
CREATE FUNCTION app.redeem_login_token(p_hash bytea, p_purposes text[], p_now timestamptz)
    RETURNS TABLE (purpose text, email text, user_id uuid, workspace_id uuid, role text, next_path text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    spent public.login_tokens;
BEGIN
    UPDATE public.login_tokens t SET used_at = p_now
     WHERE t.token_hash = p_hash AND t.purpose = ANY (p_purposes) AND t.used_at IS NULL AND t.expires_at > p_now
    RETURNING * INTO spent;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT spent.purpose, spent.email,
                        CASE WHEN spent.purpose = 'email_change' THEN spent.user_id
                             ELSE app.user_by_email(spent.email, p_now) END,
                        spent.workspace_id, spent.role, spent.next_path;
END
$$;
REVOKE ALL ON FUNCTION app.redeem_login_token(bytea, text[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.redeem_login_token(bytea, text[], timestamptz) TO crm_app;

-- Spend the newest live code of the address (sign-in and invitation only), once, unless its attempts are
-- used up. A wrong code spends one attempt of every live code of the address and grants nothing.
CREATE FUNCTION app.redeem_login_code(p_email text, p_code_hash bytea, p_now timestamptz, p_max_attempts integer)
    RETURNS TABLE (purpose text, email text, user_id uuid, workspace_id uuid, role text, next_path text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    spent public.login_tokens;
BEGIN
    UPDATE public.login_tokens t SET used_at = p_now
     WHERE t.id = (SELECT c.id FROM public.login_tokens c
                    WHERE c.email = p_email AND c.code_hash = p_code_hash AND c.purpose IN ('login', 'invitation')
                      AND c.used_at IS NULL AND c.expires_at > p_now AND c.code_attempts < p_max_attempts
                    ORDER BY c.created_at DESC
                    LIMIT 1)
       AND t.used_at IS NULL
    RETURNING * INTO spent;
    IF NOT FOUND THEN
        UPDATE public.login_tokens t SET code_attempts = t.code_attempts + 1
         WHERE t.email = p_email AND t.used_at IS NULL AND t.expires_at > p_now;
        RETURN;
    END IF;
    RETURN QUERY SELECT spent.purpose, spent.email, app.user_by_email(spent.email, p_now),
                        spent.workspace_id, spent.role, spent.next_path;
END
$$;
REVOKE ALL ON FUNCTION app.redeem_login_code(text, bytea, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.redeem_login_code(text, bytea, timestamptz, integer) TO crm_app;

-- The workspace of an unused invitation, by its token or by its address and code (NULL otherwise), so that
-- sign-in can run in that workspace's transaction. Reveals nothing a holder of the token does not know.
CREATE FUNCTION app.invitation_workspace(p_token_hash bytea, p_email text, p_code_hash bytea)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    SELECT t.workspace_id FROM public.login_tokens t
     WHERE t.purpose = 'invitation' AND t.used_at IS NULL
       AND (t.token_hash = p_token_hash OR (t.email = p_email AND t.code_hash = p_code_hash))
     LIMIT 1
$$;
REVOKE ALL ON FUNCTION app.invitation_workspace(bytea, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.invitation_workspace(bytea, text, bytea) TO crm_app;

-- A live session by the HMAC of its cookie: its id and user (no row when revoked, expired or idle too long).
-- Slides the idle expiry forward when it was last touched before p_touch_before.
CREATE FUNCTION app.live_session(p_hash bytea, p_now timestamptz, p_idle_since timestamptz,
                                 p_touch_before timestamptz)
    RETURNS TABLE (session_id uuid, user_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    found_id uuid;
    found_user uuid;
    seen timestamptz;
BEGIN
    SELECT s.id, s.user_id, s.last_seen_at INTO found_id, found_user, seen
      FROM public.sessions s
     WHERE s.token_hash = p_hash AND s.revoked_at IS NULL AND s.expires_at > p_now AND s.last_seen_at > p_idle_since;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF seen < p_touch_before THEN
        UPDATE public.sessions SET last_seen_at = p_now WHERE id = found_id;
    END IF;
    RETURN QUERY SELECT found_id, found_user;
END
$$;
REVOKE ALL ON FUNCTION app.live_session(bytea, timestamptz, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.live_session(bytea, timestamptz, timestamptz, timestamptz) TO crm_app;

-- End the session whose cookie is presented (a new sign-in in the same browser): holding the cookie is the
-- right to end it, whoever's it is.
CREATE FUNCTION app.end_session(p_hash bytea, p_now timestamptz) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    UPDATE public.sessions SET revoked_at = p_now WHERE token_hash = p_hash AND revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION app.end_session(bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.end_session(bytea, timestamptz) TO crm_app;

-- Count one hit in a rate-limit bucket's window; returns the window's hits so far. The bucket is an HMAC.
CREATE FUNCTION app.rate_limit_hit(p_bucket bytea, p_window_start timestamptz) RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.rate_limits (bucket, window_start, hits) VALUES (p_bucket, p_window_start, 1)
    ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
    RETURNING hits
$$;
REVOKE ALL ON FUNCTION app.rate_limit_hit(bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.rate_limit_hit(bytea, timestamptz) TO crm_app;

-- The workspace of a webhook URL's channel id (read before any tenant is known).
CREATE FUNCTION app.webhook_route_workspace(p_channel uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$ SELECT r.workspace_id FROM public.webhook_routes r WHERE r.channel_id = p_channel $$;
REVOKE ALL ON FUNCTION app.webhook_route_workspace(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.webhook_route_workspace(uuid) TO crm_app;

-- Record a delivery's one-time token hash; true only on its first use.
CREATE FUNCTION app.first_use_of_replay_token(p_provider text, p_hash bytea) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    WITH fresh AS (INSERT INTO public.webhook_replay_tokens (provider, token_hash) VALUES (p_provider, p_hash)
                   ON CONFLICT DO NOTHING RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM fresh)
$$;
REVOKE ALL ON FUNCTION app.first_use_of_replay_token(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.first_use_of_replay_token(text, bytea) TO crm_app;

-- Count one refused delivery per day, provider and reason.
CREATE FUNCTION app.count_webhook_rejection(p_day date, p_provider text, p_reason text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.webhook_rejections (day, provider, reason, count) VALUES (p_day, p_provider, p_reason, 1)
    ON CONFLICT (day, provider, reason) DO UPDATE SET count = webhook_rejections.count + 1
$$;
REVOKE ALL ON FUNCTION app.count_webhook_rejection(date, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.count_webhook_rejection(date, text, text) TO crm_app;

-- A workspace request's session check, as in 0011, with the session found through app.live_session (the API
-- role can no longer read sessions it is not bound to). Same checks, same errors; the touch now happens in
-- app.live_session, and a refusal's error rolls it back with the rest of the transaction.
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
    role_here text;
    workspace_deleted_at timestamptz;
BEGIN
    SELECT s.session_id, s.user_id INTO found_session_id, caller_id
      FROM app.live_session(p_hash, p_now, p_idle_since, p_touch_before) s;
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
    RETURN QUERY SELECT found_session_id, caller_id, role_here;
END
$$;
