-- Pipelines answer `q` like the other named lists: a lower-cased search column under a
-- (tenant_id, search) trigram index.
ALTER TABLE public.pipelines ADD COLUMN search text GENERATED ALWAYS AS (lower(name)) STORED;
CREATE INDEX pipelines_search ON public.pipelines USING gin (tenant_id, search gin_trgm_ops);
