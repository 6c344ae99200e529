-- The jobs' hand-written statements. SQL that names tables or columns at runtime (count_rows, the
-- export's and dump's COPY, restore's loads, delete's per-table DELETE, purge's batches) is composed
-- with psycopg.sql in the modules themselves.

-- common.py ------------------------------------------------------------------------------------------

-- name: workspaces_all
-- Every workspace (the one cross-tenant read the jobs role has).
SELECT id, name, deleted_at FROM workspaces ORDER BY created_at, id;

-- name: job_run_claim
-- Claim one scheduled run; no row back when another invocation already has it.
INSERT INTO job_runs (name, scheduled_for) VALUES (%s, %s)
ON CONFLICT DO NOTHING
RETURNING 1;

-- name: job_run_finish
-- Record a claimed run's counts (never contents).
UPDATE job_runs SET finished_at = now(), counts = %s
 WHERE name = %s AND scheduled_for = %s;

-- name: tenant_tables
-- Every table of public with a tenant key (or the workspaces table itself): its columns and generated ones.
SELECT c.relname,
       array_agg(a.attname::text ORDER BY a.attnum),
       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attgenerated <> '')
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
   AND (c.relname = 'workspaces' OR EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid
        AND t.attname = 'tenant_id' AND NOT t.attisdropped))
 GROUP BY c.relname
 ORDER BY c.relname;

-- name: foreign_key_edges
-- (child, parent) of every foreign key between two different tables.
SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
  FROM pg_constraint c
 WHERE c.contype = 'f' AND c.conrelid <> c.confrelid;

-- name: statement_timeout_off
-- Lift the statement timeout for this transaction only (is_local = true: it ends with the transaction).
SELECT set_config('statement_timeout', '0', true);

-- delete.py ------------------------------------------------------------------------------------------

-- name: deletion_lock
-- Try the workspace's deletion lock for this transaction (false: another run holds it).
SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 7301552));

-- name: workspace_exists
-- One row when the workspace exists.
SELECT 1 FROM workspaces WHERE id = %s;

-- name: audit_pseudonymize
-- Strip a deleted workspace's audit entries down to event, actor ids, IP and time.
UPDATE audit_log SET details = '{}', user_agent = NULL, target_type = NULL, target_id = NULL
 WHERE tenant_id = %s
   AND (details <> '{}' OR user_agent IS NOT NULL OR target_id IS NOT NULL);

-- name: audit_has_entries
-- One row when the workspace still has audit entries.
SELECT 1 FROM audit_log WHERE tenant_id = %s LIMIT 1;

-- name: tombstone_add
-- Remember a deleted workspace's id until its audit entries are purged.
INSERT INTO workspace_tombstones (workspace_id, deleted_at) VALUES (%s, now())
ON CONFLICT DO NOTHING;

-- dump.py --------------------------------------------------------------------------------------------

-- name: no_parallel_workers
-- No parallel workers for this transaction, so UNION ALL branches come out in order.
SET LOCAL max_parallel_workers_per_gather = 0;

-- export.py ------------------------------------------------------------------------------------------

-- name: workspace_json
-- The workspace's own row as JSON text (the head of an export or a backup).
SELECT row_to_json(w)::text
  FROM (SELECT id, name, created_at, deleted_at FROM workspaces WHERE id = %s) w;

-- accounts.py ----------------------------------------------------------------------------------------

-- name: accounts_members
-- The accounts (email, display name) of the workspace's members, as JSON text, one row each.
SELECT row_to_json(x)::text
  FROM (SELECT u.id, u.email, u.display_name, u.created_at, u.updated_at
          FROM users u
         WHERE u.id IN (SELECT m.user_id FROM memberships m WHERE m.tenant_id = %(tenant)s)
         ORDER BY u.created_at, u.id) x;

