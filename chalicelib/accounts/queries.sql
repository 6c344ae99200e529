-- Users, workspaces and memberships. Run in the caller's transaction (user_tx or tenant_tx).

-- members.py -----------------------------------------------------------------------------------------

-- name: members_list
-- The current workspace's members with their address and name, owners first.
SELECT m.user_id, u.email, u.display_name, m.role, m.created_at
  FROM memberships m
  JOIN users u ON u.id = m.user_id
 ORDER BY array_position(ARRAY['owner', 'admin', 'member'], m.role), m.created_at, m.user_id;

-- name: owners_lock
-- Lock every owner's membership row of the current workspace (serialises demotions and removals).
SELECT user_id FROM memberships WHERE role = 'owner' FOR UPDATE;

-- name: member_role_lock
-- A member's role, its row locked.
SELECT role FROM memberships WHERE user_id = %s FOR UPDATE;

-- name: member_set_role
-- Change a member's role.
UPDATE memberships SET role = %s, updated_at = %s WHERE user_id = %s RETURNING 1;

-- name: member_remove
-- Remove a member from the current workspace.
DELETE FROM memberships WHERE user_id = %s RETURNING 1;

-- name: member_add
-- Add a member unless there already is one (no row back then: the membership keeps its role).
INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, user_id) DO NOTHING
RETURNING 1;

-- users.py -------------------------------------------------------------------------------------------

-- name: user_get
-- One user.
SELECT id, email, display_name, created_at FROM users WHERE id = %s;

-- name: user_set_display_name
-- Change a user's display name.
UPDATE users SET display_name = %s, updated_at = %s WHERE id = %s
RETURNING id, email, display_name, created_at;

-- name: user_change_email
-- Move a user to a new address (fails on the unique address when another account has it).
UPDATE users SET email = %s, updated_at = %s WHERE id = %s
RETURNING id, email, display_name, created_at;

-- name: my_workspaces
-- The workspaces of the user bound to this transaction, with their role, newest first.
SELECT w.id, w.name, m.role, w.created_at, w.updated_at, w.deleted_at, w.atlas_enabled
  FROM memberships m
  JOIN workspaces w ON w.id = m.tenant_id
 WHERE m.user_id = app.current_user_id()
 ORDER BY w.created_at DESC, w.id;

-- workspaces.py --------------------------------------------------------------------------------------

-- name: workspace_create
-- Create the workspace of this tenant transaction.
INSERT INTO workspaces (id, name, created_by, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)
RETURNING id, name, created_at, updated_at, deleted_at, atlas_enabled;

-- name: workspace_first_owner
-- Make the workspace's creator its owner.
INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) VALUES (%s, %s, 'owner', %s, %s);

-- name: workspace_get
-- The workspace of this tenant transaction.
SELECT id, name, created_at, updated_at, deleted_at, atlas_enabled FROM workspaces WHERE id = %s;

-- name: workspace_update
-- Rename the workspace and set whether Atlas may draft proposals (each kept when NULL).
UPDATE workspaces SET name = coalesce(%s, name), atlas_enabled = coalesce(%s, atlas_enabled), updated_at = %s
 WHERE id = %s
RETURNING id, name, created_at, updated_at, deleted_at, atlas_enabled;

-- name: workspace_soft_delete
-- Mark the workspace deleted (no row back when it already is).
UPDATE workspaces SET deleted_at = %s, updated_at = %s
 WHERE id = %s AND deleted_at IS NULL
RETURNING id, name, created_at, updated_at, deleted_at, atlas_enabled;

-- name: workspace_undelete
-- Restore a deleted workspace still within its grace period (no row back otherwise).
UPDATE workspaces SET deleted_at = NULL, updated_at = %s
 WHERE id = %s AND deleted_at > %s
RETURNING id, name, created_at, updated_at, deleted_at, atlas_enabled;

-- export.py (GET /auth/me/export) --------------------------------------------------------------------
-- Each reads the rows of the user bound to the transaction (bind_user) and nothing else: no bound user,
-- no rows. Sessions and audit entries are read column by column, so no hash can slip in with a SELECT *.

-- name: export_account
-- The bound user's account.
SELECT id, email, display_name, created_at, updated_at FROM users WHERE id = app.current_user_id();

-- name: export_memberships
-- The bound user's memberships with their workspace's name, oldest first.
SELECT m.tenant_id, w.name, m.role, m.created_at, w.deleted_at
  FROM memberships m
  JOIN workspaces w ON w.id = m.tenant_id
 WHERE m.user_id = app.current_user_id()
 ORDER BY m.created_at, m.tenant_id;

-- name: export_sessions
-- Every session of the bound user, revoked and expired included, without its token hash; newest first.
SELECT id, created_at, last_seen_at, expires_at, revoked_at, host(ip), user_agent
  FROM sessions
 WHERE user_id = app.current_user_id()
 ORDER BY created_at DESC, id;

-- name: export_account_events
-- The bound user's account audit entries (without the address HMAC), oldest first.
SELECT id, occurred_at, action, host(ip), user_agent, details
  FROM account_audit_log
 WHERE user_id = app.current_user_id()
 ORDER BY occurred_at, id;
