-- `q` served by an index under row-level security.
--
-- A trigram (or full-text) index cannot serve `q` under RLS: PostgreSQL applies a query's own
-- conditions after the policies' unless their functions are LEAKPROOF, and LIKE, the trigram
-- operators and @@ are not (only a superuser could mark them, and managed PostgreSQL has none). The
-- prefix operator ^@ (starts_with), = and the btree comparisons are leakproof. So each searchable
-- record keeps its words in search_terms: the words of its (lower-cased) search column, split at ASCII
-- white space and punctuation and at common Unicode spaces, dashes and quotes (O’Brien is "o", "brien"). `q` finds the records that have, for each word of the query, a word
-- starting with it, through the (tenant_id, object, term) btree. Triggers keep the words in step with
-- every insert, update and delete (the API, imports, restores, cascades).

CREATE FUNCTION app.search_words(value text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY(SELECT DISTINCT left(w, 100)
                 FROM pg_catalog.regexp_split_to_table(value, '[\x09-\x0d\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e\u00a0\u00ab\u00bb\u2000-\u200b\u2010-\u2015\u2018-\u201f\u2026\u202f\u205f\u3000-\u3002\uff0c]+') AS w
                 WHERE w <> '');
GRANT EXECUTE ON FUNCTION app.search_words(text) TO crm_app, crm_jobs;

-- No foreign keys (a key check on every word of every insert measured about 25 us per word): a
-- record's words go with it by its own delete trigger, and a deleted workspace's by the statement
-- trigger on workspaces below (its cascades run as the tables' owner, for whom these rows are invisible
-- under FORCE ROW LEVEL SECURITY, so the records' own triggers delete nothing then).
CREATE TABLE public.search_terms (
    tenant_id  uuid NOT NULL,
    object     text NOT NULL CHECK (object IN ('lead', 'contact', 'company', 'pipeline')),
    -- Byte order: a prefix is a btree range (term >= 'abc' AND term < 'abd').
    term       text COLLATE "C" NOT NULL,
    record_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, object, term, record_id)
);
-- Written only by the triggers below, which run as the caller (so under its tenant).
CALL app.secure_tenant_table('public.search_terms', 'tenant_id', 'SELECT, INSERT, DELETE');

-- Row triggers: an API write touches one row, and an update that leaves the words alone (a stage move)
-- does not call the function at all (WHEN). A record's old words are found through the primary key
-- (its words are app.search_words of its old search column), so no second index is kept up to date.
-- Invoker rights and fully qualified names (unnest, regexp_split_to_table are in pg_catalog).
CREATE FUNCTION app.keep_search_terms() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM public.search_terms
         WHERE tenant_id = OLD.tenant_id AND object = TG_ARGV[0]
           AND term = ANY (app.search_words(OLD.search)) AND record_id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO public.search_terms (tenant_id, object, term, record_id)
        SELECT NEW.tenant_id, TG_ARGV[0], w, NEW.id FROM pg_catalog.unnest(app.search_words(NEW.search)) AS w;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION app.keep_search_terms() FROM PUBLIC;

CREATE FUNCTION app.forget_search_terms() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM public.search_terms s USING old_rows o WHERE s.tenant_id = o.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION app.forget_search_terms() FROM PUBLIC;
CREATE TRIGGER workspaces_search_terms AFTER DELETE ON public.workspaces REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION app.forget_search_terms();

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('leads', 'lead'), ('contacts', 'contact'), ('companies', 'company'),
                                   ('pipelines', 'pipeline')) AS v(tbl, obj) LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR DELETE ON public.%I'
                       ' FOR EACH ROW EXECUTE FUNCTION app.keep_search_terms(%L)', t.tbl || '_search_terms', t.tbl,
                       t.obj);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON public.%I FOR EACH ROW'
                       ' WHEN (OLD.search IS DISTINCT FROM NEW.search) EXECUTE FUNCTION app.keep_search_terms(%L)',
                       t.tbl || '_search_terms_update', t.tbl, t.obj);
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
DROP INDEX IF EXISTS public.leads_search, public.contacts_search, public.companies_search, public.pipelines_search;
