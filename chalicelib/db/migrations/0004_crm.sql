-- CRM core: companies, contacts, pipelines and stages, leads with their stage history, notes,
-- custom field definitions, and stored responses for Idempotency-Key.
--
-- Every table: tenant_id NOT NULL, PRIMARY KEY (tenant_id, id), composite foreign keys (so a row can
-- only point at rows of its own workspace: another workspace's id fails exactly like a random one),
-- unique keys that include tenant_id, and the RLS template. Search uses a lower-cased generated
-- column under a (tenant_id, search) trigram GIN index, so a search never walks other tenants' rows.

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS btree_gin WITH SCHEMA public;

CREATE TABLE public.companies (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    domain      text CHECK (length(domain) <= 253),
    custom      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom) = 'object'),
    search      text GENERATED ALWAYS AS (lower(name || ' ' || coalesce(domain, ''))) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX companies_created ON public.companies (tenant_id, created_at DESC, id DESC);
CREATE INDEX companies_updated ON public.companies (tenant_id, updated_at DESC, id DESC);
CREATE INDEX companies_name ON public.companies (tenant_id, name, id);
CREATE INDEX companies_search ON public.companies USING gin (tenant_id, search gin_trgm_ops);
CALL app.secure_tenant_table('public.companies');

CREATE TABLE public.contacts (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    first_name  text CHECK (length(first_name) <= 100),
    last_name   text CHECK (length(last_name) <= 100),
    email       text CHECK (length(email) <= 254),
    phone       text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),  -- E.164
    company_id  uuid,
    owner_id    uuid,
    custom      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom) = 'object'),
    name        text GENERATED ALWAYS AS (trim(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) STORED,
    search      text GENERATED ALWAYS AS (lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' '
                                                || coalesce(email, ''))) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES public.companies (tenant_id, id) ON DELETE SET NULL (company_id),
    CONSTRAINT contacts_owner_fk FOREIGN KEY (tenant_id, owner_id)
        REFERENCES public.memberships (tenant_id, user_id) ON DELETE SET NULL (owner_id)
);
-- Unique per workspace, case-insensitively: another workspace's identical address is no conflict.
CREATE UNIQUE INDEX contacts_email_unique ON public.contacts (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX contacts_created ON public.contacts (tenant_id, created_at DESC, id DESC);
CREATE INDEX contacts_updated ON public.contacts (tenant_id, updated_at DESC, id DESC);
CREATE INDEX contacts_name ON public.contacts (tenant_id, name, id);
CREATE INDEX contacts_company ON public.contacts (tenant_id, company_id);
CREATE INDEX contacts_owner ON public.contacts (tenant_id, owner_id);
CREATE INDEX contacts_search ON public.contacts USING gin (tenant_id, search gin_trgm_ops);
CALL app.secure_tenant_table('public.contacts');

CREATE TABLE public.pipelines (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX pipelines_one_default ON public.pipelines (tenant_id) WHERE is_default;
CREATE INDEX pipelines_created ON public.pipelines (tenant_id, created_at DESC, id DESC);
CALL app.secure_tenant_table('public.pipelines');

CREATE TABLE public.stages (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    pipeline_id  uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    position     integer NOT NULL CHECK (position >= 0),
    kind         text NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    probability  integer CHECK (probability BETWEEN 0 AND 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, id, pipeline_id),  -- target of leads' (stage, pipeline) key
    CONSTRAINT stages_position_unique UNIQUE (tenant_id, pipeline_id, position) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT stages_pipeline_fk FOREIGN KEY (tenant_id, pipeline_id)
        REFERENCES public.pipelines (tenant_id, id) ON DELETE CASCADE
);
CALL app.secure_tenant_table('public.stages');

CREATE TABLE public.leads (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    title                text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    contact_id           uuid,
    company_id           uuid,
    pipeline_id          uuid NOT NULL,
    stage_id             uuid NOT NULL,
    status               text NOT NULL CHECK (status IN ('open', 'won', 'lost')),  -- the stage's kind
    owner_id             uuid,
    value_amount_minor   bigint,
    value_currency       char(3) CHECK (value_currency ~ '^[A-Z]{3}$'),
    lost_reason          text CHECK (length(lost_reason) <= 500),
    expected_close_date  date,
    custom               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom) = 'object'),
    search               text GENERATED ALWAYS AS (lower(title)) STORED,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Money: integer minor units and its currency, both or neither.
    CHECK ((value_amount_minor IS NULL) = (value_currency IS NULL)),
    CONSTRAINT leads_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT leads_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES public.companies (tenant_id, id) ON DELETE SET NULL (company_id),
    -- The stage must belong to the lead's pipeline.
    CONSTRAINT leads_stage_fk FOREIGN KEY (tenant_id, stage_id, pipeline_id)
        REFERENCES public.stages (tenant_id, id, pipeline_id),
    CONSTRAINT leads_owner_fk FOREIGN KEY (tenant_id, owner_id)
        REFERENCES public.memberships (tenant_id, user_id) ON DELETE SET NULL (owner_id)
);
CREATE INDEX leads_created ON public.leads (tenant_id, created_at DESC, id DESC);
CREATE INDEX leads_updated ON public.leads (tenant_id, updated_at DESC, id DESC);
CREATE INDEX leads_title ON public.leads (tenant_id, title, id);
CREATE INDEX leads_value ON public.leads (tenant_id, (coalesce(value_amount_minor, 0)), id);
CREATE INDEX leads_stage ON public.leads (tenant_id, stage_id);
CREATE INDEX leads_pipeline ON public.leads (tenant_id, pipeline_id, created_at DESC);
CREATE INDEX leads_contact ON public.leads (tenant_id, contact_id);
CREATE INDEX leads_company ON public.leads (tenant_id, company_id);
CREATE INDEX leads_owner ON public.leads (tenant_id, owner_id);
CREATE INDEX leads_status ON public.leads (tenant_id, status, created_at DESC);
CREATE INDEX leads_search ON public.leads USING gin (tenant_id, search gin_trgm_ops);
CALL app.secure_tenant_table('public.leads');

