-- Unified inbox and telephony: channels, inbound events (idempotent on the provider's id),
-- conversations, messages, attachments, calls, telephony opt-in; webhook routing and replay cache.

-- Which workspace a webhook URL belongs to: the channel id in the URL is unguessable, and this table
-- holds nothing but ids, so the webhook can open the right tenant transaction before reading anything.
CREATE TABLE public.webhook_routes (
    channel_id    uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE
);
-- Mailgun tokens already seen (their HMAC): a replayed delivery is refused.
CREATE TABLE public.webhook_replay_tokens (
    provider    text NOT NULL,
    token_hash  bytea NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, token_hash)
);
-- Rejected deliveries are counted, never stored.
CREATE TABLE public.webhook_rejections (
    day       date NOT NULL,
    provider  text NOT NULL,
    reason    text NOT NULL,
    count     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, reason)
);
REVOKE ALL ON public.webhook_routes, public.webhook_replay_tokens, public.webhook_rejections FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON public.webhook_routes TO crm_app;
GRANT SELECT, INSERT ON public.webhook_replay_tokens TO crm_app;
GRANT SELECT, INSERT, UPDATE ON public.webhook_rejections TO crm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.webhook_routes, public.webhook_replay_tokens,
      public.webhook_rejections TO crm_jobs;

CREATE TABLE public.channels (
    tenant_id             uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    type                  text NOT NULL CHECK (type IN ('whatsapp', 'email')),
    phone_number_id       text,
    display_phone_number  text,
    address               text,
    secrets_ciphertext    bytea NOT NULL,  -- access token, app secret, verify token / signing key (vault)
    secrets_hints         jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((type = 'whatsapp') = (phone_number_id IS NOT NULL))
);
CREATE UNIQUE INDEX channels_phone_number ON public.channels (tenant_id, phone_number_id) WHERE type = 'whatsapp';
CREATE INDEX channels_created ON public.channels (tenant_id, created_at DESC, id DESC);
CALL app.secure_tenant_table('public.channels');

CREATE TABLE public.inbound_events (
    tenant_id          uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    channel_id         uuid,
    provider           text NOT NULL,
    provider_event_id  text NOT NULL,
    kind               text NOT NULL,
    payload            jsonb NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    last_error         text,
    PRIMARY KEY (tenant_id, id),
    -- Idempotency: a provider's redelivery (or a concurrent duplicate) hits this and stores nothing.
    CONSTRAINT inbound_events_once UNIQUE (tenant_id, provider, provider_event_id)
);
CREATE INDEX inbound_events_pending ON public.inbound_events (tenant_id, received_at) WHERE processed_at IS NULL;
CALL app.secure_tenant_table('public.inbound_events');

CREATE TABLE public.conversations (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    channel_id       uuid NOT NULL,
    contact_id       uuid,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    assignee_id      uuid,
    subject          text,
    thread_key       text NOT NULL,   -- WhatsApp: the contact's number; email: the thread's root Message-Id
    last_message_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT conversations_thread UNIQUE (tenant_id, channel_id, thread_key),
    CONSTRAINT conversations_channel_fk FOREIGN KEY (tenant_id, channel_id)
        REFERENCES public.channels (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT conversations_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT conversations_assignee_fk FOREIGN KEY (tenant_id, assignee_id)
        REFERENCES public.memberships (tenant_id, user_id) ON DELETE SET NULL (assignee_id)
);
CREATE INDEX conversations_recent ON public.conversations (tenant_id, last_message_at DESC NULLS LAST, id DESC);
CREATE INDEX conversations_created ON public.conversations (tenant_id, created_at DESC, id DESC);
CALL app.secure_tenant_table('public.conversations');

CREATE TABLE public.messages (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    conversation_id      uuid NOT NULL,
    direction            text NOT NULL CHECK (direction IN ('in', 'out')),
    kind                 text NOT NULL DEFAULT 'text',
    body                 text,
    provider_message_id  text,
    email_message_id     text,            -- RFC 5322 Message-Id, for threading replies
    status               text NOT NULL CHECK (status IN ('received', 'queued', 'sent', 'delivered', 'read', 'failed')),
    status_rank          smallint NOT NULL DEFAULT 0,  -- statuses only move forward (out-of-order callbacks)
    error                text,
    sent_at              timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT messages_provider_id UNIQUE (tenant_id, provider_message_id),
    CONSTRAINT messages_conversation_fk FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES public.conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX messages_by_conversation ON public.messages (tenant_id, conversation_id, sent_at, id);
CREATE INDEX messages_by_email_id ON public.messages (tenant_id, email_message_id);
CALL app.secure_tenant_table('public.messages');

CREATE TABLE public.calls (
    tenant_id               uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                      uuid NOT NULL DEFAULT gen_random_uuid(),
    call_sid                text NOT NULL,
    direction               text,
    from_number             text,
    to_number               text,
    contact_id              uuid,
    status                  text NOT NULL,
    duration_s              integer,
    recording_enabled       boolean NOT NULL,   -- the opt-in as it was when the call started
    transcription_enabled   boolean NOT NULL,
    transcript              text,
    started_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT calls_sid UNIQUE (tenant_id, call_sid),
    CONSTRAINT calls_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE SET NULL (contact_id)
);
CREATE INDEX calls_recent ON public.calls (tenant_id, started_at DESC, id DESC);
CALL app.secure_tenant_table('public.calls');

CREATE TABLE public.attachments (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    message_id    uuid,
    call_id       uuid,
    filename      text,
    content_type  text NOT NULL,
    size_bytes    bigint NOT NULL,
    sha256        text NOT NULL,
    blob_key      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (num_nonnulls(message_id, call_id) = 1),
    CONSTRAINT attachments_message_fk FOREIGN KEY (tenant_id, message_id)
        REFERENCES public.messages (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT attachments_call_fk FOREIGN KEY (tenant_id, call_id)
        REFERENCES public.calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX attachments_by_message ON public.attachments (tenant_id, message_id);
CREATE INDEX attachments_by_call ON public.attachments (tenant_id, call_id);
CALL app.secure_tenant_table('public.attachments');

-- Recording and transcription are off until an owner or admin turns them on.
CREATE TABLE public.telephony_settings (
    tenant_id              uuid PRIMARY KEY REFERENCES public.workspaces (id) ON DELETE CASCADE,
    recording_enabled      boolean NOT NULL DEFAULT false,
    transcription_enabled  boolean NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CALL app.secure_tenant_table('public.telephony_settings', 'tenant_id', 'SELECT, INSERT, UPDATE');
