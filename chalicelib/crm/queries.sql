-- Hand-written SQL of the CRM modules (chalicelib/crm/*.py), loaded once by chalicelib.db.queries.
-- The generic composed SQL of every resource table stays in crm/store.py; statements whose table is
-- chosen at run time (custom fields' record tables, the stages of a list page) stay in their modules.
-- Every statement runs inside the tenant transaction: RLS scopes it to the current workspace.


-- ---- pipelines (crm/pipelines.py; the stage changes' version bump in crm/stages.py) -------------------

-- name: pipeline_insert
-- Insert a pipeline (its stages follow with stages_insert_of_new_pipeline).
INSERT INTO pipelines (tenant_id, id, name, is_default, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s);

-- name: pipelines_lock_all
-- Lock every pipeline row of the workspace in id order (switches of the default serialize on them).
SELECT id FROM pipelines ORDER BY id FOR UPDATE;

-- name: pipelines_demote_default
-- Demote the current default pipeline (a new updated_at: its ETag changes) unless it is the given one.
UPDATE pipelines SET is_default = false, updated_at = now() WHERE is_default AND id <> %s RETURNING 1;

-- name: pipeline_make_default
-- Make one pipeline the default.
UPDATE pipelines SET is_default = true WHERE id = %s RETURNING 1;

-- name: pipeline_touch
-- Give a pipeline a new updated_at (a new ETag): its stages changed.
UPDATE pipelines SET updated_at = now() WHERE id = %s;

-- name: pipeline_holds_a_lead
-- One row when the pipeline holds at least one lead.
SELECT 1 FROM leads WHERE pipeline_id = %s LIMIT 1;

-- name: pipeline_board
-- A pipeline's stages in order, each with its number of leads and their value per currency.
-- (The first line names the tables: a libpq trace, which tests read, shows a statement's first line only.)
WITH per AS (SELECT stage_id, value_currency, count(*) AS n, sum(value_amount_minor) AS total FROM leads
              WHERE pipeline_id = %(p)s GROUP BY stage_id, value_currency)
SELECT s.id, s.pipeline_id, s.name, s.position, s.kind, s.probability, coalesce(sum(per.n), 0)::bigint,
       coalesce(jsonb_object_agg(per.value_currency, per.total) FILTER (WHERE per.value_currency IS NOT NULL),
                '{}'::jsonb)
  FROM stages s LEFT JOIN per ON per.stage_id = s.id WHERE s.pipeline_id = %(p)s
 GROUP BY s.tenant_id, s.id ORDER BY s.position;


-- ---- stages (crm/pipelines.py reads them; crm/stages.py changes them) ---------------------------------

-- name: stages_of_pipelines
-- The stages of several pipelines, grouped by pipeline, each in position order.
SELECT id, pipeline_id, name, position, kind, probability FROM stages
 WHERE pipeline_id = ANY(%s) ORDER BY pipeline_id, position;

-- name: stages_insert_of_new_pipeline
-- Insert one stage of a new pipeline (run for each stage, in order).
INSERT INTO stages (tenant_id, pipeline_id, name, position, kind, probability, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s);

-- name: stage_first_of_default_pipeline
-- (pipeline, stage, kind) of the first stage of the workspace's default pipeline.
SELECT s.pipeline_id, s.id, s.kind FROM stages s JOIN pipelines p
    ON p.tenant_id = s.tenant_id AND p.id = s.pipeline_id
 WHERE p.is_default ORDER BY s.position LIMIT 1;

-- name: stage_first_of_pipeline
-- (pipeline, stage, kind) of the first stage of a pipeline.
SELECT pipeline_id, id, kind FROM stages WHERE pipeline_id = %s ORDER BY position LIMIT 1;

-- name: stage_pipeline_and_kind
-- (pipeline, kind) of a stage.
SELECT pipeline_id, kind FROM stages WHERE id = %s;

-- name: stages_count
-- How many stages a pipeline has.
SELECT count(*) FROM stages WHERE pipeline_id = %s;

-- name: stage_insert
-- Insert a stage at a position of an existing pipeline.
INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind, probability)
VALUES (%s, %s, %s, %s, %s, %s, %s);

-- name: stage_ids_in_order
-- A pipeline's stage ids in position order (ties: the older first).
SELECT id FROM stages WHERE pipeline_id = %s ORDER BY position, created_at;

-- name: stage_ids
-- A pipeline's stage ids and kinds, in no order.
SELECT id, kind FROM stages WHERE pipeline_id = %s;

-- name: stages_defer_position_check
-- Check the unique (pipeline, position) of stages at the end of the transaction, not per statement.
SET CONSTRAINTS stages_position_unique DEFERRED;

-- name: stages_renumber
-- Give stages (ids, positions: two parallel arrays) their new positions; unchanged ones are not written.
UPDATE stages SET position = v.position FROM unnest(%s::uuid[], %s::int[]) AS v(id, position)
 WHERE stages.id = v.id AND stages.position <> v.position RETURNING 1;

-- name: stage_delete
-- Delete a stage (a foreign key violation when a lead still holds it).
DELETE FROM stages WHERE id = %s RETURNING 1;


-- ---- leads (crm/leads.py is the only writer of leads and of leads.status) -----------------------------

-- name: lead_ids_of_stage
-- The ids of the leads a stage holds.
SELECT id FROM leads WHERE stage_id = %s;

-- name: leads_move_to_stage
-- Move a stage's leads to another stage with that stage's kind as their status; returns the ids moved.
UPDATE leads SET stage_id = %s, status = %s, updated_at = now() WHERE stage_id = %s RETURNING id;

-- name: leads_set_status_of_stage
-- Give the leads of a stage its new kind as their status (and a new updated_at: their ETags change); their ids.
UPDATE leads SET status = %s, updated_at = %s WHERE stage_id = %s AND status <> %s RETURNING id;

-- name: leads_insert_many
-- Insert leads from parallel arrays (a CSV import), one statement; returns how many were written.
WITH written AS (
    INSERT INTO leads (tenant_id, id, title, contact_id, company_id, pipeline_id, stage_id, status, owner_id,
                       value_amount_minor, value_currency, lost_reason, expected_close_date, custom)
    SELECT app.current_tenant(), * FROM unnest(%(id)s::uuid[], %(title)s::text[], %(contact_id)s::uuid[],
        %(company_id)s::uuid[], %(pipeline_id)s::uuid[], %(stage_id)s::uuid[], %(status)s::text[],
        %(owner_id)s::uuid[], %(value_amount_minor)s::bigint[], %(value_currency)s::text[],
        %(lost_reason)s::text[], %(expected_close_date)s::date[], %(custom)s::jsonb[])
    RETURNING 1
)
SELECT count(*) FROM written;

-- name: lead_stage_history_insert
-- Append one stage change of a lead to its history.
INSERT INTO lead_stage_history (tenant_id, lead_id, from_stage_id, to_stage_id, changed_at, actor_user_id,
                                actor_api_key_id)
VALUES (%s, %s, %s, %s, %s, %s, %s);


-- ---- CSV import of contacts and companies, and its reference checks (crm/importer.py) -----------------

-- name: import_contacts_upsert
-- Create contacts from parallel arrays or update the one with the same email; the ids created, the ids updated.
WITH written AS (
    INSERT INTO contacts AS c (tenant_id, first_name, last_name, email, phone, company_id, owner_id, custom)
    SELECT app.current_tenant(), * FROM unnest(%(first_name)s::text[], %(last_name)s::text[], %(email)s::text[],
                                               %(phone)s::text[], %(company_id)s::uuid[], %(owner_id)s::uuid[],
                                               %(custom)s::jsonb[])
    ON CONFLICT (tenant_id, lower(email)) WHERE email IS NOT NULL DO UPDATE SET
        first_name = coalesce(EXCLUDED.first_name, c.first_name),
        last_name = coalesce(EXCLUDED.last_name, c.last_name),
        phone = coalesce(EXCLUDED.phone, c.phone),
        company_id = coalesce(EXCLUDED.company_id, c.company_id),
        owner_id = coalesce(EXCLUDED.owner_id, c.owner_id),
        custom = c.custom || EXCLUDED.custom,
        updated_at = %(now)s
    RETURNING id, (xmax = 0) AS created
)
SELECT coalesce(array_agg(id) FILTER (WHERE created), '{}'),
       coalesce(array_agg(id) FILTER (WHERE NOT created), '{}')
  FROM written;

-- name: import_contacts_custom_by_email
-- The stored custom values of the contacts with these (lower-cased) emails.
SELECT lower(email), custom FROM contacts WHERE lower(email) = ANY(%s);

-- name: import_companies_insert
-- Create companies from parallel arrays, one statement; returns the ids written.
WITH written AS (
    INSERT INTO companies (tenant_id, name, domain, custom)
    SELECT app.current_tenant(), * FROM unnest(%(name)s::text[], %(domain)s::text[], %(custom)s::jsonb[])
    RETURNING id
)
SELECT coalesce(array_agg(id), '{}') FROM written;

-- name: import_existing_members
-- Which of these user ids are members of the workspace.
SELECT user_id FROM memberships WHERE tenant_id = app.current_tenant() AND user_id = ANY(%s);

-- name: import_existing_companies
-- Which of these company ids exist in the workspace.
SELECT id FROM companies WHERE id = ANY(%s);

-- name: import_existing_contacts
-- Which of these contact ids exist in the workspace.
SELECT id FROM contacts WHERE id = ANY(%s);


-- ---- custom field definitions (crm/custom_fields.py) --------------------------------------------------

-- name: custom_fields_of_object
-- key, type, options, required of every custom field of one object type (for a read).
SELECT key, type, options, required FROM custom_fields WHERE object = %s;

-- name: custom_fields_of_object_key_share
-- custom_fields_of_object, the rows locked FOR KEY SHARE (for a write of records validated against them).
SELECT key, type, options, required FROM custom_fields WHERE object = %s FOR KEY SHARE;


-- ---- Idempotency-Key (crm/idempotency.py) -------------------------------------------------------------

-- name: idempotency_key_claim
-- Claim (workspace, key, route) for this request; no row when another request claimed it first.
INSERT INTO idempotency_keys (tenant_id, key, route, request_hash) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING RETURNING 1;

-- name: idempotency_key_stored
-- The request hash and stored answer of a claimed key.
SELECT request_hash, status, response_body, location, etag FROM idempotency_keys WHERE key = %s AND route = %s;

-- name: idempotency_key_remember
-- Store the answer of a claimed key (replayed to later requests with the same key and body).
UPDATE idempotency_keys SET status = %s, response_body = %s, location = %s, etag = %s
 WHERE key = %s AND route = %s RETURNING 1;

-- name: lead_kept_proposals
-- Whether a lead has a proposal past its draft (sent, signed, paid, declined, expired or void: kept records).
SELECT EXISTS (SELECT FROM proposals WHERE lead_id = %s AND status <> 'draft');
-- name: lead_to_won_stage
-- Move a lead that is not won yet to the first won stage of its pipeline; its placement before and after (no row:
-- it is won already, or its pipeline has no won stage).
WITH target AS (
    SELECT l.id, l.pipeline_id, l.stage_id AS from_stage, l.status AS from_status, s.id AS to_stage
      FROM leads l
      JOIN stages s ON s.tenant_id = l.tenant_id AND s.pipeline_id = l.pipeline_id AND s.kind = 'won'
     WHERE l.id = %(lead)s AND l.status <> 'won'
     ORDER BY s.position
     LIMIT 1
       FOR UPDATE OF l
)
UPDATE leads SET stage_id = target.to_stage, status = 'won', updated_at = %(now)s
  FROM target
 WHERE leads.id = target.id
RETURNING target.pipeline_id, target.from_stage, target.from_status, target.to_stage;
