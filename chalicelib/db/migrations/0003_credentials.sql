-- Per-tenant integration credentials (Twilio, Stripe, SignNow, WhatsApp), envelope-encrypted by
-- chalicelib.vault before they reach this table: Postgres (and its backups) only ever holds AWS
-- Encryption SDK messages, plus masked hints ("…1234") for the settings page.

CREATE TABLE public.integration_credentials (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    provider    text NOT NULL CHECK (provider IN ('twilio', 'stripe', 'signnow', 'whatsapp')),
    -- An ESDK message whose encryption context names this tenant and provider; a copy pasted into
    -- another row fails the context check on decrypt. Bounded: credentials are a few hundred bytes.
    ciphertext  bytea NOT NULL CHECK (octet_length(ciphertext) BETWEEN 1 AND 65536),
    -- Masked hints only (last 4 characters, the Stripe mode); never a whole secret.
    hints       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(hints) = 'object'),
    -- Which master key wrapped the data key: a KMS key ARN or "local:<fingerprint>". Lets the
    -- rotation job skip rows already under the current key without decrypting them.
    key_id      text NOT NULL CHECK (length(key_id) BETWEEN 1 AND 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, provider)
);
CALL app.secure_tenant_table('public.integration_credentials');
