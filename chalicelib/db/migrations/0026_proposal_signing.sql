-- A proposal goes out for signature (SignNow) and payment (Stripe): what each provider knows it by, the signed
-- copy, the payment link; and the history of every status a proposal took.
ALTER TABLE public.proposals
    -- Who was asked to sign, and SignNow's id of the uploaded (frozen) PDF.
    ADD COLUMN signer_email         text CHECK (length(signer_email) BETWEEN 3 AND 320),
    ADD COLUMN signnow_document_id  text CHECK (signnow_document_id ~ '^[A-Za-z0-9_-]{1,100}$'),
    -- The id in the URL SignNow posts the document's events to (routed by webhook_routes), and the secret that
    -- subscription signs them with, encrypted by the vault (never exported, never returned).
    ADD COLUMN signnow_hook_id      uuid,
    ADD COLUMN signnow_hook_secret  bytea,
    -- The signed copy SignNow returned, in the blob store under the tenant's prefix.
    ADD COLUMN signed_pdf_blob_key  text,
    ADD COLUMN signed_pdf_sha256    text CHECK (signed_pdf_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN signed_at            timestamptz,
    -- The latest Stripe Checkout Session made for it (its hosted page's URL), and the one that paid it.
    ADD COLUMN checkout_session_id  text CHECK (checkout_session_id ~ '^cs_[A-Za-z0-9_]{1,250}$'),
    ADD COLUMN checkout_url         text CHECK (length(checkout_url) <= 2000),
    ADD COLUMN paid_session_id      text CHECK (paid_session_id ~ '^cs_[A-Za-z0-9_]{1,250}$'),
    ADD COLUMN paid_at              timestamptz;
CREATE UNIQUE INDEX proposals_signnow_hook ON public.proposals (tenant_id, signnow_hook_id)
    WHERE signnow_hook_id IS NOT NULL;

-- Every status a proposal took, oldest first: written with each move (by whom: an operator, an API key, or
-- nobody for a provider's callback and the scheduled expiry).
CREATE TABLE public.proposal_status_history (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    proposal_id       uuid NOT NULL,
    from_status       text CHECK (from_status IN ('draft', 'sent', 'signed', 'paid', 'declined', 'expired', 'void')),
    to_status         text NOT NULL
                      CHECK (to_status IN ('draft', 'sent', 'signed', 'paid', 'declined', 'expired', 'void')),
    changed_at        timestamptz NOT NULL DEFAULT now(),
    actor_user_id     uuid,
    actor_api_key_id  uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, proposal_id) REFERENCES public.proposals (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX proposal_status_history_by_proposal ON public.proposal_status_history (tenant_id, proposal_id, changed_at);
-- Appended, never rewritten.
CALL app.secure_tenant_table('public.proposal_status_history', 'tenant_id', 'SELECT, INSERT');
