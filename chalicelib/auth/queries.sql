-- Sign-in, sessions, API keys and rate limits. Tokens, codes and keys arrive here only as HMACs.

-- apikeys.py -----------------------------------------------------------------------------------------

-- name: api_key_create
-- Store a new API key (its HMAC only) and return the row as listed.
INSERT INTO api_keys (tenant_id, name, prefix, key_hash, role, created_by, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id, name, prefix, role, created_at, expires_at, last_used_at;

-- name: api_key_authorize
-- (key_id, role) of a live key of the current tenant; the function fails the statement on a refusal.
SELECT * FROM app.authorize_api_key(%s, %s, %s, %s, %s);

-- name: api_keys_list
-- The current workspace's live and revoked keys (never the key or its hash), newest first.
SELECT id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at
  FROM api_keys
 ORDER BY created_at DESC, id;

-- name: api_key_get
-- One key of the current workspace as listed (never the key or its hash).
SELECT id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at
  FROM api_keys
 WHERE id = %s;

-- name: api_key_lock
-- One key of the current workspace as listed, locked until the transaction ends (what a PATCH checks stays true).
SELECT id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at
  FROM api_keys
 WHERE id = %s
   FOR UPDATE;

-- name: api_key_rename
-- Rename a key of the current workspace; returns it as listed.
UPDATE api_keys SET name = %s WHERE id = %s
RETURNING id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at;

-- name: api_key_revoke
-- Revoke a live key of the current workspace (no row back when there is none).
UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL RETURNING id;

-- sessions.py ----------------------------------------------------------------------------------------

-- name: session_create
-- Start a session (stored as the HMAC of its cookie value).
INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
VALUES (%s, %s, %s, %s, %s, %s, %s);

-- name: session_resolve
-- (session_id, user_id) of a live session by its HMAC, its idle expiry slid forward at most once per window.
SELECT session_id, user_id FROM app.live_session(%s, %s, %s, %s);

-- name: session_end
-- End the session of a presented cookie (by its HMAC), whoever's it is.
SELECT app.end_session(%s, %s);

-- name: session_authorize
-- (session_id, user_id, role) of a live session for a workspace; the function fails the statement on a refusal.
SELECT * FROM app.authorize_session(%s, %s, %s, %s, %s, %s, %s);

-- name: session_revoke_one
-- Revoke one live session of the user.
UPDATE sessions SET revoked_at = %s
 WHERE id = %s AND user_id = %s AND revoked_at IS NULL
RETURNING id;

-- name: session_revoke_others
-- Revoke every live session of the user except one (NULL: all of them).
UPDATE sessions SET revoked_at = %s
 WHERE user_id = %s AND revoked_at IS NULL AND id IS DISTINCT FROM %s
RETURNING id;

-- name: sessions_of_user
-- The user's live sessions: id, created, last seen, IP, user agent (newest first).
SELECT id, created_at, last_seen_at, host(ip), user_agent FROM sessions
 WHERE user_id = %s AND revoked_at IS NULL AND expires_at > %s AND last_seen_at > %s
 ORDER BY created_at DESC;

-- ratelimit.py ---------------------------------------------------------------------------------------

-- name: rate_limit_hit
-- Count one hit in the bucket's current window; returns the window's hits so far.
SELECT app.rate_limit_hit(%s, %s);

-- links.py -------------------------------------------------------------------------------------------

-- name: login_token_issue
-- Store a new sign-in token and code (their HMACs only).
INSERT INTO login_tokens (token_hash, code_hash, purpose, email, user_id, workspace_id, role,
                          next_path, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: login_token_redeem
-- Spend a live token of one of the purposes, once; returns what it grants (the account created if new).
SELECT purpose, email, user_id, workspace_id, role, next_path FROM app.redeem_login_token(%s, %s, %s);

-- name: login_code_redeem
-- Spend the newest live code of the address, once, unless its attempts are used up (a wrong code spends one).
SELECT purpose, email, user_id, workspace_id, role, next_path FROM app.redeem_login_code(%s, %s, %s, %s);

-- signin.py ------------------------------------------------------------------------------------------

-- name: invitation_workspace
-- The workspace of an unused invitation, by its token hash or by its address and code hash (NULL otherwise).
SELECT app.invitation_workspace(%s, %s, %s);
