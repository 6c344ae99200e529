-- The price book: a workspace's products, which proposals reference and whose prices a proposal copies
-- (amounts in integer minor units of one ISO 4217 currency; tax as a rate in basis points).
CREATE TABLE public.products (
    tenant_id          uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    sku                text NOT NULL CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    description        text NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    unit_amount_minor  bigint NOT NULL CHECK (unit_amount_minor BETWEEN 0 AND 100000000000000),
    currency           char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    tax_rate_bp        integer NOT NULL DEFAULT 0 CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT products_sku_unique UNIQUE (tenant_id, sku)
);
CREATE INDEX products_created ON public.products (tenant_id, created_at DESC, id DESC);
CREATE INDEX products_updated ON public.products (tenant_id, updated_at DESC, id DESC);
CREATE INDEX products_name ON public.products (tenant_id, name, id);
CALL app.secure_tenant_table('public.products');
