-- Statements of chalicelib's top-level modules (audit.py). Subpackages keep their own queries.sql.

-- audit.py -------------------------------------------------------------------------------------------

-- name: audit_record
-- Append one workspace event (audit_log, under RLS).
INSERT INTO audit_log (tenant_id, actor_user_id, actor_api_key_id, action, target_type, target_id,
                       ip, user_agent, details)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: account_audit_record
-- Append one sign-in/account event (no workspace involved).
INSERT INTO account_audit_log (user_id, subject_hash, action, ip, user_agent, details)
VALUES (%s, %s, %s, %s, %s, %s);

-- name: audit_entries_first
-- The first page of the workspace's audit entries, newest first.
SELECT id, occurred_at, action, actor_user_id, actor_api_key_id, target_type, target_id, host(ip),
       user_agent, details
  FROM audit_log
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s;

-- name: audit_entries_before
-- A further page of the workspace's audit entries, newest first, strictly before (occurred_at, id).
SELECT id, occurred_at, action, actor_user_id, actor_api_key_id, target_type, target_id, host(ip),
       user_agent, details
  FROM audit_log
 WHERE (occurred_at, id) < (%(at)s, %(id)s)
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s;
