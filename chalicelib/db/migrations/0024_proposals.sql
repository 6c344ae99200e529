-- Proposals for a lead: a draft the operators edit, frozen once sent; each line a product of the price book
-- or free text. Amounts are integers in minor units of the proposal's one currency; the server computes every
-- line's and the proposal's totals (chalicelib/proposals/totals.py) and stores them with the lines.
CREATE TABLE public.proposals (
    tenant_id          uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    lead_id            uuid NOT NULL,
    version            integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- The proposal this draft revises (a sent one is never edited: a new version copies it).
    previous_id        uuid,
    status             text NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'sent', 'signed', 'paid', 'declined', 'expired', 'void')),
    title              text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    introduction       text NOT NULL DEFAULT '' CHECK (length(introduction) <= 20000),
    valid_until        date NOT NULL,
    currency           char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal_minor     bigint NOT NULL CHECK (subtotal_minor >= 0),
    tax_minor          bigint NOT NULL CHECK (tax_minor >= 0),
    total_minor        bigint NOT NULL CHECK (total_minor = subtotal_minor + tax_minor),
    -- The frozen PDF of a sent proposal in the blob store (tenants/<id>/...), never rendered again.
    pdf_blob_key       text,
    pdf_sha256         text CHECK (pdf_sha256 ~ '^[0-9a-f]{64}$'),
    sent_at            timestamptz,
    status_changed_at  timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES public.leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, previous_id) REFERENCES public.proposals (tenant_id, id) ON DELETE SET NULL (previous_id)
);
CREATE INDEX proposals_lead ON public.proposals (tenant_id, lead_id, created_at DESC, id DESC);
CREATE INDEX proposals_previous ON public.proposals (tenant_id, previous_id) WHERE previous_id IS NOT NULL;
CALL app.secure_tenant_table('public.proposals');

CREATE TABLE public.proposal_lines (
    tenant_id          uuid NOT NULL,
    proposal_id        uuid NOT NULL,
    position           integer NOT NULL CHECK (position >= 0),
    -- A line of the price book keeps the product's id (NULL once the product is deleted) and its SKU; its
    -- price and tax were copied from the book when the line was written.
    product_id         uuid,
    sku                text,
    description        text NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    quantity           numeric(10, 3) NOT NULL CHECK (quantity > 0 AND quantity <= 1000000),
    unit_amount_minor  bigint NOT NULL CHECK (unit_amount_minor >= 0),
    discount_bp        integer NOT NULL DEFAULT 0 CHECK (discount_bp BETWEEN 0 AND 10000),
    tax_rate_bp        integer NOT NULL CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    net_minor          bigint NOT NULL CHECK (net_minor >= 0),
    tax_minor          bigint NOT NULL CHECK (tax_minor >= 0),
    PRIMARY KEY (tenant_id, proposal_id, position),
    FOREIGN KEY (tenant_id, proposal_id) REFERENCES public.proposals (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, product_id) REFERENCES public.products (tenant_id, id) ON DELETE SET NULL (product_id)
);
CREATE INDEX proposal_lines_product ON public.proposal_lines (tenant_id, product_id) WHERE product_id IS NOT NULL;
CALL app.secure_tenant_table('public.proposal_lines');
