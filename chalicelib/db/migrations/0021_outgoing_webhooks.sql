-- Outgoing webhooks (Standard Webhooks): endpoints a workspace subscribes, the messages its changes emit (an
-- outbox written in the same transaction as the change), one delivery per message and endpoint, and the log
-- of every attempt. All four are tenant tables under the RLS template.

CREATE TABLE public.webhook_endpoints (
    tenant_id                  uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                         uuid NOT NULL DEFAULT gen_random_uuid(),
    url                        text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description                text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    event_types                text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    enabled                    boolean NOT NULL DEFAULT true,
    rate_limit_per_s           integer CHECK (rate_limit_per_s BETWEEN 1 AND 1000),
    -- The signing secret (whsec_…), envelope-encrypted through the vault; the one before a rotation stays
    -- valid (and signs too) until previous_secret_expires_at.
    secret_ciphertext          bytea NOT NULL,
    previous_secret_ciphertext bytea,
    previous_secret_expires_at timestamptz,
    disabled_reason            text CHECK (disabled_reason IN ('gone', 'failing', 'operator')),
    -- Since when every attempt to it has failed (NULL after a success): 5 days of that disable it.
    failing_since              timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CALL app.secure_tenant_table('public.webhook_endpoints');

-- One row per event that at least one enabled endpoint subscribed to when it happened (nothing is written
-- for a workspace without subscribers). data is the event's `data` as of the change: a snapshot of the row
-- (resource names its table; the dispatcher renders it as the API's GET does) or the event's own object.
CREATE TABLE public.webhook_messages (
    tenant_id    uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    type         text NOT NULL,
    resource     text,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_messages_by_time ON public.webhook_messages (tenant_id, created_at);
CALL app.secure_tenant_table('public.webhook_messages');

-- A message on its way to one endpoint: pending until an attempt succeeds or the schedule runs out.
CREATE TABLE public.webhook_deliveries (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    message_id       uuid NOT NULL,
    endpoint_id      uuid NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES public.webhook_messages (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES public.webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON public.webhook_deliveries (tenant_id, next_attempt_at, created_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON public.webhook_deliveries (tenant_id, endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_by_message ON public.webhook_deliveries (tenant_id, message_id);
CALL app.secure_tenant_table('public.webhook_deliveries');

-- Every attempt, as the delivery log shows it: never the request's headers, at most 1 KB of the response.
CREATE TABLE public.webhook_attempts (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    delivery_id       uuid NOT NULL,
    attempt           integer NOT NULL,
    attempted_at      timestamptz NOT NULL,
    status_code       integer,
    duration_ms       integer NOT NULL,
    error_class       text,
    response_excerpt  text CHECK (length(response_excerpt) <= 1024),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES public.webhook_deliveries (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_by_time ON public.webhook_attempts (tenant_id, attempted_at);
CALL app.secure_tenant_table('public.webhook_attempts');

-- Whether an enabled endpoint of the workspace subscribes to an event type (or to '*'). Under RLS.
CREATE FUNCTION app.webhook_subscribed(p_tenant uuid, p_type text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, public
AS $$
    SELECT EXISTS (SELECT 1 FROM public.webhook_endpoints e
                    WHERE e.tenant_id = p_tenant AND e.enabled
                      AND (p_type = ANY (e.event_types) OR '*' = ANY (e.event_types)))
$$;
REVOKE ALL ON FUNCTION app.webhook_subscribed(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.webhook_subscribed(uuid, text) TO crm_app, crm_jobs;

-- Fan-out in the statement that records the event: a message only when an enabled endpoint subscribes to its
-- type (or to '*'), and one pending delivery per such endpoint. Called in the change's own transaction, as
-- crm_app or crm_jobs under RLS (SECURITY INVOKER): queued with the change's statements, no round trip of its
-- own. Returns whether anything is to be delivered.
CREATE FUNCTION app.emit_webhook(p_tenant uuid, p_type text, p_resource text, p_data jsonb) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    message_id uuid;
BEGIN
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    INSERT INTO public.webhook_messages (tenant_id, type, resource, data)
    VALUES (p_tenant, p_type, p_resource, p_data) RETURNING id INTO message_id;
    -- Due at once: '-infinity' sorts before every retry, and needs no agreement between clocks.
    INSERT INTO public.webhook_deliveries (tenant_id, message_id, endpoint_id, next_attempt_at)
    SELECT p_tenant, message_id, e.id, '-infinity' FROM public.webhook_endpoints e
     WHERE e.tenant_id = p_tenant AND e.enabled AND (p_type = ANY (e.event_types) OR '*' = ANY (e.event_types));
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION app.emit_webhook(uuid, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.emit_webhook(uuid, text, text, jsonb) TO crm_app, crm_jobs;

-- The same for a row of one of the resource tables, snapshotted as it stands at this point of the transaction
-- (read under RLS: another workspace's id finds nothing, and nothing is emitted). The row is read only when
-- someone subscribes.
CREATE FUNCTION app.emit_webhook_row(p_tenant uuid, p_type text, p_table text, p_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    snapshot jsonb;
BEGIN
    IF p_table NOT IN ('contacts', 'companies', 'leads', 'notes', 'conversations', 'messages', 'calls') THEN
        RAISE EXCEPTION 'not a webhook resource: %', p_table;
    END IF;
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT to_jsonb(t) FROM public.%I t WHERE t.tenant_id = $1 AND t.id = $2', p_table)
       INTO snapshot USING p_tenant, p_id;
    IF snapshot IS NULL THEN
        RETURN false;
    END IF;
    IF p_table = 'messages' THEN
        -- A message's attachments as the API lists them (metadata and digest; the bytes stay in the store).
        snapshot := snapshot || jsonb_build_object('attachments', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'filename', a.filename,
                                                         'content_type', a.content_type, 'size', a.size_bytes,
                                                         'sha256', a.sha256) ORDER BY a.created_at, a.id), '[]')
              FROM public.attachments a WHERE a.tenant_id = p_tenant AND a.message_id = p_id));
    END IF;
    RETURN app.emit_webhook(p_tenant, p_type, p_table, snapshot);
END
$$;
REVOKE ALL ON FUNCTION app.emit_webhook_row(uuid, text, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.emit_webhook_row(uuid, text, text, uuid) TO crm_app, crm_jobs;

-- emit_webhook_row for many rows of one table (a CSV import's contacts): one statement, one event per row.
CREATE FUNCTION app.emit_webhook_rows(p_tenant uuid, p_type text, p_table text, p_ids uuid[]) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public
AS $$
DECLARE
    one uuid;
    stored boolean := false;
BEGIN
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    FOREACH one IN ARRAY p_ids LOOP
        stored := app.emit_webhook_row(p_tenant, p_type, p_table, one) OR stored;
    END LOOP;
    RETURN stored;
END
$$;
REVOKE ALL ON FUNCTION app.emit_webhook_rows(uuid, text, text, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.emit_webhook_rows(uuid, text, text, uuid[]) TO crm_app, crm_jobs;