-- name: accounts_invitations
-- The workspace's invitations (invitee email, role, times), as JSON text; never the token's or code's HMAC.
SELECT row_to_json(x)::text
  FROM (SELECT t.id, t.purpose, t.email, t.user_id, t.workspace_id, t.role, t.next_path, t.code_attempts,
               t.created_at, t.expires_at, t.used_at
          FROM login_tokens t
         WHERE t.purpose = 'invitation' AND t.workspace_id = %(tenant)s
         ORDER BY t.created_at, t.id) x;

-- name: accounts_audit_entries
-- Account audit entries of the workspace's members that name this workspace, as JSON text; no subject hash.
SELECT row_to_json(x)::text
  FROM (SELECT a.id, a.occurred_at, a.user_id, a.action, a.ip, a.user_agent, a.details
          FROM account_audit_log a
         WHERE a.details ->> 'workspace_id' = %(tenant)s::text
           AND a.user_id IN (SELECT m.user_id FROM memberships m WHERE m.tenant_id = %(tenant)s)
         ORDER BY a.occurred_at, a.id) x;

-- name: accounts_webhook_routes
-- The workspace's webhook routes (which channel id in a webhook URL leads to it), as JSON text.
SELECT row_to_json(x)::text
  FROM (SELECT r.channel_id, r.workspace_id
          FROM webhook_routes r
         WHERE r.workspace_id = %(tenant)s
         ORDER BY r.channel_id) x;

-- backup.py ------------------------------------------------------------------------------------------

-- name: backup_key_add
-- Store the workspace's wrapped backup data key unless one is already there (the first one wins).
INSERT INTO backup_keys (tenant_id, wrapped_key, key_id) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING;

-- name: backup_key_rewrap
-- Replace the wrapped backup key with one under the current master key (only if it is still the one read).
UPDATE backup_keys SET wrapped_key = %s, key_id = %s
 WHERE tenant_id = %s AND wrapped_key = %s;

-- name: backup_key_get
-- The workspace's wrapped backup data key and the master key id it is under.
SELECT wrapped_key, key_id FROM backup_keys WHERE tenant_id = %s;

-- name: backup_add
-- Index one backup object (a second backup in the same second fails on the key).
INSERT INTO backups (tenant_id, blob_key, taken_at, size_bytes, row_count)
VALUES (%s, %s, %s, %s, %s);

-- name: backups_of_workspace
-- Every backup of the workspace: its blob key and when it was taken.
SELECT blob_key, taken_at FROM backups WHERE tenant_id = %s;

-- name: backups_expire
-- Drop the index rows of the expired backups.
DELETE FROM backups WHERE tenant_id = %s AND blob_key = ANY(%s);

-- purge.py -------------------------------------------------------------------------------------------

-- name: async_commit
-- This transaction's commit does not wait for the WAL flush.
SET LOCAL synchronous_commit = off;

-- name: tombstones_all
-- Ids of hard-deleted workspaces whose audit entries still await their purge.
SELECT workspace_id FROM workspace_tombstones ORDER BY deleted_at, workspace_id;

-- name: tombstone_drop
-- Drop a tombstone once no audit entry of its workspace is left (as the workspace's RLS context sees it).
DELETE FROM workspace_tombstones
 WHERE workspace_id = %s
   AND NOT EXISTS (SELECT 1 FROM audit_log WHERE tenant_id = %s);

-- name: job_run_release
-- Give back the claim of a run that failed, so a retry of the same slot can redo it.
DELETE FROM job_runs WHERE name = %s AND scheduled_for = %s AND finished_at IS NULL;

-- restore.py -----------------------------------------------------------------------------------------

-- name: backup_newest
-- Blob key, time and size of the workspace's newest backup.
SELECT blob_key, taken_at, size_bytes FROM backups
 WHERE tenant_id = %s
 ORDER BY taken_at DESC, blob_key DESC
 LIMIT 1;

-- name: backup_named
-- Blob key, time and size of one named backup of the workspace.
SELECT blob_key, taken_at, size_bytes FROM backups WHERE tenant_id = %s AND blob_key = %s;
