-- `q` served by an index under row-level security.
--
-- A trigram (or full-text) index cannot serve `q` under RLS: PostgreSQL applies a query's own
-- conditions after the policies' unless their functions are LEAKPROOF, and LIKE, the trigram
-- operators and @@ are not (only a superuser could mark them, and managed PostgreSQL has none). The
-- prefix operator ^@ (starts_with), = and the btree comparisons are leakproof. So each searchable
-- record keeps its words in search_terms: the words of its (lower-cased) search column, split at ASCII
-- white space and punctuation. `q` finds the records that have, for each word of the query, a word
-- starting with it, through the (tenant_id, object, term) btree. Statement-level triggers keep the
-- words in step with every insert, update and delete (the API, imports, restores, cascades).

CREATE FUNCTION app.search_words(value text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY(SELECT DISTINCT left(w, 100)
                 FROM pg_catalog.regexp_split_to_table(value, '[\x09-\x0d\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]+') AS w
                 WHERE w <> '');
GRANT EXECUTE ON FUNCTION app.search_words(text) TO crm_app, crm_jobs;

CREATE TABLE public.search_terms (
    tenant_id  uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    object     text NOT NULL CHECK (object IN ('lead', 'contact', 'company', 'pipeline')),
    -- Byte order: a prefix is a btree range (term >= 'abc' AND term < 'abd').
    term       text COLLATE "C" NOT NULL,
    record_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, object, term, record_id)
);
CREATE INDEX search_terms_record ON public.search_terms (tenant_id, object, record_id);
-- Written only by the triggers below, which run as the caller (so under its tenant).
CALL app.secure_tenant_table('public.search_terms', 'tenant_id', 'SELECT, INSERT, DELETE');

CREATE FUNCTION app.keep_search_terms() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
BEGIN
    -- TG_ARGV[0] is the object; old_rows / new_rows are the statement's transition tables.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM public.search_terms s USING old_rows o
             WHERE s.tenant_id = o.tenant_id AND s.object = TG_ARGV[0] AND s.record_id = o.id;
        ELSE
            DELETE FROM public.search_terms s USING old_rows o
              JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id
             WHERE n.search IS DISTINCT FROM o.search
               AND s.tenant_id = o.tenant_id AND s.object = TG_ARGV[0] AND s.record_id = o.id;
            INSERT INTO public.search_terms (tenant_id, object, term, record_id)
            SELECT n.tenant_id, TG_ARGV[0], w, n.id
              FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id,
                   unnest(app.search_words(n.search)) AS w
             WHERE n.search IS DISTINCT FROM o.search;
        END IF;
    ELSE
        INSERT INTO public.search_terms (tenant_id, object, term, record_id)
        SELECT n.tenant_id, TG_ARGV[0], w, n.id FROM new_rows n, unnest(app.search_words(n.search)) AS w;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION app.keep_search_terms() FROM PUBLIC;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('leads', 'lead'), ('contacts', 'contact'), ('companies', 'company'),
                                   ('pipelines', 'pipeline')) AS v(tbl, obj) LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON public.%I REFERENCING NEW TABLE AS new_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION app.keep_search_terms(%L)',
                       t.tbl || '_search_terms_insert', t.tbl, t.obj);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON public.%I REFERENCING OLD TABLE AS old_rows'
                       ' NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION app.keep_search_terms(%L)',
                       t.tbl || '_search_terms_update', t.tbl, t.obj);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON public.%I REFERENCING OLD TABLE AS old_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION app.keep_search_terms(%L)',
                       t.tbl || '_search_terms_delete', t.tbl, t.obj);
        -- The words of the rows already there. The owner is under FORCE ROW LEVEL SECURITY with no
        -- policy of its own (it sees no rows), so the force is lifted for this transaction only.
        EXECUTE format('ALTER TABLE public.%I NO FORCE ROW LEVEL SECURITY', t.tbl);
        EXECUTE 'ALTER TABLE public.search_terms NO FORCE ROW LEVEL SECURITY';
        EXECUTE format('INSERT INTO public.search_terms (tenant_id, object, term, record_id)'
                       ' SELECT r.tenant_id, %L, w, r.id FROM public.%I r, unnest(app.search_words(r.search)) AS w',
                       t.obj, t.tbl);
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t.tbl);
        EXECUTE 'ALTER TABLE public.search_terms FORCE ROW LEVEL SECURITY';
    END LOOP;
END
$$;

-- The trigram indexes cannot serve `q` under RLS (above): they only cost writes.
DROP INDEX public.leads_search, public.contacts_search, public.companies_search, public.pipelines_search;
