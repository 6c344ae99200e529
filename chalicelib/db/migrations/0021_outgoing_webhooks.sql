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
    FOREIGN KEY (tenant_id, message_id) REFERENCES public.webhook_messages (tenant_id, id) ON DELETE CASCADE
    -- No foreign key to webhook_endpoints: its check would lock the endpoint's row (FOR KEY SHARE) in every
    -- transaction that emits, serialising every write of a busy workspace on one row and doubling the cost
    -- of an event (bench B11). Deleting an endpoint deletes its deliveries in the same transaction
    -- (endpoint_delete), and the dispatcher only claims deliveries whose endpoint exists and is enabled.
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

-- Emitting an event, in the change's own transaction, as crm_app or crm_jobs under RLS (SECURITY INVOKER):
-- one statement queued with the change's statements, no round trip of its own. An event is stored only when
-- an enabled endpoint subscribes to its type (or to '*'), with one pending delivery per such endpoint, due at
-- once ('-infinity' sorts before every retry and needs no agreement between clocks). No SET clause on these
-- (every name is schema-qualified, and the runtime roles can create nothing): the check inlines, and the
-- per-request cost stays one index probe when nobody subscribes (bench B11).

-- Whether an enabled endpoint of the workspace subscribes to an event type.
CREATE FUNCTION app.webhook_subscribed(p_tenant uuid, p_type text) RETURNS boolean
    LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (SELECT 1 FROM public.webhook_endpoints e
                    WHERE e.tenant_id = p_tenant AND e.enabled
                      AND (p_type = ANY (e.event_types) OR '*' = ANY (e.event_types)))
$$;

-- Store a (subscribed) event and its deliveries.
CREATE FUNCTION app.store_webhook(p_tenant uuid, p_type text, p_resource text, p_data jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    message_id uuid;
BEGIN
    INSERT INTO public.webhook_messages (tenant_id, type, resource, data)
    VALUES (p_tenant, p_type, p_resource, p_data) RETURNING id INTO message_id;
    INSERT INTO public.webhook_deliveries (tenant_id, message_id, endpoint_id, next_attempt_at)
    SELECT p_tenant, message_id, e.id, '-infinity' FROM public.webhook_endpoints e
     WHERE e.tenant_id = p_tenant AND e.enabled AND (p_type = ANY (e.event_types) OR '*' = ANY (e.event_types));
END
$$;

-- An event whose data is given. Returns whether it was stored.
CREATE FUNCTION app.emit_webhook(p_tenant uuid, p_type text, p_resource text, p_data jsonb) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    PERFORM app.store_webhook(p_tenant, p_type, p_resource, p_data);
    RETURN true;
END
$$;

-- A row of a resource table, snapshotted as it stands at this point of the transaction (read under RLS:
-- another workspace's id finds nothing, and nothing is stored). One static statement per table, so each plan
-- is kept. A message carries its attachments as the API lists them (metadata and digest, never the bytes);
-- nothing the API does not show is copied (a call's transcript above all: the event log outlives it).
CREATE FUNCTION app.webhook_snapshot(p_tenant uuid, p_table text, p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    snapshot jsonb;
BEGIN
    CASE p_table
        WHEN 'contacts' THEN
            SELECT to_jsonb(t) INTO snapshot FROM public.contacts t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'companies' THEN
            SELECT to_jsonb(t) INTO snapshot FROM public.companies t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'leads' THEN
            SELECT to_jsonb(t) INTO snapshot FROM public.leads t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'notes' THEN
            SELECT to_jsonb(t) INTO snapshot FROM public.notes t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'conversations' THEN
            SELECT to_jsonb(t) INTO snapshot FROM public.conversations t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'calls' THEN
            -- Never the transcript: it lives in the call or nowhere (and a correction could not reach a copy).
            SELECT to_jsonb(t) - 'transcript' - 'transcript_corrected_at' INTO snapshot
              FROM public.calls t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        WHEN 'messages' THEN
            -- Without the provider's and the mail's own message ids: threading state, not the message.
            SELECT to_jsonb(t) - 'provider_message_id' - 'email_message_id' - 'status_rank'
                   || jsonb_build_object('attachments', (
                       SELECT coalesce(jsonb_agg(jsonb_build_object(
                                  'id', a.id, 'filename', a.filename, 'content_type', a.content_type,
                                  'size', a.size_bytes, 'sha256', a.sha256) ORDER BY a.created_at, a.id), '[]')
                         FROM public.attachments a WHERE a.tenant_id = p_tenant AND a.message_id = p_id))
              INTO snapshot FROM public.messages t WHERE t.tenant_id = p_tenant AND t.id = p_id;
        ELSE
            RAISE EXCEPTION 'not a webhook resource: %', p_table;
    END CASE;
    RETURN snapshot;
END
$$;

-- An event carrying a row (queue it after the statements that write the row). Returns whether it was stored.
CREATE FUNCTION app.emit_webhook_row(p_tenant uuid, p_type text, p_table text, p_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    snapshot jsonb;
BEGIN
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    snapshot := app.webhook_snapshot(p_tenant, p_table, p_id);
    IF snapshot IS NULL THEN
        RETURN false;
    END IF;
    PERFORM app.store_webhook(p_tenant, p_type, p_table, snapshot);
    RETURN true;
END
$$;

-- The same for many rows of one table (a CSV import's contacts): one statement, one event per row.
CREATE FUNCTION app.emit_webhook_rows(p_tenant uuid, p_type text, p_table text, p_ids uuid[]) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    one uuid;
    snapshot jsonb;
    stored boolean := false;
BEGIN
    IF NOT app.webhook_subscribed(p_tenant, p_type) THEN
        RETURN false;
    END IF;
    FOREACH one IN ARRAY p_ids LOOP
        snapshot := app.webhook_snapshot(p_tenant, p_table, one);
        IF snapshot IS NOT NULL THEN
            PERFORM app.store_webhook(p_tenant, p_type, p_table, snapshot);
            stored := true;
        END IF;
    END LOOP;
    RETURN stored;
END
$$;

REVOKE ALL ON FUNCTION app.webhook_subscribed(uuid, text), app.store_webhook(uuid, text, text, jsonb),
    app.emit_webhook(uuid, text, text, jsonb), app.webhook_snapshot(uuid, text, uuid),
    app.emit_webhook_row(uuid, text, text, uuid), app.emit_webhook_rows(uuid, text, text, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.webhook_subscribed(uuid, text), app.store_webhook(uuid, text, text, jsonb),
    app.emit_webhook(uuid, text, text, jsonb), app.webhook_snapshot(uuid, text, uuid),
    app.emit_webhook_row(uuid, text, text, uuid), app.emit_webhook_rows(uuid, text, text, uuid[])
    TO crm_app, crm_jobs;
