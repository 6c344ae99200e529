-- Accounts: users, sign-in tokens, sessions, memberships, API keys, rate limits and the audit logs.
--
-- Two kinds of tables:
--   * tenant tables (memberships, api_keys, audit_log): RLS on tenant_id, as every workspace table;
--   * account tables (users, login_tokens, sessions, rate_limits, account_audit_log): about operators,
--     not workspace content, and read before any workspace is known (a session is looked up by its
--     hash). They have no tenant_id and hold no workspace data; the catalog guard lists them by name.
--
-- A signed-in user may read their own memberships (and the names of those workspaces) across
-- tenants, so "my workspaces" needs no cross-tenant role. app.current_user_id() is set transaction-
-- locally by the auth code after the session is verified, exactly like the tenant. Writes stay
-- tenant-only: every WITH CHECK is the tenant condition.

CREATE FUNCTION app.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('app.user_id', true), '')::uuid $$;
REVOKE ALL ON FUNCTION app.current_user_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.current_user_id() TO crm_app, crm_jobs;

CREATE TABLE public.users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    display_name  text CHECK (length(display_name) <= 100),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Magic links and one-time codes. Only HMACs of the token and the code are stored.
CREATE TABLE public.login_tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash     bytea NOT NULL UNIQUE,
    code_hash      bytea NOT NULL,
    purpose        text NOT NULL CHECK (purpose IN ('login', 'invitation', 'email_change')),
    email          text NOT NULL CHECK (email = lower(email)),
    user_id        uuid REFERENCES public.users (id) ON DELETE CASCADE,   -- email_change: whose
    workspace_id   uuid REFERENCES public.workspaces (id) ON DELETE CASCADE,  -- invitation: where
    role           text CHECK (role IN ('owner', 'admin', 'member')),
    next_path      text,
    code_attempts  integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);
CREATE INDEX login_tokens_live_by_email ON public.login_tokens (email, expires_at) WHERE used_at IS NULL;

CREATE TABLE public.sessions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash     bytea NOT NULL UNIQUE,     -- HMAC of the cookie value; the value itself is never stored
    user_id        uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,      -- absolute lifetime
    revoked_at     timestamptz,
    ip             inet,
    user_agent     text CHECK (length(user_agent) <= 512)
);
CREATE INDEX sessions_by_user ON public.sessions (user_id, created_at);

-- Fixed-window counters; the bucket is an HMAC of what is limited (an address, an IP), never the value.
CREATE TABLE public.rate_limits (
    bucket        bytea NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Sign-in events (no workspace yet). subject_hash is an HMAC of the address for unknown users.
CREATE TABLE public.account_audit_log (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    user_id       uuid REFERENCES public.users (id) ON DELETE SET NULL,
    subject_hash  bytea,
    action        text NOT NULL,
    ip            inet,
    user_agent    text CHECK (length(user_agent) <= 512),
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX account_audit_log_by_user ON public.account_audit_log (user_id, occurred_at);
CREATE INDEX account_audit_log_by_time ON public.account_audit_log (occurred_at);

REVOKE ALL ON public.users, public.login_tokens, public.sessions, public.rate_limits,
              public.account_audit_log FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON public.users TO crm_app;
GRANT SELECT, INSERT, UPDATE ON public.login_tokens TO crm_app;
GRANT SELECT, INSERT, UPDATE ON public.sessions TO crm_app;
GRANT SELECT, INSERT, UPDATE ON public.rate_limits TO crm_app;
-- Append-only for the API: an attacker with the app role cannot rewrite history.
GRANT SELECT, INSERT ON public.account_audit_log TO crm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.users, public.login_tokens, public.sessions,
      public.rate_limits, public.account_audit_log TO crm_jobs;

ALTER TABLE public.workspaces ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE public.workspaces ADD COLUMN created_by uuid REFERENCES public.users (id) ON DELETE SET NULL;

CREATE TABLE public.memberships (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_by_user ON public.memberships (user_id);
CALL app.secure_tenant_table('public.memberships');

CREATE TABLE public.api_keys (
    tenant_id     uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL,   -- HMAC of the whole key; the key is shown once and never stored
    role          text NOT NULL CHECK (role IN ('admin', 'member')),
    created_by    uuid REFERENCES public.users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key_hash)
);
CALL app.secure_tenant_table('public.api_keys');

CREATE TABLE public.audit_log (
    tenant_id         uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    actor_user_id     uuid,
    actor_api_key_id  uuid,
    action            text NOT NULL,
    target_type       text,
    target_id         uuid,
    ip                inet,
    user_agent        text CHECK (length(user_agent) <= 512),
    details           jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_by_time ON public.audit_log (tenant_id, occurred_at DESC, id DESC);
-- Append-only for the API (O05): no UPDATE, no DELETE.
CALL app.secure_tenant_table('public.audit_log', 'tenant_id', 'SELECT, INSERT');

-- "My memberships" and "names of my workspaces": read-only, for the signed-in user only. The
-- restrictive guards are widened by exactly this condition and nothing else; writes keep the
-- tenant-only WITH CHECK.
CREATE POLICY member_self_read ON public.memberships AS PERMISSIVE FOR SELECT TO crm_app
    USING (user_id = app.current_user_id());
ALTER POLICY tenant_guard ON public.memberships
    USING (tenant_id = app.current_tenant() OR user_id = app.current_user_id());
CREATE POLICY member_workspaces_read ON public.workspaces AS PERMISSIVE FOR SELECT TO crm_app
    USING (id IN (SELECT m.tenant_id FROM public.memberships m WHERE m.user_id = app.current_user_id()));
ALTER POLICY tenant_guard ON public.workspaces
    USING (id = app.current_tenant()
           OR id IN (SELECT m.tenant_id FROM public.memberships m WHERE m.user_id = app.current_user_id()));

-- The jobs role (separate Lambdas, no HTTP) may list workspaces across tenants, to know which
-- tenants to work through; every other read or write of the jobs role is per tenant under RLS.
-- The workspaces guard therefore binds crm_app only; crm_jobs keeps the tenant policy for writes.
ALTER POLICY tenant_guard ON public.workspaces TO crm_app;
CREATE POLICY jobs_list_tenants ON public.workspaces AS PERMISSIVE FOR SELECT TO crm_jobs USING (true);

-- The per-request session + membership lookup. PL/pgSQL caches its plan per connection, so the
-- hottest query of the API is planned once per backend even with client-side prepared statements
-- off (they pin RDS Proxy sessions). SECURITY INVOKER: it runs as crm_app, under RLS.
CREATE FUNCTION app.session_lookup(p_hash bytea, p_workspace uuid, p_now timestamptz, p_idle_since timestamptz)
    RETURNS TABLE (session_id uuid, user_id uuid, last_seen_at timestamptz, role text, deleted_at timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public
AS $$
BEGIN
    RETURN QUERY
    SELECT s.id, s.user_id, s.last_seen_at, m.role, w.deleted_at
      FROM public.sessions s
      LEFT JOIN public.memberships m ON m.user_id = s.user_id AND m.tenant_id = p_workspace
      LEFT JOIN public.workspaces w ON w.id = m.tenant_id
     WHERE s.token_hash = p_hash AND s.revoked_at IS NULL AND s.expires_at > p_now
       AND s.last_seen_at > p_idle_since;
END
$$;
REVOKE ALL ON FUNCTION app.session_lookup(bytea, uuid, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.session_lookup(bytea, uuid, timestamptz, timestamptz) TO crm_app;