CREATE TABLE public.lead_stage_history (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    lead_id           uuid NOT NULL,
    from_stage_id     uuid,
    to_stage_id       uuid NOT NULL,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    actor_user_id     uuid,
    actor_api_key_id  uuid,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT history_lead_fk FOREIGN KEY (tenant_id, lead_id)
        REFERENCES public.leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX lead_stage_history_by_lead ON public.lead_stage_history (tenant_id, lead_id, changed_at);
-- History is appended, never rewritten, by the API.
CALL app.secure_tenant_table('public.lead_stage_history', 'tenant_id', 'SELECT, INSERT');

CREATE TABLE public.notes (
    tenant_id       uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    body            text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    lead_id         uuid,
    contact_id      uuid,
    company_id      uuid,
    author_user_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (num_nonnulls(lead_id, contact_id, company_id) = 1),
    CONSTRAINT notes_lead_fk FOREIGN KEY (tenant_id, lead_id)
        REFERENCES public.leads (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT notes_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT notes_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES public.companies (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX notes_created ON public.notes (tenant_id, created_at DESC, id DESC);
CREATE INDEX notes_updated ON public.notes (tenant_id, updated_at DESC, id DESC);
CREATE INDEX notes_lead ON public.notes (tenant_id, lead_id);
CREATE INDEX notes_contact ON public.notes (tenant_id, contact_id);
CREATE INDEX notes_company ON public.notes (tenant_id, company_id);
CALL app.secure_tenant_table('public.notes');

CREATE TABLE public.custom_fields (
    tenant_id    uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    object       text NOT NULL CHECK (object IN ('lead', 'contact', 'company')),
    key          text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label        text NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    type         text NOT NULL CHECK (type IN ('text', 'number', 'boolean', 'date', 'datetime', 'select',
                                               'multi_select', 'url', 'email', 'phone', 'currency')),
    options      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(options) = 'array'),
    required     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT custom_fields_key_unique UNIQUE (tenant_id, object, key)
);
CREATE INDEX custom_fields_created ON public.custom_fields (tenant_id, created_at DESC, id DESC);
CALL app.secure_tenant_table('public.custom_fields');

-- Idempotency-Key: the first response to a POST, replayed for the same key and body.
CREATE TABLE public.idempotency_keys (
    tenant_id      uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    route          text NOT NULL,
    request_hash   bytea NOT NULL,
    status         integer,
    response_body  text,
    location       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key, route)
);
CREATE INDEX idempotency_keys_created ON public.idempotency_keys (created_at);
CALL app.secure_tenant_table('public.idempotency_keys');
